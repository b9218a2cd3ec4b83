"""Prepared versions on a replica (real redis-server, toy compiler): ACK / NACK, hold, commit without
recompiling, drop on abort, supersede and expiry, and the `prepared` field of the status."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cluster.store.events import Abort, Carried, Prepare, ReleaseChanged, encode
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.worker_support import ToyCompiler, publish_activate, toy_doc, wait_for
from worker.heartbeat import Heartbeat
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.prepared import EXPIRY_GRACE_S, PreparedVersions, Preparer
from worker.replica import redis_client
from worker.state import WorkerState
from worker.subscriber import Subscriber, Timing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(redis_client, namespace):
    return Store(redis_client, Keys(namespace))


@pytest.fixture
def parts(store):
    state = WorkerState("r1")
    clock = Clock()
    prepared = PreparedVersions(monotonic=clock)
    compiler = ToyCompiler()
    loader = Loader(store, state, compiler, WorkerMetrics(), take_prepared=prepared.take)
    pokes: list[int] = []
    preparer = Preparer(loader, state, prepared, on_change=lambda: pokes.append(1))
    return loader, state, prepared, preparer, compiler, clock, pokes


async def stored(store: Store, label: str, **extra) -> str:
    data, digest = toy_doc(label, **extra)
    await store.publish("qa", data, digest, author="t", message=label, node_count=1)
    return digest


def prepare_event(digest: str, rollout: str = "ro1", generation: int = 2) -> Prepare:
    return Prepare("qa", digest, rollout, generation, "ci", 1.0, timeout_s=10.0)


async def test_ack_holds_the_compiled_version_and_the_commit_swaps_it_without_recompiling(store, parts):
    loader, state, prepared, preparer, compiler, _, pokes = parts
    v1, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    v2 = await stored(store, "v2")
    reply = await preparer.prepare(prepare_event(v2))
    assert reply.ok and (reply.rollout, reply.hash, reply.generation) == ("ro1", v2, 2)
    assert pokes, "the answer is written to the status at once"
    assert state.snapshot.get("qa").hash == v1, "prepared is held, not served"
    assert compiler.compiled == ["v1", "v2"]
    outcome = await loader.apply(ReleaseChanged("qa", v2, 2, "ci", 2.0), triggered_by="event:activate")
    assert outcome.result == "loaded" and state.snapshot.get("qa").hash == v2
    assert state.snapshot.get("qa").generation == 2
    assert compiler.compiled == ["v1", "v2"], "the commit compiled nothing"
    assert prepared.take("qa", v2) is None, "taken once"


async def test_nack_reports_the_load_failure_and_holds_nothing(store, parts):
    _, state, prepared, preparer, _, _, _ = parts
    bad = await stored(store, "bad", broken=True)
    reply = await preparer.prepare(prepare_event(bad))
    assert not reply.ok and reply.reason == "invalid_document" and "unknown type" in (reply.message or "")
    assert prepared.held_hash("qa") is None
    assert prepared.status()["qa"]["ok"] is False and prepared.status()["qa"]["rollout"] == "ro1"
    missing = "ab" * 32
    assert (await preparer.prepare(prepare_event(missing, "ro2"))).reason == "missing_blob"
    assert state.health_of("qa").consecutive_failures == 0, "a NACK is not a failed load of the release"


async def test_the_served_version_is_acked_without_compiling(store, parts):
    loader, _, prepared, preparer, compiler, _, _ = parts
    v1, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    assert (await preparer.prepare(prepare_event(v1))).ok
    assert compiler.compiled == ["v1"] and prepared.held_hash("qa") is None


async def test_abort_drops_only_its_own_rollout(store, parts):
    _, _, prepared, preparer, _, _, _ = parts
    v2, v3 = await stored(store, "v2"), await stored(store, "v3")
    await preparer.prepare(prepare_event(v2, "ro1"))
    await preparer.prepare(prepare_event(v3, "ro2"))
    assert prepared.held_hash("qa") == v3, "a newer prepare supersedes the older one"
    preparer.abort(Abort("qa", "ro1", "ci", 1.0))
    assert prepared.held_hash("qa") == v3, "an abort of another rollout changes nothing"
    preparer.abort(Abort("qa", "ro2", "ci", 1.0))
    assert prepared.held_hash("qa") is None


async def test_a_prepared_version_expires_after_its_timeout(store, parts):
    loader, state, prepared, preparer, compiler, clock, _ = parts
    v2 = await stored(store, "v2")
    await preparer.prepare(prepare_event(v2))
    clock.now += 10.0 + EXPIRY_GRACE_S + 1
    assert prepared.take("qa", v2) is None
    await store.activate("qa", v2, by="t", reason="late")
    await loader.apply(await store.get_release("qa"), triggered_by="reconcile")
    assert state.snapshot.get("qa").hash == v2 and compiler.compiled == ["v2", "v2"], "loaded the normal way"
    await preparer.prepare(prepare_event(await stored(store, "v3"), "ro3"))
    clock.now += 10.0 + EXPIRY_GRACE_S + 1
    prepared.status()
    assert prepared.held_hash("qa") is None, "the status pass prunes expired versions"


async def test_the_status_carries_the_prepared_replies(store, parts):
    _, state, prepared, preparer, _, _, _ = parts
    v2 = await stored(store, "v2")
    await preparer.prepare(prepare_event(v2))
    heartbeat = Heartbeat(
        store,
        state,
        interval_s=1,
        ttl_s=5,
        subscribed=lambda: True,
        extra=lambda: {"prepared": prepared.status()},
    )
    status = heartbeat.status()
    assert status["prepared"]["qa"]["hash"] == v2 and status["prepared"]["qa"]["ok"] is True
    assert "flows" in status and status["id"] == "r1"


async def test_a_second_prepare_of_the_same_version_reuses_it_for_the_new_rollout(store, parts):
    _, _, prepared, preparer, compiler, _, _ = parts
    v2 = await stored(store, "v2")
    await preparer.prepare(prepare_event(v2, "ro1"))
    assert (await preparer.prepare(prepare_event(v2, "ro2"))).ok
    assert compiler.compiled == ["v2"], "compiled once"
    preparer.abort(Abort("qa", "ro1", "ci", 1.0))
    assert prepared.held_hash("qa") == v2, "now held for ro2"
    preparer.abort(Abort("qa", "ro2", "ci", 1.0))
    assert prepared.held_hash("qa") is None


async def test_the_subscriber_hands_prepare_and_abort_events_to_the_preparer(
    store, parts, redis_server, namespace
):
    loader, state, prepared, preparer, _, _, _ = parts
    v2 = await stored(store, "v2")
    sub_redis = redis_client(redis_server.url, retries=0)
    timing = Timing(reconcile_s=60.0, watchdog_s=30.0, ping_s=10.0)
    sub = Subscriber(
        sub_redis, store.keys.channel(), store, loader, state, WorkerMetrics(), timing, preparer=preparer
    )
    task = asyncio.create_task(sub.run())
    try:
        await wait_for(lambda: sub.connected.is_set(), what="subscribed")
        channel = store.keys.channel()
        await store.redis.publish(channel, encode(Prepare("bad name!", v2, "ro0", 2, "ci", 1.0)))
        await store.redis.publish(channel, encode(prepare_event(v2)))
        await wait_for(lambda: prepared.held_hash("qa") == v2, what="prepared")
        assert list(prepared.replies) == ["qa"], "an event for an invalid flow name is dropped"
        await store.redis.publish(channel, encode(Abort("qa", "ro1", "ci", 2.0)))
        await wait_for(lambda: prepared.held_hash("qa") is None, what="dropped")
    finally:
        sub.stop()
        await asyncio.wait_for(task, timeout=10)
        await sub_redis.aclose()


async def test_a_version_the_replica_holds_in_its_cache_is_prepared_without_compiling(store, parts):
    loader, state, prepared, preparer, compiler, _, _ = parts
    v1, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    await publish_activate(store, "qa", "v2")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    assert compiler.compiled == ["v1", "v2"]
    # Rolling back to v1: still compiled here (kept for pinned sessions), so nothing is fetched either.
    await store.redis.delete(store.keys.blob("qa", v1))
    reply = await preparer.prepare(prepare_event(v1, generation=3))
    assert reply.ok and prepared.held_hash("qa") == v1
    assert compiler.compiled == ["v1", "v2"], "prepare compiled nothing"
    await store.redis.hset(store.keys.release("qa"), mapping={"hash": v1, "generation": 3})
    outcome = await loader.apply(await store.get_release("qa"), triggered_by="event:rollback", forced=True)
    assert outcome.result == "loaded" and state.snapshot.get("qa").hash == v1
    assert compiler.compiled == ["v1", "v2"]


async def test_a_prepare_that_carries_the_bytes_is_prepared_without_a_fetch(store, parts, caplog):
    loader, state, prepared, preparer, compiler, _, _ = parts
    await publish_activate(store, "qa", "v1")
    v2 = await stored(store, "v2")
    data, _ = toy_doc("v2")
    fetched: list[str] = []
    get_blob = store.get_blob

    async def recording(flow: str, digest: str) -> bytes | None:
        fetched.append(digest)
        return await get_blob(flow, digest)

    store.get_blob = recording
    carried = Carried(None, v2, data)
    reply = await preparer.prepare(replace(prepare_event(v2), carried=carried))
    assert reply.ok and fetched == [] and prepared.held_hash("qa") == v2 and len(loader.offered) == 0
    # Bytes that do not hash to the version are dropped and the stored ones fetched instead.
    v3 = await stored(store, "v3")
    forged, _ = toy_doc("forged")
    reply = await preparer.prepare(replace(prepare_event(v3, "ro2"), carried=Carried(None, v3, forged)))
    assert reply.ok and fetched == [v3] and compiler.compiled[-1] == "v3"
    assert "do not hash to" in caplog.text
