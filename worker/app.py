"""The replica's HTTP surface: run flows, list what is loaded, health, readiness and metrics.

    app = create_app(Settings.from_env(os.environ), environ=os.environ)

Handlers are thin: they take one reference to the loaded version from the current snapshot and run
it, so a swap during the run never changes what that run executes. A run asked for as a stream
(`"stream": true`, or `Accept: text/event-stream`) answers server-sent events: worker/stream.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.egress.runtime import Runtime
from cluster.errors import BadRequest, FlowfleetError, FlowNotFound, RunInputError
from cluster.http import (
    EXCEPTION_HANDLERS,
    FastJSONResponse,
    JSONResponse,
    error_response,
    read_json_object,
)
from cluster.settings import Settings
from cluster.store.conversations import ANONYMOUS
from worker.disconnect import unless_disconnected
from worker.ports import Compiler, Runnable, RunOutcome
from worker.replica import Replica, StoreFactory
from worker.routing import Served, route, run_keys
from worker.stream import RunRequest, StreamedRun, settle, version_headers, wants_stream

RETRY_AFTER_S = "1"


def _replica(request: Request) -> Replica:
    replica: Replica = request.app.state.replica
    return replica


async def _execute(
    replica: Replica,
    compiled: Runnable,
    flow: str,
    inputs: dict[str, Any],
    trace: bool,
    session_id: str | None,
    body: Mapping[str, Any],
    receive: Receive,
    stream: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[RunOutcome, dict[str, Any] | None]:
    """Run once; a run that names a session of a flow with memory continues that conversation, and its
    turn is stored before the response (the `memory` report says what degraded, if anything). A run
    that may wait on the network, or is streamed (`stream`: the events sink), ends when its client goes
    away; others just run (no watcher task on the fast path)."""
    conversation = None
    if session_id is not None and getattr(compiled, "remembers", False):
        user_id = body.get("user_id")
        user = user_id if isinstance(user_id, str) else None
        conversation = replica.conversations.open(flow, ANONYMOUS, session_id, user)
    options: dict[str, Any] = {"conversation": conversation} if conversation is not None else {}
    if stream is not None:
        options["stream"] = stream
    run = compiled.run(inputs, timeout=replica.settings.run_timeout_s, trace=trace, **options)
    watched = stream is not None or getattr(compiled, "calls_out", False)
    result = await (unless_disconnected(run, receive) if watched else run)
    memory = await replica.conversations.finish(conversation) if conversation is not None else None
    return result, memory


def _payload(
    name: str,
    served: Served,
    result: RunOutcome,
    session_id: str | None,
    memory: dict[str, Any] | None,
    trace: bool,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "outputs": result.outputs,
        "flow": name,
        "version": served.hash,
        "generation": served.generation,
        "variant": served.variant,
        "duration_ms": result.duration_ms,
    }
    if session_id is not None:
        payload["session_id"] = session_id
        payload["pinned"] = served.pinned
    if memory is not None:  # the conversation's history could not be read, or the turn waits
        payload["memory"] = memory
    if trace:
        payload["trace"] = result.trace
    return payload


async def run_flow(request: Request) -> Response:
    replica = _replica(request)
    name = request.path_params["name"]
    body = await read_json_object(request, replica.settings.max_body_bytes)
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        raise RunInputError(f"'inputs' must be a JSON object, not {type(inputs).__name__}", field="inputs")
    trace = body.get("trace", False)
    if not isinstance(trace, bool):
        raise BadRequest("'trace' must be true or false", field="trace")
    # An explicit `stream` in the body wins over the Accept header.
    stream = body["stream"] if "stream" in body else wants_stream(request.headers.get("accept"))
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false", field="stream")
    keys = run_keys(request.headers, body)
    if replica.state.draining:
        return error_response(
            503, "shutting_down", "replica is shutting down", headers={"Retry-After": RETRY_AFTER_S}
        )
    # The one read of the snapshot for this run: everything below uses `loaded`, whatever swaps later.
    loaded = replica.state.snapshot.get(name)
    if loaded is None:
        return not_loaded(replica, name)
    metrics = replica.metrics
    # Stable or canary by the request key; a session's pin may choose otherwise (below).
    served = route(loaded, keys.key)
    if not replica.gate.try_enter():
        metrics.count_run(name, served.hash, "overloaded")
        return error_response(
            503,
            "overloaded",
            f"replica is running its limit of {replica.gate.limit} concurrent runs",
            {"limit": replica.gate.limit},
            headers={"Retry-After": RETRY_AFTER_S},
        )
    if stream:
        run = RunRequest(replica, name, loaded, served, keys, inputs, trace, body)
        return StreamedRun(run, _execute, _payload)
    started = time.monotonic()
    outcome = "internal_error"
    failure: FlowfleetError | None = None
    try:
        if keys.session_id is not None:
            served = await replica.sessions.serve(loaded, keys.session_id, keys.key)
        result, memory = await _execute(
            replica, served.compiled, name, inputs, trace, keys.session_id, body, request.receive
        )
        outcome = "ok"
    except FlowfleetError as e:
        outcome, failure = e.code, e
    except asyncio.CancelledError:
        outcome = "cancelled"  # the client went away, or shutdown ran out of grace
        raise
    finally:
        settle(replica, name, loaded.epoch, served.hash, outcome, started)
    if failure is not None:
        headers = {"X-Flowfleet-Version": served.hash, "X-Flowfleet-Variant": served.variant}
        # A failed run names its version too, so a client can tell a failing canary from the stable.
        f = failure
        return error_response(f.http_status, f.code, f.message, f.details, headers=headers)
    payload = _payload(name, served, result, keys.session_id, memory, trace)
    return FastJSONResponse(payload, headers=version_headers(served))


def not_loaded(replica: Replica, name: str) -> Response:
    """404 for a flow this replica never heard of; 503 for one with a release it could not load."""
    target = replica.state.targets.get(name)
    if target is None:
        raise FlowNotFound(name)
    err = replica.state.health_of(name).last_error
    details: dict[str, Any] = {"flow": name, "hash": target.hash, "generation": target.generation}
    if err is not None:
        details["reason"] = err.reason
        details["error"] = err.message
    message = f"flow {name!r} has a release, but no version of it is loaded on this replica"
    return error_response(503, "flow_not_loaded", message, details, headers={"Retry-After": RETRY_AFTER_S})


async def list_flows(request: Request) -> Response:
    replica = _replica(request)
    flows = [loaded.as_dict() for _, loaded in sorted(replica.state.snapshot.flows.items())]
    return JSONResponse({"replica": replica.settings.replica_id, "flows": flows})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "replica": _replica(request).settings.replica_id})


async def readyz(request: Request) -> Response:
    replica = _replica(request)
    state = replica.state
    flows = [
        {
            "flow": r.flow,
            "state": r.state,
            "target_hash": r.target_hash,
            "target_generation": r.target_generation,
            "loaded_hash": r.loaded_hash,
            "loaded_generation": r.loaded_generation,
        }
        for r in state.readiness()
    ]
    details = {
        "replica": replica.settings.replica_id,
        "synced": state.synced,
        "draining": state.draining,
        "subscribed": replica.subscriber.connected.is_set(),
        "flows": flows,
    }
    if state.is_ready():
        return JSONResponse({"ready": True, **details})
    if state.draining:
        why = "replica is shutting down"
    elif not state.synced:
        why = "release records not read yet (is Redis reachable?)"
    else:
        pending = [r.flow for r in state.readiness() if r.blocks_readiness]
        why = f"waiting for the first load of: {', '.join(pending)}"
    return error_response(503, "not_ready", why, details)


async def metrics_endpoint(request: Request) -> Response:
    metrics = _replica(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)


class ReplicaHeader:
    """Adds X-Flowfleet-Replica to every response, errors included, so a client knows who answered."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.header = (b"x-flowfleet-replica", replica_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        header = self.header

        def send_with_header(message: Message) -> Awaitable[None]:
            # A plain function handing back send's awaitable: no coroutine of its own per message.
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            return send(message)

        await self.app(scope, receive, send_with_header)


def create_app(
    settings: Settings,
    *,
    compiler: Compiler | None = None,
    store_factory: StoreFactory | None = None,
    environ: Mapping[str, str] | None = None,
    runtime: Runtime | None = None,
) -> Starlette:
    replica = Replica(
        settings, compiler=compiler, store_factory=store_factory, environ=environ, runtime=runtime
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await replica.start()
        try:
            yield
        finally:
            await replica.stop()

    app = Starlette(
        routes=[
            Route("/v1/flows/{name}/run", run_flow, methods=["POST"]),
            Route("/v1/flows", list_flows, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.replica = replica
    app.add_middleware(ReplicaHeader, replica_id=settings.replica_id)
    return app
