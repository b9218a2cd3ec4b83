"""The loader against a real redis-server and the real Store: verify first, swap last, never hot-loop."""

from __future__ import annotations

import threading

import pytest

from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.redis_server import RedisServer
from tests.worker_support import ToyCompiler, publish_activate, toy_doc
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.state import WorkerState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(namespace):
    return Keys(namespace)


@pytest.fixture
def store(redis_client, keys):
    return Store(redis_client, keys)


@pytest.fixture
def parts(store):
    state = WorkerState("r1")
    metrics = WorkerMetrics()
    compiler = ToyCompiler()
    clock = Clock()
    loader = Loader(store, state, compiler, metrics, monotonic=clock)
    return loader, state, metrics, compiler, clock


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_loads_the_release_and_reports_it(store, parts):
    loader, state, metrics, compiler, _ = parts
    digest, gen = await publish_activate(store, "qa", "v1")
    outcome = await loader.apply(await store.get_release("qa"), triggered_by="test")
    assert outcome.result == "loaded" and outcome.old_hash is None and outcome.new_hash == digest
    current = state.snapshot.get("qa")
    assert current.hash == digest and current.generation == gen
    assert compiler.compiled == ["v1"]
    assert sample(metrics, "flowfleet_workflow_reload_total", flow="qa", result="loaded") == 1
    assert sample(metrics, "flowfleet_workflow_version_info", flow="qa", hash=digest, generation="1") == 1
    assert sample(metrics, "flowfleet_reload_duration_seconds_count", flow="qa") == 1


async def test_a_new_version_replaces_the_old_one_in_metrics_too(store, parts):
    loader, state, metrics, _, _ = parts
    d1, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    d2, _ = await publish_activate(store, "qa", "v2")
    outcome = await loader.apply(await store.get_release("qa"), triggered_by="test")
    assert (outcome.old_hash, outcome.new_hash) == (d1, d2)
    assert (
        metrics.registry.get_sample_value(
            "flowfleet_workflow_version_info", {"flow": "qa", "hash": d1, "generation": "1"}
        )
        is None
    )
    assert sample(metrics, "flowfleet_workflow_version_info", flow="qa", hash=d2, generation="2") == 1


async def test_generation_not_newer_is_ignored_so_duplicates_and_reordering_are_harmless(store, parts):
    loader, state, _, compiler, _ = parts
    await publish_activate(store, "qa", "v1")
    first = await store.get_release("qa")
    await publish_activate(store, "qa", "v2")
    second = await store.get_release("qa")
    assert (await loader.apply(second, triggered_by="event")).result == "loaded"
    assert (await loader.apply(second, triggered_by="event")).result == "ignored"
    assert (await loader.apply(first, triggered_by="event")).result == "ignored"
    assert state.snapshot.get("qa").generation == 2
    assert compiler.compiled == ["v2"]


async def test_reactivating_the_loaded_hash_moves_the_generation_without_recompiling(store, parts):
    loader, state, _, compiler, _ = parts
    digest, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    await store.activate("qa", digest, by="test", reason="again")
    outcome = await loader.apply(await store.get_release("qa"), triggered_by="test")
    assert outcome.result == "loaded"
    assert state.snapshot.get("qa").generation == 2
    assert compiler.compiled == ["v1"]


async def test_corrupt_blob_is_refused_before_parsing_and_the_old_version_keeps_serving(
    store, parts, redis_client, keys
):
    loader, state, metrics, compiler, _ = parts
    d1, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    d2, _ = await publish_activate(store, "qa", "v2")
    await redis_client.set(keys.blob("qa", d2), b'{"label":"evil"}')
    outcome = await loader.apply(await store.get_release("qa"), triggered_by="event", forced=True)
    assert outcome.result == "failed" and outcome.error.reason == "hash_mismatch"
    assert state.snapshot.get("qa").hash == d1
    assert compiler.compiled == ["v1"], "corrupt bytes must never reach the compiler"
    assert sample(metrics, "flowfleet_reload_errors_total", flow="qa", reason="hash_mismatch") == 1
    assert sample(metrics, "flowfleet_workflow_reload_total", flow="qa", result="failed") == 1
    health = state.health_of("qa")
    assert health.consecutive_failures == 1 and health.last_error.hash == d2


async def test_invalid_document_with_a_matching_hash_is_refused(store, parts, redis_client, keys):
    loader, state, metrics, _, _ = parts
    d1, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    # Written straight into Redis, bypassing validation: the bytes do hash to their key.
    data, bad = toy_doc("v2", broken=True)
    await redis_client.set(keys.blob("qa", bad), data)
    await redis_client.hset(keys.release("qa"), mapping={"hash": bad, "generation": 2})
    outcome = await loader.apply(await store.get_release("qa"), triggered_by="reconcile")
    assert outcome.result == "failed" and outcome.error.reason == "invalid_document"
    assert "unknown type" in outcome.error.message
    assert state.snapshot.get("qa").hash == d1
    assert sample(metrics, "flowfleet_reload_errors_total", flow="qa", reason="invalid_document") == 1


async def test_missing_blob_and_compile_crash_are_failures_not_exceptions(store, parts, redis_client, keys):
    loader, state, metrics, _, _ = parts
    await redis_client.hset(keys.release("gone"), mapping={"hash": "a" * 64, "generation": 1})
    outcome = await loader.apply(await store.get_release("gone"), triggered_by="reconcile")
    assert outcome.error.reason == "missing_blob"
    data, digest = toy_doc("boom", explode=True)
    await store.publish("boom", data, digest, author="t", message="m", node_count=1)
    await store.activate("boom", digest, by="t", reason="r")
    outcome = await loader.apply(await store.get_release("boom"), triggered_by="reconcile")
    assert outcome.error.reason == "compile_error" and "blew up" in outcome.error.message
    assert state.snapshot.get("boom") is None


async def test_failed_version_backs_off_and_is_not_retried_in_a_hot_loop(store, parts, redis_client, keys):
    loader, state, metrics, compiler, clock = parts
    data, bad = toy_doc("v1", broken=True)
    await redis_client.set(keys.blob("qa", bad), data)
    await redis_client.hset(keys.release("qa"), mapping={"hash": bad, "generation": 1})
    release = await store.get_release("qa")
    assert (await loader.apply(release, triggered_by="reconcile")).result == "failed"
    for _ in range(50):  # fifty reconcile passes inside the backoff window
        assert (await loader.apply(release, triggered_by="reconcile")).result == "skipped"
    assert sample(metrics, "flowfleet_reload_errors_total", flow="qa", reason="invalid_document") == 1
    clock.now += 2.0
    assert (await loader.apply(release, triggered_by="reconcile")).result == "failed"
    assert state.health_of("qa").consecutive_failures == 2
    clock.now += 2.0  # the second backoff is 4 s
    assert (await loader.apply(release, triggered_by="reconcile")).result == "skipped"
    # The operator repairs the blob and re-activates the same hash: the event retries at once.
    await redis_client.hset(keys.release("qa"), mapping={"generation": 2})
    await redis_client.set(keys.blob("qa", bad), data)
    repaired_doc = await store.get_release("qa")
    assert (await loader.apply(repaired_doc, triggered_by="event", forced=True)).result == "failed"
    assert state.health_of("qa").consecutive_failures == 3


async def test_a_success_clears_the_failure_bookkeeping(store, parts, redis_client, keys):
    loader, state, _, _, _ = parts
    data, bad = toy_doc("v1", broken=True)
    await redis_client.set(keys.blob("qa", bad), data)
    await redis_client.hset(keys.release("qa"), mapping={"hash": bad, "generation": 1})
    await loader.apply(await store.get_release("qa"), triggered_by="reconcile")
    await publish_activate(store, "qa", "v2")
    assert (await loader.apply(await store.get_release("qa"), triggered_by="event")).result == "loaded"
    assert state.health_of("qa").last_error is None
    assert state.health_of("qa").consecutive_failures == 0


async def test_redis_down_is_a_redis_error_and_keeps_serving(make_redis_server, namespace):
    import redis.asyncio as aioredis

    server: RedisServer = make_redis_server()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=1)
    store = Store(client, Keys(namespace))
    state, metrics = WorkerState("r1"), WorkerMetrics()
    loader = Loader(store, state, ToyCompiler(), metrics)
    d1, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    await publish_activate(store, "qa", "v2")
    release = await store.get_release("qa")
    server.kill()
    try:
        outcome = await loader.apply(release, triggered_by="event")
        assert outcome.error.reason == "redis_error"
        assert state.snapshot.get("qa").hash == d1
    finally:
        await client.aclose()


async def test_large_documents_compile_in_a_thread(store):
    state, compiler = WorkerState("r1"), ToyCompiler()
    loader = Loader(store, state, compiler, WorkerMetrics(), thread_compile_bytes=0)
    await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    assert compiler.threads and compiler.threads[0] != threading.get_ident()


async def test_prepare_then_commit_is_the_two_phase_path(store, parts):
    loader, state, _, _, _ = parts
    d1, _ = await publish_activate(store, "qa", "v1")
    prepared = await loader.prepare(await store.get_release("qa"))
    assert state.snapshot.get("qa") is None, "prepared is held, not served"
    assert loader.commit(prepared)
    assert state.snapshot.get("qa").hash == d1
    assert not loader.commit(prepared), "committing the same generation again is refused"


async def test_a_release_record_that_went_backwards_wins_once_confirmed(store, parts, redis_client, keys):
    """A reset or restored Redis restarts generations; reconcile follows the record, events do not."""
    loader, state, _, _, _ = parts
    await publish_activate(store, "qa", "v1")
    await publish_activate(store, "qa", "v2")
    await publish_activate(store, "qa", "v3")
    await loader.apply(await store.get_release("qa"), triggered_by="test")
    assert state.snapshot.get("qa").generation == 3
    data, digest = toy_doc("after-reset")
    await store.publish("qa", data, digest, author="t", message="m", node_count=1)
    await redis_client.hset(keys.release("qa"), mapping={"hash": digest, "generation": 1})
    record = await store.get_release("qa")
    assert (await loader.apply(record, triggered_by="event", forced=True)).result == "ignored"
    outcome = await loader.apply(record, triggered_by="reconcile", authoritative=True)
    assert outcome.result == "loaded"
    assert (state.snapshot.get("qa").hash, state.snapshot.get("qa").generation) == (digest, 1)


async def test_a_stale_reconcile_read_never_moves_a_replica_backwards(store, parts):
    loader, state, _, _, _ = parts
    await publish_activate(store, "qa", "v1")
    stale = await store.get_release("qa")
    d2, _ = await publish_activate(store, "qa", "v2")
    await loader.apply(await store.get_release("qa"), triggered_by="event")
    outcome = await loader.apply(stale, triggered_by="reconcile", authoritative=True)
    assert outcome.result == "ignored"
    assert state.snapshot.get("qa").hash == d2


async def test_a_burst_of_events_compiles_only_the_newest(store, parts):
    import asyncio

    loader, state, _, compiler, _ = parts
    releases = []
    for label in ("v1", "v2", "v3"):
        await publish_activate(store, "qa", label)
        releases.append(await store.get_release("qa"))
    outcomes = await asyncio.gather(*(loader.apply(r, triggered_by="event", forced=True) for r in releases))
    # v1 was already being fetched when v2 and v3 arrived; v2 waited behind it and was superseded.
    assert [o.result for o in outcomes] == ["loaded", "ignored", "loaded"]
    assert compiler.compiled == ["v1", "v3"]
    assert state.snapshot.get("qa").generation == 3


async def test_one_structured_log_line_per_reload(store, parts, redis_client, keys, caplog):
    import logging

    loader, _, _, _, _ = parts
    caplog.set_level(logging.INFO, logger="worker.loader")
    d1, _ = await publish_activate(store, "qa", "v1")
    await loader.apply(await store.get_release("qa"), triggered_by="subscribe")
    d2, _ = await publish_activate(store, "qa", "v2")
    await redis_client.set(keys.blob("qa", d2), b"tampered")
    await loader.apply(await store.get_release("qa"), triggered_by="event:activate", forced=True)
    lines = [r for r in caplog.records if r.name == "worker.loader"]
    assert len(lines) == 2
    ok, bad = lines
    assert ok.getMessage() == (
        f"reload flow=qa old_hash=- new_hash={d1} generation=1 triggered_by=subscribe "
        f"duration_ms={ok.reload['duration_ms']} result=loaded replica=r1"
    )
    assert bad.levelname == "WARNING"
    assert f"old_hash={d1} new_hash={d2} generation=2 triggered_by=event:activate" in bad.getMessage()
    assert "result=failed" in bad.getMessage() and "reason=hash_mismatch" in bad.getMessage()
    assert 'error="stored bytes of ' in bad.getMessage()
    assert bad.reload["consecutive_failures"] == 1 and bad.reload["retry_in_s"] == 2.0
