"""Request handlers of the canary routes: parse the body, call the canary service, render JSON."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cluster.http import JSONResponse
from control.canary.service import CanaryService
from control.http.auth import Principal
from control.http.routes import body_fields, int_field, message_of, name_of, read_object, str_field
from control.http.state import control_state


def canaries_of(request: Request) -> CanaryService:
    canaries = control_state(request).canaries
    if canaries is None:
        raise RuntimeError("the control app's lifespan has not started")
    return canaries


async def start(request: Request, principal: Principal) -> Response:
    body = await read_object(request)
    body_fields(body, {"hash", "percent", "expected_generation"})
    digest = str_field(body, "hash", required=True)
    assert digest is not None
    release = await canaries_of(request).start(
        name_of(request),
        digest,
        body.get("percent"),
        actor=principal.name,
        message=message_of(request),
        expected_generation=int_field(body, "expected_generation"),
    )
    return JSONResponse(release.as_dict())


async def set_percent(request: Request, principal: Principal) -> Response:
    body = await read_object(request)
    body_fields(body, {"percent", "expected_generation"})
    release = await canaries_of(request).set_percent(
        name_of(request),
        body.get("percent"),
        actor=principal.name,
        message=message_of(request),
        expected_generation=int_field(body, "expected_generation"),
    )
    return JSONResponse(release.as_dict())


async def finish(request: Request, principal: Principal) -> Response:
    """`…/canary/promote` and `…/canary/abort`: the last path segment names the action."""
    body = await read_object(request, empty_ok=True)
    body_fields(body, {"expected_generation"})
    canaries = canaries_of(request)
    action = canaries.promote if request.url.path.endswith("/promote") else canaries.abort
    release = await action(
        name_of(request),
        actor=principal.name,
        message=message_of(request),
        expected_generation=int_field(body, "expected_generation"),
    )
    return JSONResponse(release.as_dict())


async def status(request: Request, principal: Principal) -> Response:
    return JSONResponse(await canaries_of(request).status(name_of(request)))
