"""Errors in LangFlow's shape: FastAPI's `{"detail": ...}`, with flowfleet's status and error code.

- a request FastAPI would refuse: 422, `detail` the list of problems (`[{"type", "loc", "msg", "input"}]`);
- a refused tweak: 422 as LangFlow answers one, `{"detail": {"error": "Refused tweaks", "code":
  "TWEAKS_REFUSED", "message", "fields": [param]}}`, plus the `node` and what the flow lets callers tweak;
- a failed run (5xx but 503): `detail` is LangFlow's `APIException` body, a JSON *string*
  `{"message", "traceback", "description", "code", "suggestion"}` (`code`: flowfleet's);
- anything else: `{"detail": "<message>"}`.

Every error also names flowfleet's code in `X-Flowfleet-Error`, and a run that had a version names it
(`X-Flowfleet-Version`, `X-Flowfleet-Variant`); a 503 carries `Retry-After`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from cluster.errors import FlowfleetError, TweakNotAllowed, Unavailable
from cluster.http import FastJSONResponse
from worker.api.langflow.request import InvalidRequest
from worker.routing import Served
from worker.runs import version_headers

INTERNAL = "internal error; see the server log"


def detail(error: FlowfleetError | None) -> Any:
    """The `detail` LangFlow would answer for `error` (None: an unexpected failure)."""
    if error is None:
        return _exception_body(INTERNAL, "internal_error")
    if isinstance(error, InvalidRequest):
        return error.errors
    if isinstance(error, TweakNotAllowed):
        return {
            "error": "Refused tweaks",
            "code": "TWEAKS_REFUSED",
            "message": error.message,
            "fields": [error.param],
            "node": error.node,
            "tweakable": error.details.get("tweakable", {}),
        }
    if error.http_status >= 500 and not isinstance(error, Unavailable):
        return _exception_body(error.message, error.code)
    return error.message


def _exception_body(message: str, code: str) -> str:
    body = {"message": message, "traceback": None, "description": None, "code": code, "suggestion": None}
    return orjson.dumps(body).decode()


def error_response(error: FlowfleetError | None, served: Served | None = None) -> Response:
    status = 500 if error is None else error.http_status
    code = "internal_error" if error is None else error.code
    headers = [(b"x-flowfleet-error", code.encode())]
    if served is not None:
        headers += version_headers(served)
    if isinstance(error, Unavailable):
        headers.append((b"retry-after", str(error.retry_after_s).encode()))
    return FastJSONResponse({"detail": detail(error)}, status_code=status, headers=headers)
