"""OpenAI-shaped errors: every failure of the OpenAI-compatible API, as the OpenAI SDKs expect it.

    {"error": {"message": "...", "type": "invalid_request_error", "code": "model_not_found", "param": null}}

The status is flowfleet's (404 unknown flow, 413 too large, 503 overloaded, ...), except that a 422 is
answered as 400: OpenAI's API never says 422, and its SDKs raise BadRequestError for a request they
could not have known was wrong. `code` is flowfleet's code, or OpenAI's where one exists
(`invalid_api_key`, `model_not_found`). Failures a retry cannot fix (a node that failed after the
provider's own retries, a run over its time budget, an ambiguous version) say `x-should-retry: false`,
which the OpenAI SDKs honour instead of retrying a 5xx or 409 on their own.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cluster.errors import FlowfleetError, Unauthorized, Unavailable
from cluster.http import FastJSONResponse
from worker.api.openai.wire import PLAIN
from worker.routing import Served
from worker.runs import version_headers

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
ScopeHandler = Callable[[Scope, Receive], Awaitable[Response]]
NOT_RETRYABLE = frozenset({409, 502, 504})


class OpenAIRequestError(FlowfleetError):
    """A request the OpenAI-compatible API refuses (400), naming the request field at fault (`param`)."""

    code = "invalid_request_error"
    http_status = 400

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param)
        if code is not None:
            self.code = code


class ModelNotFound(FlowfleetError):
    """No flow of that name here, or none the caller may run: the same answer, so a caller cannot tell
    which flows exist beyond its own (as OpenAI answers for models of other organisations)."""

    code = "model_not_found"
    http_status = 404

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.", param="model"
        )


def error_type(status: int) -> str:
    """OpenAI's `type` for a status.

    >>> error_type(401), error_type(403), error_type(503)
    ('invalid_request_error', 'permission_error', 'server_error')
    """
    if status >= 500:
        return "server_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error"


def error_body(error: FlowfleetError | None) -> tuple[int, dict[str, Any]]:
    """(status, body) of an error; None: an internal error (the details are in the log, not the body)."""
    if error is None:
        message, status, code, param = "internal error; see the server log", 500, "internal_error", None
    else:
        status = 400 if error.http_status == 422 else error.http_status
        code = "invalid_api_key" if isinstance(error, Unauthorized) else error.code
        reason = error.details.get("reason")
        if status == 403 and isinstance(reason, str):  # version selection refusals say why
            code = reason
        param = error.details.get("param") or error.details.get("field")
        message = error.message
    body = {"message": message, "type": error_type(status), "code": code, "param": param}
    return status, {"error": body}


def error_response(error: FlowfleetError | None, served: Served | None = None) -> Response:
    status, body = error_body(error)
    headers = version_headers(served) if served is not None else []
    if isinstance(error, Unavailable):
        headers.append((b"retry-after", str(error.retry_after_s).encode()))
    if status in NOT_RETRYABLE:
        headers.append((b"x-should-retry", b"false"))
    return FastJSONResponse(body, status, headers)


class OpenAIEndpoint:
    """`handler` as the ASGI app of a route, answering every failure in OpenAI's shape (the app's
    exception handlers speak flowfleet's).

    An ASGI app rather than a request function: Starlette wraps those in its per-request exception
    handling (closures and a wrapper around every `send`), which this API does not use, since it
    answers its own errors; a failure while the response is being sent still reaches the server's.
    """

    # A handler of (scope, receive) that serve calls itself, with no Request (ScopeEndpoint).
    scope_handler: ScopeHandler | None = None

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        functools.update_wrapper(self, handler)

    def respond(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[Response]:
        return self.handler(Request(scope, receive, send))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send, send)

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        tagged: Send,
        header: tuple[bytes, bytes] | None = None,
    ) -> None:
        """Answer. worker.app serves the run routes without the router and adds its replica header:
        `tagged` is its `send` that adds `header` to any answer; a plain answer gets `header` here and
        goes out through `send` itself (from `__call__`: `tagged` is `send`, and no `header`)."""
        direct = self.scope_handler
        try:
            if direct is not None:
                response = await direct(scope, receive)
            else:
                response = await self.respond(scope, receive, tagged)
        except FlowfleetError as e:
            response = error_response(e)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = error_response(None)
        if type(response) in PLAIN:  # what Response.__call__ would send, without its coroutine
            status, headers = response.status_code, response.raw_headers
            if header is not None:
                headers.append(header)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
            return
        await response(scope, receive, tagged)


class ScopeEndpoint(OpenAIEndpoint):
    """An OpenAIEndpoint whose handler takes the ASGI scope and receive, with no Request made for it:
    for the run routes, where a Request is more than they need."""

    def __init__(self, handler: ScopeHandler) -> None:
        self.scope_handler = self._scoped = handler
        functools.update_wrapper(self, handler)

    def respond(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[Response]:
        return self._scoped(scope, receive)
