"""Replica status: the pure document, and the heartbeat writing it to a real Redis with a TTL."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.worker_support import wait_for
from worker.heartbeat import Heartbeat, build_status
from worker.state import LoadedFlow, LoadError, WorkerState

H1, H2 = "1" * 64, "2" * 64


class T:
    def __init__(self, flow, digest, generation):
        self.flow, self.hash, self.generation = flow, digest, generation


def sample_state() -> WorkerState:
    state = WorkerState("replica-7")
    state.synced = True
    state.commit(LoadedFlow("qa", object(), H1, 1, 50.0))  # type: ignore[arg-type]
    state.note_target(T("qa", H2, 2))
    state.record_failure(LoadError("qa", H2, 2, "hash_mismatch", "bytes hash to 0000", 60.0), now=0.0)
    return state


def test_status_document_names_versions_errors_and_identity():
    status = build_status(sample_state(), started_at=10.0, subscribed=True, now=70.0, host="h", pid=42)
    assert status["id"] == "replica-7" and status["host"] == "h" and status["pid"] == 42
    assert status["started_at"] == 10.0 and status["heartbeat_at"] == 70.0
    assert status["ready"] is True and status["subscribed"] is True and status["state"] == "serving"
    qa = status["flows"]["qa"]
    assert (qa["hash"], qa["generation"], qa["loaded_at"]) == (H1, 1, 50.0)
    assert qa["last_error"]["reason"] == "hash_mismatch" and qa["consecutive_failures"] == 1
    assert status["last_error"] == {"flow": "qa", **qa["last_error"]}
    assert status["consecutive_failures"] == 1
    orjson.dumps(status)  # must be plain JSON


def test_healthy_status_has_no_error():
    state = WorkerState("r")
    status = build_status(state, started_at=1.0, subscribed=False, now=2.0)
    assert status["last_error"] is None and status["consecutive_failures"] == 0
    assert status["ready"] is False and status["flows"] == {}


async def test_heartbeat_writes_status_with_a_ttl_and_the_fleet_sees_it(redis_client, namespace):
    keys = Keys(namespace)
    store = Store(redis_client, keys)
    beat = Heartbeat(store, sample_state(), interval_s=0.05, ttl_s=5.0, subscribed=lambda: True)
    assert await beat.beat()
    ttl = await redis_client.pttl(keys.replica("replica-7"))
    assert 0 < ttl <= 5000
    [status] = await store.read_fleet()
    assert status["id"] == "replica-7" and status["flows"]["qa"]["hash"] == H1


async def test_heartbeat_ttl_is_at_least_two_beats(redis_client, namespace):
    beat = Heartbeat(
        Store(redis_client, Keys(namespace)),
        WorkerState("r"),
        interval_s=4.0,
        ttl_s=1.0,
        subscribed=lambda: True,
    )
    assert beat.ttl_s == 8.0


async def test_heartbeat_survives_redis_outage_and_resumes(make_redis_server, namespace):
    server = make_redis_server()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=1)
    beat = Heartbeat(
        Store(client, Keys(namespace)),
        WorkerState("r-out"),
        interval_s=0.05,
        ttl_s=5.0,
        subscribed=lambda: False,
    )
    import asyncio

    task = asyncio.create_task(beat.run())
    try:
        await wait_for(lambda: beat.beats >= 1, what="first beat")
        server.kill()
        failures_seen = beat.beats
        await wait_for(lambda: beat._failing, what="failure noticed")
        server.start()
        await wait_for(lambda: beat.beats > failures_seen and not beat._failing, timeout=15, what="resumed")
        assert await client.exists(Keys(namespace).replica("r-out"))
    finally:
        beat.stop()
        await asyncio.wait_for(task, timeout=5)
        await client.aclose()


async def test_poke_writes_the_status_without_waiting_for_the_next_beat(redis_client, namespace):
    import asyncio

    keys = Keys(namespace)
    state = WorkerState("r-poke")
    beat = Heartbeat(Store(redis_client, keys), state, interval_s=3600.0, ttl_s=5.0, subscribed=lambda: True)
    task = asyncio.create_task(beat.run())
    try:
        await wait_for(lambda: beat.beats == 1, what="first beat")
        state.commit(LoadedFlow("qa", object(), H1, 1, 50.0))  # type: ignore[arg-type]
        beat.poke()
        await wait_for(lambda: beat.beats == 2, timeout=5, what="poked beat")
        status = orjson.loads(await redis_client.get(keys.replica("r-poke")))
        assert status["flows"]["qa"]["hash"] == H1
    finally:
        beat.stop()
        await asyncio.wait_for(task, timeout=5)


async def test_swaps_reported_soon_are_one_write_after_the_delay(redis_client, namespace):
    import asyncio

    keys = Keys(namespace)
    state = WorkerState("r-soon")
    beat = Heartbeat(Store(redis_client, keys), state, interval_s=3600.0, ttl_s=5.0, subscribed=lambda: True)
    task = asyncio.create_task(beat.run())
    try:
        await wait_for(lambda: beat.beats == 1, what="first beat")
        loop = asyncio.get_running_loop()
        poked = loop.time()
        for generation in (1, 2, 3):
            state.commit(LoadedFlow("qa", object(), H1, generation, 50.0))  # type: ignore[arg-type]
            beat.poke_soon(0.05)
        await wait_for(lambda: beat.beats == 2, timeout=5, what="the delayed beat")
        assert loop.time() - poked >= 0.05
        status = orjson.loads(await redis_client.get(keys.replica("r-soon")))
        assert status["flows"]["qa"]["generation"] == 3
    finally:
        beat.stop()
        await asyncio.wait_for(task, timeout=5)
