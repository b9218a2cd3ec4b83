"""Request handlers of the control API: read the request, call the service, render JSON.

Bodies and query parameters are checked here (400 for a malformed request); flow documents are checked
by the service (422 with every problem).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from cluster.errors import BadRequest, json_type
from cluster.http import JSONResponse, read_body
from control.http.auth import Principal
from control.http.openapi import OPENAPI
from control.http.state import control_state, service_of
from control.metrics import CONTENT_TYPE
from control.rollout.cutover import CutoverOptions

log = logging.getLogger(__name__)

MESSAGE_HEADER = "x-flowfleet-message"
MAX_LIMIT = 1000
MAX_TIMEOUT_S = 300
CUTOVER_FIELDS = {"prepare", "force", "timeout_s"}
HEALTH_TIMEOUT_S = 2.0
TRUE, FALSE = frozenset({"1", "true", "yes"}), frozenset({"0", "false", "no", ""})


# -- request parsing ----------------------------------------------------------------------------------
def query_bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "").strip().lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false, not {raw!r}", parameter=name)


def query_int(request: Request, name: str, default: int, *, low: int = 1, high: int = MAX_LIMIT) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be an integer from {low} to {high}", parameter=name)
    return value


def optional_int(request: Request, name: str) -> int | None:
    if request.query_params.get(name) in (None, ""):
        return None
    return query_int(request, name, 0, low=0, high=2**62)


def message_of(request: Request) -> str:
    header = request.headers.get(MESSAGE_HEADER)
    if header:
        # HTTP headers arrive as latin-1; clients send UTF-8 bytes, so recover the text they meant.
        try:
            return header.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return header
    return request.query_params.get("message") or ""


def body_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"{name!r} must be a non-negative integer", field=name)
    return value


def str_field(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name!r} must be a non-empty string", field=name)
    return value


def bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{name!r} must be true or false", field=name)
    return value


def cutover_options(body: dict[str, Any]) -> CutoverOptions:
    """`prepare` (default true: two-phase), `force`, `timeout_s` (prepare timeout, 0 < s <= 300)."""
    timeout = body.get("timeout_s")
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= MAX_TIMEOUT_S
    ):
        raise BadRequest(f"'timeout_s' must be a number of seconds above 0, at most {MAX_TIMEOUT_S}")
    return CutoverOptions(
        prepare=bool_field(body, "prepare", True),
        force=bool_field(body, "force", False),
        timeout_s=None if timeout is None else float(timeout),
    )


def query_options(request: Request) -> CutoverOptions:
    """The same options as query parameters (publish with activate=true)."""
    body: dict[str, Any] = {}
    for name in ("prepare", "force"):
        if request.query_params.get(name) not in (None, ""):
            body[name] = query_bool(request, name)
    raw = request.query_params.get("timeout_s")
    if raw:
        try:
            body["timeout_s"] = float(raw)
        except ValueError:
            body["timeout_s"] = -1
    return cutover_options(body)


def name_of(request: Request) -> str:
    name: str = request.path_params["name"]
    return name


# -- writes -------------------------------------------------------------------------------------------
async def publish(request: Request, principal: Principal) -> Response:
    flow = name_of(request)
    activate = query_bool(request, "activate")
    expected = optional_int(request, "expected_generation")
    if expected is not None and not activate:
        raise BadRequest("expected_generation only applies with activate=true")
    raw = await read_body(request, body_limit(request))
    if not raw.strip():
        raise BadRequest("request body is empty; expected a flow document")
    outcome = await service_of(request).publish(
        flow,
        raw,
        actor=principal.name,
        message=message_of(request),
        activate=activate,
        expected_generation=expected,
        options=query_options(request),
    )
    return JSONResponse(outcome.as_dict(), status_code=201 if outcome.created else 200)


async def activate(request: Request, principal: Principal) -> Response:
    body = await read_object(request)
    body_fields(body, {"hash", "expected_generation", "unpin"} | CUTOVER_FIELDS)
    digest = str_field(body, "hash", required=True)
    assert digest is not None
    release = await service_of(request).activate(
        name_of(request),
        digest,
        actor=principal.name,
        message=message_of(request),
        expected_generation=int_field(body, "expected_generation"),
        options=cutover_options(body),
        unpin=bool_field(body, "unpin"),
    )
    return JSONResponse(release.as_dict())


async def rollback(request: Request, principal: Principal) -> Response:
    # An empty body is the common case: back to the previous release.
    body = await read_object(request, empty_ok=True)
    body_fields(body, {"to_generation", "to_hash", "unpin"} | CUTOVER_FIELDS)
    release = await service_of(request).rollback(
        name_of(request),
        actor=principal.name,
        message=message_of(request),
        to_generation=int_field(body, "to_generation"),
        to_hash=str_field(body, "to_hash"),
        options=cutover_options(body),
        unpin=bool_field(body, "unpin"),
    )
    return JSONResponse(release.as_dict())


async def gc(request: Request, principal: Principal) -> Response:
    dry_run = query_bool(request, "dry_run")
    return JSONResponse(await service_of(request).gc(actor=principal.name, dry_run=dry_run))


# -- reads --------------------------------------------------------------------------------------------
async def list_flows(request: Request, principal: Principal) -> Response:
    return JSONResponse({"flows": await service_of(request).list_flows()})


async def get_flow(request: Request, principal: Principal) -> Response:
    return JSONResponse(await service_of(request).get_flow(name_of(request)))


async def history(request: Request, principal: Principal) -> Response:
    flow = name_of(request)
    releases = await service_of(request).history(flow, query_int(request, "limit", 100))
    return JSONResponse({"flow": flow, "releases": [r.as_dict() for r in releases]})


async def get_version(request: Request, principal: Principal) -> Response:
    return JSONResponse(await service_of(request).version(name_of(request), request.path_params["hash"]))


async def diff(request: Request, principal: Principal) -> Response:
    old, new = request.query_params.get("from"), request.query_params.get("to")
    if not old or not new:
        raise BadRequest("query parameters 'from' and 'to' (version hashes) are required")
    return JSONResponse(await service_of(request).diff(name_of(request), old, new))


async def fleet(request: Request, principal: Principal) -> Response:
    return JSONResponse(await service_of(request).fleet())


async def rollout(request: Request, principal: Principal) -> Response:
    return JSONResponse(await service_of(request).rollout_status(name_of(request)))


async def audit(request: Request, principal: Principal) -> Response:
    flow = request.query_params.get("flow") or None
    entries = await service_of(request).audit(flow, query_int(request, "limit", 100))
    return JSONResponse({"entries": entries})


# -- operations ---------------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    """Unauthenticated liveness and Redis reachability (200 or 503); reveals nothing else."""
    client = control_state(request).redis
    try:
        # Bounded: a frozen Redis must not make the health check hang past the prober's own timeout.
        ok = client is not None and bool(await asyncio.wait_for(client.ping(), HEALTH_TIMEOUT_S))
    except (RedisError, OSError, TimeoutError) as e:
        log.warning("health check: redis unreachable: %s", e)
        ok = False
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "redis": ok}, status_code=200 if ok else 503
    )


async def metrics(request: Request, principal: Principal) -> Response:
    service = control_state(request).service
    if service is not None:
        try:
            await service.refresh_metrics()
        except RedisError as e:  # the request counters are still worth serving
            log.warning("metrics: fleet gauges not refreshed: %s", e)
    return Response(control_state(request).metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request, principal: Principal) -> Response:
    return JSONResponse(OPENAPI)


def body_limit(request: Request) -> int:
    return control_state(request).settings.max_body_bytes


async def read_object(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object (400 if it is not one, 413 if too large); {} for an allowed empty body."""
    raw = await read_body(request, body_limit(request))
    if not raw.strip():
        if empty_ok:
            return {}
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, not {json_type(value)}")
    return value
