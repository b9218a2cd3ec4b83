"""Session pinning against a real redis-server, logged in with the replicas' least-privilege ACL rule.

Two `Loader`s with their own caches stand in for two replicas; the engine is the toy compiler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from cluster.store.canary_store import CanaryWriter
from cluster.store.keys import Keys
from cluster.store.redis_conn import connect
from cluster.store.store import Store
from cluster.traffic.canary import Pin
from tests.redis_server import RedisServer
from tests.worker_support import ToyCompiler, publish_activate, toy_doc
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.replica import redis_client
from worker.sessions import SessionPins
from worker.state import LoadedFlow, WorkerState

NS = "sessions"
FLOW = "qa"
# tests/test_worker_acl.py's minimal rule plus the session-pin grant (docs/worker.md).
WORKER_RULE = (
    f"resetkeys resetchannels %R~{NS}:* %W~{NS}:replica:* %W~{NS}:replicas %RW~{NS}:{{*}}:session:* "
    f"&{NS}:events -@all +smembers +hgetall +get +set +getex +zadd +subscribe +unsubscribe +ping +hello "
    "+auth +client|setname"
)


@dataclass
class FakeReplica:
    """What a replica uses to serve sessions: its own state, loader, cache and pins."""

    state: WorkerState
    loader: Loader
    pins: SessionPins
    compiler: ToyCompiler
    metrics: WorkerMetrics

    async def follow(self, store: Store) -> LoadedFlow:
        release = await store.get_release(FLOW)
        assert release is not None
        await self.loader.apply(release, triggered_by="test")
        loaded = self.state.snapshot.get(FLOW)
        assert loaded is not None and loaded.generation == release.generation
        return loaded

    def count(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "flowfleet_session_pins_total", {"flow": FLOW, "result": result}
        )
        return value or 0.0


@pytest.fixture
async def env(make_redis_server) -> AsyncIterator[tuple[RedisServer, Store, list[aioredis.Redis]]]:
    server = make_redis_server()
    admin = connect(server.url)
    await admin.execute_command("ACL", "SETUSER", "worker", "on", ">w-secret", *WORKER_RULE.split())
    clients: list[aioredis.Redis] = [admin]
    yield server, Store(admin, Keys(NS)), clients
    for client in clients:
        await client.aclose()


def make_replica(server: RedisServer, clients: list[aioredis.Redis], ttl_s: float = 60.0) -> FakeReplica:
    client = redis_client(f"redis://worker:w-secret@127.0.0.1:{server.port}/0", retries=0)
    clients.append(client)
    store, state, metrics, compiler = (
        Store(client, Keys(NS)),
        WorkerState("r"),
        WorkerMetrics(),
        ToyCompiler(),
    )
    loader = Loader(store, state, compiler, metrics)
    return FakeReplica(
        state, loader, SessionPins(client, Keys(NS), loader, metrics, ttl_s=ttl_s), compiler, metrics
    )


async def acl_denials(server: RedisServer) -> set[str]:
    admin = connect(server.url)
    try:
        return {entry["object"] for entry in await admin.acl_log()} - {"client|setinfo"}
    finally:
        await admin.aclose()


async def test_a_session_keeps_its_version_across_replicas_until_unpinned(env) -> None:
    server, store, clients = env
    a, b = make_replica(server, clients), make_replica(server, clients)
    v1, _ = await publish_activate(store, FLOW, "v1")
    on_a = await a.follow(store)

    first = await a.pins.serve(on_a, "chat-1", "chat-1")
    assert (first.hash, first.variant, first.pinned) == (v1, "stable", True) and a.count("created") == 1
    pin = Pin.decode(await store.redis.get(Keys(NS).session(FLOW, "chat-1")))
    assert pin is not None and (pin.hash, pin.generation) == (v1, 1)
    assert 0 < await store.redis.pttl(Keys(NS).session(FLOW, "chat-1")) <= 60_000

    v2, _ = await publish_activate(store, FLOW, "v2")
    on_b = await b.follow(store)  # replica b never loaded v1
    assert on_b.hash == v2 and b.compiler.compiled == ["v2"]
    # Five concurrent runs of the pinned session on b: v1 is fetched and compiled once, on demand.
    served = await asyncio.gather(*(b.pins.serve(on_b, "chat-1", "chat-1") for _ in range(5)))
    assert {(s.hash, s.variant, s.pinned, s.generation) for s in served} == {(v1, "pinned", True, 1)}
    assert b.compiler.compiled == ["v2", "v1"] and b.count("followed") == 5
    # A new session gets the current release.
    fresh = await b.pins.serve(on_b, "chat-2", "chat-2")
    assert (fresh.hash, fresh.variant) == (v2, "stable")
    # Replica a swaps to v2 and keeps v1 cached for the pinned session: no recompile.
    on_a = await a.follow(store)
    assert (await a.pins.serve(on_a, "chat-1", "chat-1")).hash == v1 and a.compiler.compiled == ["v1", "v2"]
    assert a.count("followed") == 1

    # An emergency fix with --unpin: every session moves to it, on every replica.
    data, fix = toy_doc("v3-fix")
    await store.publish(FLOW, data, fix, author="ops", message="fix", node_count=1)
    await store.activate(FLOW, fix, by="ops", reason="fix", unpin=True)
    on_a, on_b = await a.follow(store), await b.follow(store)
    assert on_a.unpin_generation == on_b.unpin_generation == 3
    moved = await b.pins.serve(on_b, "chat-1", "chat-1")
    assert (moved.hash, moved.variant, moved.pinned) == (fix, "stable", True) and b.count("replaced") == 1
    # The overwritten pin binds the session to the fix on the other replica too.
    assert (await a.pins.serve(on_a, "chat-1", "chat-1")).hash == fix and a.count("followed") == 2
    assert await acl_denials(server) == set()


async def test_unpin_activation_reaches_the_loaded_release(env) -> None:
    server, store, clients = env
    a = make_replica(server, clients)
    await publish_activate(store, FLOW, "v1")
    await a.pins.serve(await a.follow(store), "s", None)
    v2, _ = await publish_activate(store, FLOW, "v2")
    await store.activate(FLOW, v2, by="ops", reason="fix", unpin=True)
    loaded = await a.follow(store)
    assert loaded.unpin_generation == 3
    assert (await a.pins.serve(loaded, "s", None)).hash == v2


async def test_the_first_choice_follows_the_canary_and_sticks(env) -> None:
    server, store, clients = env
    a = make_replica(server, clients)
    v1, _ = await publish_activate(store, FLOW, "v1")
    v2 = (await publish_activate(store, FLOW, "v2"))[0]
    await store.activate(FLOW, v1, by="t", reason="back")
    await CanaryWriter(store).change(FLOW, "start", by="t", reason="", digest=v2, percent=100)
    loaded = await a.follow(store)
    assert loaded.canary is not None and loaded.canary.hash == v2
    first = await a.pins.serve(loaded, "s-canary", "s-canary")
    assert (first.hash, first.variant) == (v2, "canary")
    await CanaryWriter(store).change(FLOW, "abort", by="t", reason="")
    after = await a.follow(store)
    # The canary was aborted: the session started on it goes back to the stable version (issue 17).
    again = await a.pins.serve(after, "s-canary", "s-canary")
    assert (again.hash, again.variant, again.pinned) == (v1, "stable", True)


async def test_unloadable_or_unreadable_pins_are_replaced(env) -> None:
    server, store, clients = env
    a = make_replica(server, clients)
    v1, _ = await publish_activate(store, FLOW, "v1")
    loaded = await a.follow(store)
    key = Keys(NS).session(FLOW, "s")
    await store.redis.set(key, Pin("f" * 64, 1, 0.0).encode())  # a version that is not stored
    assert (await a.pins.serve(loaded, "s", None)).hash == v1
    assert Pin.decode(await store.redis.get(key)).hash == v1  # type: ignore[union-attr]
    await store.redis.set(key, b"garbage")
    assert (await a.pins.serve(loaded, "s", None)).hash == v1 and a.count("replaced") == 2


async def test_racing_first_runs_agree_on_one_version(env) -> None:
    server, store, clients = env
    a, b = make_replica(server, clients), make_replica(server, clients)
    await publish_activate(store, FLOW, "v1")
    on_a = await a.follow(store)
    await publish_activate(store, FLOW, "v2")
    on_b = await b.follow(store)  # a still serves v1, b already v2
    for i in range(20):
        runs = await asyncio.gather(a.pins.serve(on_a, f"s{i}", None), b.pins.serve(on_b, f"s{i}", None))
        assert runs[0].hash == runs[1].hash


async def test_redis_down_serves_unpinned_and_never_fails(env) -> None:
    server, store, clients = env
    a = make_replica(server, clients)
    v1, _ = await publish_activate(store, FLOW, "v1")
    loaded = await a.follow(store)
    server.kill()
    served = await a.pins.serve(loaded, "s", "s")
    assert (served.hash, served.pinned) == (v1, False) and a.count("degraded") == 1
    server.restart()
    admin = connect(server.url)
    clients.append(admin)
    await admin.execute_command("ACL", "SETUSER", "worker", "on", ">w-secret", *WORKER_RULE.split())
    assert (await a.pins.serve(loaded, "s", "s")).pinned


async def test_a_frozen_redis_costs_a_run_at_most_the_pin_timeout(env) -> None:
    server, store, clients = env
    a = make_replica(server, clients)
    await publish_activate(store, FLOW, "v1")
    loaded = await a.follow(store)
    server.pause()
    try:
        served = await asyncio.wait_for(a.pins.serve(loaded, "s", "s"), timeout=5.0)
    finally:
        server.resume()
    assert not served.pinned and a.count("degraded") == 1
