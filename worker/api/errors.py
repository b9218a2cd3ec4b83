"""The native API's error responses for runs: flowfleet's JSON error body, with the version that failed."""

from __future__ import annotations

from starlette.responses import Response

from cluster.errors import FlowfleetError, Unavailable
from cluster.http import error_response
from worker.routing import Served


def run_error_response(error: FlowfleetError, served: Served | None) -> Response:
    """A failed run names its version too, so a client can tell a failing canary from the stable."""
    headers: dict[str, str] = {}
    if served is not None:
        headers["X-Flowfleet-Version"] = served.hash
        headers["X-Flowfleet-Variant"] = served.variant
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(error.retry_after_s)
    return error_response(error.http_status, error.code, error.message, error.details, headers=headers)
