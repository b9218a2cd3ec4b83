"""A small synchronous client of the control API for the CLI; HTTP errors become FlowfleetErrors.

The exit code follows the HTTP status: 400 -> 2 (usage), 401/403 -> 5, 404 -> 4, 409 -> 3,
anything else (422 invalid flow, 413, 5xx, unreachable server) -> 1; an aborted two-phase rollout
(409 `rollout_aborted`) -> 6, with one line per replica that was not ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from cluster.errors import FlowfleetError, Unauthorized

STATUS_EXIT = {400: 2, 401: 5, 403: 5, 404: 4, 409: 3}
# Error codes with an exit code of their own (they win over the status's).
CODE_EXIT = {"rollout_aborted": 6}
TIMEOUT_S = 30.0


class RemoteError(FlowfleetError):
    """The control plane answered with an error, or could not be reached."""

    code = "remote_error"

    def __init__(self, message: str, *, status: int | None, exit_code: int, body: Any = None) -> None:
        super().__init__(message, status=status)
        self.status = status
        self.exit_code = exit_code
        self.body = body


def describe_error(status: int, body: Any) -> str:
    """One line: the server's message, with every validation problem appended."""
    if not isinstance(body, dict):
        return f"HTTP {status}"
    message = str(body.get("message") or body.get("error") or f"HTTP {status}")
    details = body.get("details")
    failures = details.get("failures") if isinstance(details, dict) else None
    if body.get("error") == "rollout_aborted" and isinstance(failures, list) and isinstance(details, dict):
        lines = [
            f"  {f.get('replica')}: {f.get('reason')}: {f.get('message')}"
            for f in failures
            if isinstance(f, dict)
        ]
        head = (
            f"rollout of {details.get('flow')} to {str(details.get('hash'))[:12]} aborted, nothing switched: "
            f"{len(lines)} replica(s) not ready (--force commits anyway)"
        )
        return "\n".join([head, *lines])
    problems = details.get("problems") if isinstance(details, dict) else None
    if isinstance(problems, list) and len(problems) > 1:
        listed = "; ".join(
            f"{p.get('path') or '/'}: {p.get('message')}" for p in problems if isinstance(p, dict)
        )
        return f"{len(problems)} problems: {listed}"
    return message


def path(*parts: str) -> str:
    """A URL path from segments, each percent-encoded (flow names may hold '.')."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


class ApiClient:
    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise Unauthorized("no API token: set FLOWFLEET_TOKEN or pass --token")
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "flowfleet-cli"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", url, params=params)

    def post(
        self,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        if json is not None:
            content = orjson.dumps(json)
        return self.request("POST", url, content=content, params=params)

    def request(
        self, method: str, url: str, *, content: bytes | None = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            response = self._client.request(method, url, content=content, params=query, headers=headers)
        except httpx.TransportError as e:
            reason = str(e) or type(e).__name__
            raise RemoteError(
                f"cannot reach the control plane at {self.url}: {reason}", status=None, exit_code=1
            ) from e
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.is_success:
            return body
        status = response.status_code
        code = body.get("error") if isinstance(body, dict) else None
        exit_code = CODE_EXIT.get(str(code)) or STATUS_EXIT.get(status, 1)
        raise RemoteError(describe_error(status, body), status=status, exit_code=exit_code, body=body)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
