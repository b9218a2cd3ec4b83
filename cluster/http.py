"""HTTP plumbing shared by the worker and the control plane: JSON error bodies and bounded JSON bodies.

Every error leaves as ``{"error": code, "message": str, "details": {...}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope

from cluster.errors import BadRequest, FlowfleetError, Unavailable, json_type
from cluster.names import InvalidName, check_flow_name, unrouted_flow_name

log = logging.getLogger(__name__)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class FastJSONResponse(Response):
    """A JSON response built without Starlette's header normalisation: `headers` are given encoded
    (lower-case names), and content-length and content-type are added here. For hot paths."""

    media_type = "application/json"

    def __init__(
        self, content: Any, status_code: int = 200, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
        self.raw_headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"application/json"),
        ]
        if headers:
            self.raw_headers += headers


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details or {}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


async def handle_flowfleet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowfleetError)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
    return error_response(exc.http_status, exc.code, exc.message, exc.details, headers=headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the server log")


async def handle_not_found(request: Request, exc: Exception) -> Response:
    """The 404 handler of both servers: a path that a flow route would match if the name could hold `/`
    (`/v1/flows/a%2Fb/run`, `POST /v1/flows/a/b/activate`) is a 400 invalid_name naming the rule, not a
    bare 404."""
    templates = [
        route.path
        for route in request.app.routes
        if isinstance(route, Route) and (route.methods is None or request.method in route.methods)
    ]
    name = unrouted_flow_name(request.scope["path"], templates)
    try:
        if name is not None:
            check_flow_name(name)
    except InvalidName as e:
        return await handle_flowfleet_error(request, e)
    return await handle_http_exception(request, exc)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    FlowfleetError: handle_flowfleet_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it grows past `limit` bytes (checked while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    # ASGI messages read directly (as Request.stream does, without its async generator per request).
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise ClientDisconnect()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """Parse the body as JSON; malformed JSON is a 400, never a 500."""
    body = await read_body(request, limit)
    if not body.strip():
        raise BadRequest("request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from e


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    value = await read_json(request, limit)
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, not {json_type(value)}")
    return value


async def read_json_body(scope: Scope, receive: Receive, length: bytes | None, limit: int) -> dict[str, Any]:
    """`read_json_object(Request(scope, receive), limit)` for a hot route, given the raw Content-Length:
    a body that arrives in one message, within the limit, and is a JSON object is taken as it is;
    anything else goes through `read_json_object` (handed the message already read first), so every
    refusal is the same."""
    if length is not None and length.isdigit() and int(length) > limit:
        return await read_json_object(Request(scope, receive), limit)  # refused by its declared length
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body = message.get("body", b"")
        if len(body) <= limit:
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError:
                value = None
            if type(value) is dict:
                return value
    pending = [message]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return await read_json_object(Request(scope, replay), limit)


class PayloadTooLarge(FlowfleetError):
    code = "payload_too_large"
    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes", limit=limit)
