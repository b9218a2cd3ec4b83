"""The replica's HTTP surface: the run APIs (worker/api/), health, readiness and metrics.

    app = create_app(Settings.from_env(os.environ), environ=os.environ)

Run handlers are thin: they turn a request into a `worker.runs.RunCall`, which takes one reference to
the loaded version from the current snapshot, so a swap during the run never changes what it executes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.egress.runtime import Runtime
from cluster.http import EXCEPTION_HANDLERS, FastJSONResponse, JSONResponse, error_response
from cluster.settings import Settings
from worker.api import native
from worker.api.langflow.routes import ROUTES as LANGFLOW_ROUTES
from worker.api.openai import ROUTES as OPENAI_ROUTES
from worker.ports import Compiler
from worker.replica import Replica, StoreFactory

# The hot route, served by ReplicaHeader before the router (its Route stays in the list, first).
RUN_PREFIX, RUN_SUFFIX = "/v1/flows/", "/run"


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
        # Serving never waits on Redis: "unreachable" is information, not a reason to be unready.
        "redis": "ok" if replica.subscriber.redis_reachable() else "unreachable",
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
    """Adds X-Flowfleet-Replica to every response, errors included, so a client knows who answered.

    It also serves the hot route, `POST /v1/flows/{name}/run`, without the router: `run(scope,
    receive)` is what the route's endpoint does (worker.api.native.serve_run), with the same path
    params and exception handlers the router would use (an unhandled exception still reaches
    Starlette's server-error middleware), minus route matching, two exception-handling wrappers and a
    Request per request. Any other path, or a name the route's `{name}` would not match, goes to the app.
    """

    def __init__(
        self,
        app: ASGIApp,
        replica_id: str,
        run: Callable[[Scope, Receive], Awaitable[Response]] | None = None,
        handlers: Mapping[Any, Any] | None = None,
        direct: Mapping[str, ASGIApp] | None = None,
    ) -> None:
        self.app = app
        # POST routes whose endpoint is an ASGI app answering every error itself (the OpenAI API's run
        # routes): served without the router too.
        self.direct = dict(direct or {})
        self.header = (b"x-flowfleet-replica", replica_id.encode())
        self.run = run
        handlers = handlers or {}
        # What Starlette's ExceptionMiddleware holds: 500 / Exception go to the server-error middleware.
        self.status_handlers = {k: v for k, v in handlers.items() if isinstance(k, int) and k != 500}
        self.exception_handlers = {
            k: v for k, v in handlers.items() if isinstance(k, type) and k is not Exception
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        header = self.header
        started = False

        def send_with_header(message: Message) -> Awaitable[None]:
            # A plain function handing back send's awaitable: no coroutine of its own per message.
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            return send(message)

        name = run_route_name(scope) if self.run is not None else None
        if name is None:
            endpoint = self.direct.get(scope["path"]) if scope["method"] == "POST" else None
            if endpoint is None or scope.get("root_path"):
                await self.app(scope, receive, send_with_header)
                return
            scope["path_params"] = {}
            serve = getattr(endpoint, "serve", None)  # worker.api.openai.errors.OpenAIEndpoint
            if serve is None:
                await endpoint(scope, receive, send_with_header)
            else:
                await serve(scope, receive, send, send_with_header, header)
            return
        scope["path_params"] = {"name": name}
        try:
            response = await self.run(scope, receive)  # type: ignore[misc]
            if type(response) is FastJSONResponse:
                # What Response.__call__ would send, with the header added here rather than per message.
                started = True
                response.raw_headers.append(header)
                status, headers = response.status_code, response.raw_headers
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": response.body})
            else:
                await response(scope, receive, send_with_header)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            if started:
                raise RuntimeError("Caught handled exception, but response already started.") from exc
            response = await handler(Request(scope, receive, send_with_header), exc)
            await response(scope, receive, send_with_header)

    def _handler(self, exc: Exception) -> Any:
        """The handler Starlette's ExceptionMiddleware would pick for `exc`, or None."""
        if isinstance(exc, HTTPException):
            handler = self.status_handlers.get(exc.status_code)
            if handler is not None:
                return handler
        for cls in type(exc).__mro__:
            if cls in self.exception_handlers:
                return self.exception_handlers[cls]
        return None


def run_route_name(scope: Scope) -> str | None:
    """The flow name of a `POST /v1/flows/{name}/run` request, else None (`{name}` matches `[^/]+`).

    >>> run_route_name({"method": "POST", "path": "/v1/flows/qa/run", "root_path": ""})
    'qa'
    >>> run_route_name({"method": "POST", "path": "/v1/flows/a/b/run", "root_path": ""}) is None
    True
    """
    if scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not (path.startswith(RUN_PREFIX) and path.endswith(RUN_SUFFIX)):
        return None
    name = path[len(RUN_PREFIX) : -len(RUN_SUFFIX)]
    return name if name and "/" not in name else None


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
            *OPENAI_ROUTES,  # the run routes first: the router tries routes in order
            Route("/v1/flows/{name}", native.show_flow, methods=["GET"]),
            Route("/v1/flows", native.list_flows, methods=["GET"]),
            *LANGFLOW_ROUTES,
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        exception_handlers={**EXCEPTION_HANDLERS, 404: native.not_found},
        lifespan=lifespan,
    )
    app.state.replica = replica
    direct = {route.path: route.endpoint for route in OPENAI_ROUTES if route.methods == {"POST"}}
    app.add_middleware(
        ReplicaHeader,
        replica_id=settings.replica_id,
        run=partial(native.serve_run, replica),
        handlers=app.exception_handlers,
        direct=direct,
    )
    return app
