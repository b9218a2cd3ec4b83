"""Release identity (issue 17) against a real redis-server: a release is its generation *and* its version
(and stamp, the record's activated_at), never the generation alone; and versions a release record revokes
(an aborted canary, a version rolled back automatically) no longer hold the sessions pinned to them.

The restore is the one docs/operations.md describes: every flowfleet key but the replica statuses
DUMPed, later deleted and RESTOREd, so generations start again from the backup's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from cluster.store.canary_store import CanaryWriter
from cluster.store.events import Prepare, ReleaseChanged, encode
from cluster.store.keys import Keys
from cluster.store.release import AUTO_ROLLBACK_ACTOR, Release
from cluster.store.scripts import load
from cluster.store.store import Store
from control.rollout.convergence import convergence
from tests.worker_support import ToyCompiler, publish_activate, toy_doc, wait_for
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.prepared import PreparedVersions, Preparer
from worker.replica import redis_client
from worker.sessions import SessionPins
from worker.state import WorkerState
from worker.subscriber import Subscriber, Timing

FLOW = "qa"
# Reconcile passes far apart: whatever converges in these tests converges through events.
SLOW = Timing(reconcile_s=60.0, watchdog_s=30.0, ping_s=10.0)


async def backup(redis: aioredis.Redis, keys: Keys) -> dict[bytes, bytes]:
    """DUMP every key of the namespace except the replica statuses (docs/operations.md)."""
    saved = {}
    async for key in redis.scan_iter(match=keys.all_pattern()):
        if not key.startswith(f"{keys.namespace}:replica".encode()):
            saved[key] = await redis.dump(key)
    return saved


async def restore(redis: aioredis.Redis, keys: Keys, saved: dict[bytes, bytes]) -> None:
    """Back to the backup: the namespace's keys (statuses aside) go, the saved ones are RESTOREd."""
    async for key in redis.scan_iter(match=keys.all_pattern()):
        if not key.startswith(f"{keys.namespace}:replica".encode()):
            await redis.delete(key)
    for key, value in saved.items():
        await redis.restore(key, 0, value)


async def stored(store: Store, label: str) -> str:
    data, digest = toy_doc(label)
    await store.publish(FLOW, data, digest, author="t", message=label, node_count=1)
    return digest


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


@pytest.fixture
def loader(store: Store) -> Loader:
    return Loader(store, WorkerState("r1"), ToyCompiler(), WorkerMetrics())


async def rollback(store: Store, digest: str, *, by: str) -> Release:
    """A rollback as the control plane commits it (the rollback guard's too): an activation, action
    `rollback`, of an earlier version."""
    return await store.activate(FLOW, digest, by=by, reason="rolled back", action="rollback")


async def current(store: Store) -> Release:
    release = await store.get_release(FLOW)
    assert release is not None
    return release


async def test_a_record_reusing_the_loaded_generation_for_another_version_wins(
    store: Store, loader: Loader, redis_client: aioredis.Redis
) -> None:
    await publish_activate(store, FLOW, "v1")
    saved = await backup(redis_client, store.keys)
    v2, _ = await publish_activate(store, FLOW, "v2")
    await loader.apply(await current(store), triggered_by="test")
    before_restore = await current(store)
    await restore(redis_client, store.keys, saved)
    v3 = await stored(store, "v3")
    await store.activate(FLOW, v3, by="ci", reason="after the restore")
    record = await current(store)
    assert (record.generation, record.hash) == (2, v3), "generation 2 again, another version"

    # A bare event of a number already loaded is no news; the record is.
    bare = ReleaseChanged(FLOW, v3, 2, "ci", record.activated_at)
    assert (await loader.apply(bare, triggered_by="event", forced=True)).result == "ignored"
    outcome = await loader.apply(record, triggered_by="reconcile", authoritative=True)
    assert (outcome.result, outcome.old_hash, outcome.new_hash) == ("loaded", v2, v3)
    loaded = loader.state.snapshot.get(FLOW)
    assert loaded is not None and (loaded.hash, loaded.generation, loaded.stamp) == (
        v3, 2, record.activated_at,
    )  # fmt: skip
    assert loader.state.status()[FLOW]["activated_at"] == record.activated_at
    # A read taken before the restore and applied late is checked against a fresh read: it loses.
    late = await loader.apply(before_restore, triggered_by="reconcile", authoritative=True)
    assert late.result == "ignored" and loader.state.snapshot.get(FLOW).hash == v3  # type: ignore[union-attr]
    assert (await loader.apply(record, triggered_by="reconcile", authoritative=True)).result == "ignored"


@asynccontextmanager
async def subscribed_replica(url: str, namespace: str) -> AsyncIterator[tuple[WorkerState, ToyCompiler]]:
    keys = Keys(namespace)
    redis, sub_redis = redis_client(url, retries=1), redis_client(url, retries=0)
    state, metrics, compiler = WorkerState("r1"), WorkerMetrics(), ToyCompiler()
    store = Store(redis, keys)
    sub = Subscriber(
        sub_redis, keys.channel(), store, Loader(store, state, compiler, metrics), state, metrics, SLOW
    )
    task = asyncio.create_task(sub.run())
    try:
        await wait_for(lambda: sub.connected.is_set() and state.synced, what="subscribed")
        yield state, compiler
    finally:
        sub.stop()
        await asyncio.wait_for(task, timeout=10)
        await redis.aclose()
        await sub_redis.aclose()


def served(state: WorkerState) -> str | None:
    loaded = state.snapshot.get(FLOW)
    return loaded.hash if loaded else None


async def test_the_event_of_a_reused_generation_moves_the_replica_at_once(
    redis_server: Any, namespace: str, store: Store, redis_client: aioredis.Redis
) -> None:
    await publish_activate(store, FLOW, "v1")
    saved = await backup(redis_client, store.keys)
    async with subscribed_replica(redis_server.url, namespace) as (state, _):
        v2, _ = await publish_activate(store, FLOW, "v2")
        await wait_for(lambda: served(state) == v2, what="v2 at generation 2")
        await restore(redis_client, store.keys, saved)
        v3, generation = await publish_activate(store, FLOW, "v3")
        assert generation == 2
        await wait_for(lambda: served(state) == v3, timeout=5, what="v3, announced as generation 2 again")


async def test_an_event_newer_than_its_record_never_beats_the_record(
    redis_server: Any, namespace: str, store: Store, redis_client: aioredis.Redis
) -> None:
    """After a restore, an event may name a release the store no longer has: the record decides."""
    async with subscribed_replica(redis_server.url, namespace) as (state, compiler):
        v1, _ = await publish_activate(store, FLOW, "v1")
        await wait_for(lambda: served(state) == v1, what="v1")
        ghost = await stored(store, "ghost")
        lost = ReleaseChanged(FLOW, ghost, 9, "ci", 1.0)
        await redis_client.publish(store.keys.channel(), encode(lost))
        v2, _ = await publish_activate(store, FLOW, "v2")
        await wait_for(lambda: served(state) == v2, timeout=5, what="v2, the record's version")
        assert "ghost" not in compiler.compiled and state.snapshot.get(FLOW).generation == 2  # type: ignore[union-attr]


async def test_a_two_phase_commit_at_a_reused_generation_swaps_the_held_version(
    store: Store, redis_client: aioredis.Redis
) -> None:
    state, compiler, prepared = WorkerState("r1"), ToyCompiler(), PreparedVersions()
    loader = Loader(store, state, compiler, WorkerMetrics(), take_prepared=prepared.take)
    preparer = Preparer(loader, state, prepared)
    await publish_activate(store, FLOW, "v1")
    saved = await backup(redis_client, store.keys)
    await publish_activate(store, FLOW, "v2")
    await loader.apply(await current(store), triggered_by="test")
    await restore(redis_client, store.keys, saved)
    v3 = await stored(store, "v3")
    reply = await preparer.prepare(Prepare(FLOW, v3, "ro1", 2, "ci", 1.0))
    assert reply.ok and reply.hash == v3
    await store.activate(FLOW, v3, by="ci", reason="commit")
    outcome = await loader.apply(await current(store), triggered_by="event", forced=True, authoritative=True)
    assert outcome.result == "loaded" and served(state) == v3
    assert compiler.compiled == ["v2", "v3"], "the commit swapped the held version, compiling nothing"


def status(replica: str, digest: str, generation: int, stamp: float | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"hash": digest, "generation": generation}
    if stamp is not None:
        entry["activated_at"] = stamp
    return {"replica_id": replica, "state": "serving", "flows": {FLOW: entry}}


def test_a_replica_is_current_only_when_it_runs_the_records_version() -> None:
    statuses = [status("a", "h2", 2), status("b", "h3", 2)]
    state = convergence(FLOW, "h3", 2, statuses)
    assert [(r.replica, r.state) for r in state.replicas] == [("a", "behind"), ("b", "current")]
    assert not state.done and state.line() == "1/2 replicas on generation 2"
    # Same version, same generation, but another release of it (the stamp tells them apart).
    stamped = [status("a", "h3", 2, 10.0), status("b", "h3", 2, 11.0)]
    assert convergence(FLOW, "h3", 2, stamped, stamp=11.0).current == 1
    assert convergence(FLOW, "h3", 2, stamped).done, "without a stamp: version and generation"


async def test_canary_aborts_and_automatic_rollbacks_revoke_versions_in_the_record(
    store: Store, redis_client: aioredis.Redis
) -> None:
    v1, v2, v3 = await stored(store, "v1"), await stored(store, "v2"), await stored(store, "v3")
    writer = CanaryWriter(store)
    await store.activate(FLOW, v1, by="ci", reason="")
    await writer.change(FLOW, "start", by="ci", reason="", digest=v2, percent=50)
    aborted = await writer.change(FLOW, "abort", by="bob", reason="looks wrong")
    assert aborted.revoked == (v2,) and await current(store) == aborted
    assert (await store.history(FLOW))[0] == aborted
    await store.activate(FLOW, v3, by="ci", reason="")
    assert (await current(store)).revoked == (v2,), "carried over by an activation"
    await rollback(store, v1, by=AUTO_ROLLBACK_ACTOR)
    assert (await current(store)).revoked == (v3, v2)
    assert (await store.history(FLOW))[0].revoked == (v3, v2)
    # A rollback by hand revokes nothing, and a version released again leaves the list.
    await rollback(store, v3, by="ci")
    assert (await current(store)).hash == v3 and (await current(store)).revoked == (v2,)
    restarted = await writer.change(FLOW, "start", by="ci", reason="again", digest=v2, percent=10)
    assert restarted.revoked == () and await current(store) == restarted
    assert await redis_client.hget(store.keys.release(FLOW), "revoked") is None
    assert f"'{AUTO_ROLLBACK_ACTOR}'" in load("activate"), "the script names the guard's actor"


async def test_sessions_on_a_version_rolled_back_automatically_move_to_the_current_release(
    store: Store, loader: Loader, redis_client: aioredis.Redis
) -> None:
    pins = SessionPins(redis_client, store.keys, loader, WorkerMetrics(), ttl_s=60.0)
    v1, _ = await publish_activate(store, FLOW, "v1")
    await loader.apply(await current(store), triggered_by="test")
    first = await pins.serve(loader.state.snapshot.get(FLOW), "chat-1", None)  # type: ignore[arg-type]
    v2, _ = await publish_activate(store, FLOW, "v2")
    await loader.apply(await current(store), triggered_by="test")
    loaded = loader.state.snapshot.get(FLOW)
    assert loaded is not None
    second = await pins.serve(loaded, "chat-2", None)
    assert (first.hash, second.hash) == (v1, v2)
    assert (await pins.serve(loaded, "chat-1", None)).hash == v1, "an ordinary pin holds"

    await rollback(store, v1, by=AUTO_ROLLBACK_ACTOR)
    await loader.apply(await current(store), triggered_by="event", authoritative=True)
    after = loader.state.snapshot.get(FLOW)
    assert after is not None and after.hash == v1
    moved = await pins.serve(after, "chat-2", None)
    assert (moved.hash, moved.variant, moved.pinned) == (v1, "stable", True)
    assert after.revoked == frozenset({v2})
    pin = await redis_client.get(store.keys.session(FLOW, "chat-2"))
    assert pin is not None and v1 in pin.decode(), "the pin was rewritten, not refreshed"
