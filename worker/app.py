"""The replica's HTTP surface: the run APIs (worker/api/), health, readiness and metrics.

    app = create_app(Settings.from_env(os.environ), environ=os.environ)

Run handlers are thin: they turn a request into a `worker.runs.RunCall`, which takes one reference to
the loaded version from the current snapshot, so a swap during the run never changes what it executes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.egress.runtime import Runtime
from cluster.http import EXCEPTION_HANDLERS, JSONResponse, error_response
from cluster.settings import Settings
from worker.api import native
from worker.ports import Compiler
from worker.replica import Replica, StoreFactory


def _replica(request: Request) -> Replica:
    replica: Replica = request.app.state.replica
    return replica


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
            Route("/v1/flows/{name}/run", native.run_flow, methods=["POST"]),
            Route("/v1/flows/{name}", native.show_flow, methods=["GET"]),
            Route("/v1/flows", native.list_flows, methods=["GET"]),
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
