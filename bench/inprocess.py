"""Requests driven straight into a replica's ASGI app in the benchmark's own process: no sockets, no HTTP
parser, no load generator, so what differs between two routes is the app's own work, with little of
the machine's noise (a shared machine moves throughput over sockets by several per cent between rounds).

    async with replica_app(redis_url, namespace, "f") as app:  # a replica of the fleet, in process
        timings = await per_request_us(app, {"a": ("/v1/flows/f/run", body)}, n=2000, rounds=20)

    timings = await on_replica_loop(redis_url, namespace, "f", routes, n=2000, rounds=20)

`on_replica_loop` does the same on an event loop of the kind a replica runs on (uvloop where it is
installed, as uvicorn picks it), in a thread of its own. The replica subscribes and loads like any
other; the timed loop never yields to the event loop while a round runs, so its background tasks
(heartbeat, subscriber) wait until the round ends. Rounds are short and alternate the routes' order,
and each route's figure is the median of its rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.types import ASGIApp, Message

from cluster.settings import Settings


@contextlib.asynccontextmanager
async def replica_app(redis_url: str, namespace: str, flow: str) -> AsyncIterator[ASGIApp]:
    """A started replica's app (worker.app.create_app) that serves `flow`; stopped on exit."""
    from worker.app import create_app

    settings = Settings.from_env({}, redis_url=redis_url, namespace=namespace, replica_id="in-process")
    app = create_app(settings)
    replica = app.state.replica
    await replica.start()
    try:
        async with asyncio.timeout(30):
            while replica.state.snapshot.get(flow) is None:
                await asyncio.sleep(0.02)
        yield app
    finally:
        await replica.stop()


def _scope(path: str, body: bytes) -> dict[str, Any]:
    """What uvicorn hands the app for `POST path` with a JSON body."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def request(app: ASGIApp, path: str, body: bytes) -> tuple[int, bytes]:
    """One request through the app: (status, body)."""
    sent: list[Message] = []
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> Message:
        return message

    async def send(out: Message) -> None:
        sent.append(out)

    await app(_scope(path, body), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def per_request_us(
    app: ASGIApp, routes: dict[str, tuple[str, bytes]], *, n: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """Time per request of each route (µs), over `rounds` rounds of `n` requests each; every route must
    answer 200. Returns, per route, its rounds and their median and minimum."""
    for name, (path, body) in routes.items():
        status, answer = await request(app, path, body)
        if status != 200:
            raise RuntimeError(f"{name}: {path} answered {status}: {answer[:200]!r}")
        for _ in range(n):  # warm-up, discarded
            await request(app, path, body)
    times: dict[str, list[float]] = {name: [] for name in routes}
    names = list(routes)
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            path, body = routes[name]
            started = time.perf_counter()
            for _ in range(n):
                await request(app, path, body)
            times[name].append((time.perf_counter() - started) / n * 1e6)
        await asyncio.sleep(0)  # the replica's own tasks run between rounds
    return {
        name: {"rounds_us": [round(t, 2) for t in ts], "median_us": round(statistics.median(ts), 2),
               "min_us": round(min(ts), 2)}
        for name, ts in times.items()
    }  # fmt: skip


def replica_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """New event loops of the kind uvicorn's `loop="auto"` runs a replica on."""
    try:
        import uvloop
    except ImportError:  # a platform without its wheels: uvicorn runs on asyncio too
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def on_replica_loop(
    redis_url: str, namespace: str, flow: str, routes: dict[str, tuple[str, bytes]], *, n: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """`per_request_us` for a replica started in process, on a replica's kind of event loop."""

    async def timed() -> dict[str, dict[str, Any]]:
        async with replica_app(redis_url, namespace, flow) as app:
            return await per_request_us(app, routes, n=n, rounds=rounds)

    def in_thread() -> dict[str, dict[str, Any]]:
        with asyncio.Runner(loop_factory=replica_loop_factory()) as runner:
            return runner.run(timed())

    return await asyncio.to_thread(in_thread)
