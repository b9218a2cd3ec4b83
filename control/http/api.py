"""The control-plane HTTP API: a Starlette app whose handlers parse, call the service and render.

    app = create_app(Settings.from_env(os.environ))   # refuses to build without any API token
    uvicorn.run(app, port=8700)

Every route but ``/healthz`` needs ``Authorization: Bearer <token>``; see `control.http.auth` for roles.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from redis.exceptions import RedisClusterException, RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.egress.policy import OutboundPolicy
from cluster.errors import Unauthorized
from cluster.http import EXCEPTION_HANDLERS, error_response, handle_not_found
from cluster.names import check_raw_flow_name
from cluster.settings import Settings
from cluster.store.conversations import ConversationStore
from cluster.store.keys import Keys
from cluster.store.lease import holder_id
from cluster.store.redis_conn import RedisClient, from_settings
from cluster.store.replication import ReplicaWait
from cluster.store.store import Store
from cluster.store.topology import describe, parse
from control.canary import routes as canary_routes
from control.canary.guard import CanaryGuard
from control.canary.service import CanaryService
from control.conversations import ConversationService
from control.http import conversation_routes, routes
from control.http.auth import WWW_AUTHENTICATE, Principal, Role, TokenTable
from control.http.state import ControlState, control_state
from control.metrics import ControlMetrics
from control.rollout.guard import RollbackGuard
from control.rollout.periodic import PeriodicCheck
from control.rollout.twophase import TwoPhaseCutover
from control.service import ControlService

log = logging.getLogger(__name__)

Handler = Callable[[Request, Principal], Awaitable[Response]]


def authenticated(role: Role, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler so it runs only for a principal holding at least `role` (401 / 403 otherwise)."""

    async def endpoint(request: Request) -> Response:
        state = control_state(request)
        try:
            principal = state.tokens.authenticate(request.headers.get("authorization"))
        except Unauthorized as e:
            # RFC 6750: a 401 names the scheme the client should use.
            return error_response(
                e.http_status, e.code, e.message, e.details, headers={"WWW-Authenticate": WWW_AUTHENTICATE}
            )
        principal.require(role)
        check_raw_flow_name(request.scope.get("raw_path"))
        request.state.principal = principal
        return await handler(request, principal)

    return endpoint


class MetricsMiddleware:
    """Counts every response by method, route template (bounded label values) and status."""

    def __init__(self, app: ASGIApp, metrics: ControlMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = route.path if isinstance(route, Route) else "unmatched"
            self.metrics.requests.labels(scope["method"], label, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)


async def redis_unavailable(request: Request, exc: Exception) -> Response:
    """Redis down or unreachable is the service being unavailable (503, retry later), not a bug (500).
    Request-path commands time out after FLOWFLEET_REDIS_TIMEOUT_S, so this answers within about that."""
    log.warning("redis error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(
        503, "redis_unavailable", "the version store (Redis) is unavailable; retry later", {},
        headers={"Retry-After": "1"},
    )  # fmt: skip


not_found = handle_not_found


def build_routes() -> list[BaseRoute]:
    r, c, m = routes, canary_routes, conversation_routes
    v, d, a = Role.VIEWER, Role.DEPLOYER, Role.ADMIN
    return [
        Route("/healthz", r.healthz, methods=["GET"]),
        Route("/metrics", authenticated(v, r.metrics), methods=["GET"]),
        Route("/openapi.json", authenticated(v, r.openapi), methods=["GET"]),
        Route("/v1/flows", authenticated(v, r.list_flows), methods=["GET"]),
        Route("/v1/flows/{name}", authenticated(v, r.get_flow), methods=["GET"]),
        Route("/v1/flows/{name}/versions", authenticated(d, r.publish), methods=["POST"]),
        Route("/v1/flows/{name}/versions/{hash}", authenticated(v, r.get_version), methods=["GET"]),
        Route("/v1/flows/{name}/activate", authenticated(d, r.activate), methods=["POST"]),
        Route("/v1/flows/{name}/rollback", authenticated(d, r.rollback), methods=["POST"]),
        Route("/v1/flows/{name}/history", authenticated(v, r.history), methods=["GET"]),
        Route("/v1/flows/{name}/diff", authenticated(v, r.diff), methods=["GET"]),
        Route("/v1/flows/{name}/rollout", authenticated(v, r.rollout), methods=["GET"]),
        Route("/v1/flows/{name}/canary", authenticated(v, c.status), methods=["GET"]),
        Route("/v1/flows/{name}/canary", authenticated(d, c.start), methods=["POST"]),
        Route("/v1/flows/{name}/canary/percent", authenticated(d, c.set_percent), methods=["POST"]),
        Route("/v1/flows/{name}/canary/promote", authenticated(d, c.finish), methods=["POST"]),
        Route("/v1/flows/{name}/canary/abort", authenticated(d, c.finish), methods=["POST"]),
        Route("/v1/flows/{name}/conversations", authenticated(v, m.list_conversations), methods=["GET"]),
        Route("/v1/flows/{name}/conversations/{id}", authenticated(v, m.read_conversation), methods=["GET"]),
        Route(
            "/v1/flows/{name}/conversations/{id}", authenticated(d, m.delete_conversation), methods=["DELETE"]
        ),
        Route("/v1/users/{user_id}/conversations", authenticated(d, m.forget_user), methods=["DELETE"]),
        Route("/v1/fleet", authenticated(v, r.fleet), methods=["GET"]),
        Route("/v1/audit", authenticated(v, r.audit), methods=["GET"]),
        Route("/v1/gc", authenticated(a, r.gc), methods=["POST"]),
    ]


def create_app(
    settings: Settings,
    *,
    redis: RedisClient | None = None,
) -> Starlette:
    """The control-plane app. With `redis`, the caller owns that client; otherwise the app makes one from
    `settings.redis_url` and its lifespan closes it. Flows are checked against the operator's outbound
    policy and compiled without a runtime: the control plane reads no provider key and calls out nowhere.

    Configuration errors (no token, a bad tokens file, Redis URL, namespace or outbound policy) raise
    here, before any server starts listening.
    """
    tokens = TokenTable.from_settings(settings)
    policy = OutboundPolicy.from_settings(settings)
    keys = Keys(settings.namespace)
    replica_wait = ReplicaWait.from_settings(settings)
    # No I/O yet: the factory only checks the URL; connections open on first use inside the event loop.
    client = redis if redis is not None else from_settings(settings, client_name="flowfleet-control")
    metrics = ControlMetrics()
    state = ControlState(settings=settings, tokens=tokens, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = Store(
            client,
            keys,
            history_keep=settings.history_keep,
            audit_keep=settings.audit_keep,
            replica_wait=replica_wait,
        )
        state.redis = client
        cutover = TwoPhaseCutover(store, metrics, timeout_s=settings.prepare_timeout_s)
        service = state.service = ControlService(
            store, policy=policy, metrics=metrics, cutover=cutover, gc_min_age_s=settings.gc_min_age_s
        )
        history = ConversationStore(
            client, keys, max_messages=settings.history_max_messages, ttl_s=settings.history_ttl_s
        )
        app.state.conversations = ConversationService(store, history, metrics)
        state.canaries = CanaryService(
            service, margin=settings.canary_error_margin, min_runs=settings.canary_min_runs
        )
        guards: list[PeriodicCheck] = []
        # Every control plane runs the guards; a lease in Redis lets one of them act at a time.
        holder = holder_id()
        if settings.guard_interval_s > 0:
            guards.append(
                RollbackGuard(
                    service,
                    interval_s=settings.guard_interval_s,
                    max_failures=settings.auto_rollback_failures,
                    max_replicas=settings.auto_rollback_replicas,
                    canaries=state.canaries,
                    holder=holder,
                )
            )
        if settings.canary_guard_s > 0:
            guards.append(CanaryGuard(state.canaries, interval_s=settings.canary_guard_s, holder=holder))
        guard_tasks = [asyncio.create_task(g.run(), name=g.name) for g in guards]
        log.info(
            "control plane ready redis=%s namespace=%s principals=%d",
            describe(parse(settings.redis_url)) if redis is None else "<given>",
            settings.namespace,
            len(tokens.entries),
        )
        try:
            yield
        finally:
            for g in guards:
                g.stop()
            await asyncio.gather(*guard_tasks)
            state.canaries = None
            app.state.conversations = None
            state.service = None
            state.redis = None
            if redis is None:
                await client.aclose()

    app = Starlette(
        routes=build_routes(),
        middleware=[Middleware(MetricsMiddleware, metrics=metrics)],
        exception_handlers={
            **EXCEPTION_HANDLERS,
            RedisError: redis_unavailable,
            RedisClusterException: redis_unavailable,
        },  # fmt: skip
        lifespan=lifespan,
    )
    app.state.control = state
    app.add_exception_handler(404, not_found)
    return app
