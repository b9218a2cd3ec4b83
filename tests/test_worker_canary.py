"""A replica serving a canary: loading it (compiling each version once), routing runs over HTTP,
naming the variant, counting runs per version for the heartbeat, and the versions cache."""

from __future__ import annotations

from cluster.store.canary_store import CanaryWriter
from cluster.store.keys import Keys
from cluster.store.store import Store
from cluster.traffic.canary import bucket, is_canary
from tests.test_worker_app import ready, replica, worker
from tests.test_worker_subscriber import SLOW, running_subscriber
from tests.worker_support import ToyCompiler, publish_activate, toy_doc, wait_for
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.state import WorkerState
from worker.versions import MAX_IDLE_VERSIONS, VersionCache

FLOW = "qa"


async def two_versions(store: Store) -> tuple[str, str]:
    v1, _ = await publish_activate(store, FLOW, "v1")
    data, v2 = toy_doc("v2")
    await store.publish(FLOW, data, v2, author="t", message="v2", node_count=1)
    return v1, v2


async def test_canary_changes_compile_each_version_once(redis_client, namespace) -> None:
    store = Store(redis_client, Keys(namespace))
    writer = CanaryWriter(store)
    state, compiler = WorkerState("r1"), ToyCompiler()
    loader = Loader(store, state, compiler, WorkerMetrics())
    v1, v2 = await two_versions(store)

    async def follow() -> None:
        release = await store.get_release(FLOW)
        assert release is not None
        assert (await loader.apply(release, triggered_by="test")).result == "loaded"

    await follow()
    await writer.change(FLOW, "start", by="t", reason="", digest=v2, percent=10)
    await follow()
    loaded = state.snapshot.get(FLOW)
    assert loaded is not None and loaded.canary is not None
    assert (loaded.hash, loaded.canary.hash, loaded.canary.percent, loaded.generation) == (v1, v2, 10.0, 2)
    assert loaded.epoch > 0 and loaded.as_dict()["canary"] == {"hash": v2, "percent": 10.0}
    assert state.status()[FLOW]["canary"] == {"hash": v2, "percent": 10.0}
    await writer.change(FLOW, "set", by="t", reason="", percent=60)
    await follow()
    await writer.change(FLOW, "promote", by="t", reason="")
    await follow()
    promoted = state.snapshot.get(FLOW)
    assert promoted is not None and (promoted.hash, promoted.canary, promoted.epoch) == (v2, None, 0.0)
    await writer.change(FLOW, "start", by="t", reason="", digest=v1, percent=5)
    await follow()
    await writer.change(FLOW, "abort", by="t", reason="")
    await follow()
    # Five canary changes, and still only the two versions were ever compiled.
    assert compiler.compiled == ["v1", "v2"]


async def test_a_canary_that_cannot_load_keeps_the_previous_release(redis_client, namespace) -> None:
    store = Store(redis_client, Keys(namespace))
    state, compiler = WorkerState("r1"), ToyCompiler()
    loader = Loader(store, state, compiler, WorkerMetrics())
    v1, _ = await publish_activate(store, FLOW, "v1")
    data, broken = toy_doc("bad", broken=True)
    await store.publish(FLOW, data, broken, author="t", message="", node_count=1)
    await loader.apply(await store.get_release(FLOW), triggered_by="test")  # type: ignore[arg-type]
    await CanaryWriter(store).change(FLOW, "start", by="t", reason="", digest=broken, percent=10)
    outcome = await loader.apply(await store.get_release(FLOW), triggered_by="test")  # type: ignore[arg-type]
    assert outcome.result == "failed" and outcome.error is not None
    assert outcome.error.reason == "invalid_document"
    loaded = state.snapshot.get(FLOW)
    assert loaded is not None and (loaded.hash, loaded.generation, loaded.canary) == (v1, 1, None)


async def test_runs_are_routed_named_and_counted_per_version(redis_server, namespace, redis_client) -> None:
    store = Store(redis_client, Keys(namespace))
    v1, v2 = await two_versions(store)
    await CanaryWriter(store).change(FLOW, "start", by="t", reason="", digest=v2, percent=30)
    async with worker(redis_server.url, namespace) as client:
        await wait_for(lambda: ready(client), what="ready")
        await wait_for(lambda: replica(client).state.snapshot.get(FLOW).canary is not None, what="canary")
        seen = {}
        for i in range(60):
            key = f"user-{i}"
            r = await client.post(
                f"/v1/flows/{FLOW}/run", json={"inputs": {}}, headers={"X-Flowfleet-Key": key}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            expected = (v2, "canary") if is_canary(bucket(FLOW, key), 30) else (v1, "stable")
            assert (body["version"], body["variant"]) == expected
            assert (r.headers["x-flowfleet-version"], r.headers["x-flowfleet-variant"]) == expected
            assert body["outputs"]["label"] == ("v2" if expected[0] == v2 else "v1")
            seen[expected[1]] = seen.get(expected[1], 0) + 1
        # user_id in the body routes like the header.
        by_user = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {}, "user_id": "user-3"})
        by_header = await client.post(
            f"/v1/flows/{FLOW}/run", json={"inputs": {}}, headers={"X-Flowfleet-Key": "user-3"}
        )
        assert by_user.json()["version"] == by_header.json()["version"]
        bad = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {}, "session_id": "not ok!"})
        assert (bad.status_code, bad.json()["error"]) == (422, "invalid_session_id")
        bad = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {}, "user_id": ""})
        assert (bad.status_code, bad.json()["error"]) == (422, "invalid_request_key")
        pinned = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {}, "session_id": "chat-9"})
        assert pinned.json()["pinned"] is True and pinned.json()["session_id"] == "chat-9"

        status = replica(client).heartbeat.status()
        runs = status["runs"][FLOW]
        assert runs["epoch"] == replica(client).state.snapshot.get(FLOW).epoch > 0
        counted = {h: c["runs"] for h, c in runs["versions"].items()}
        assert counted[v1] + counted[v2] == 60 + 3 and counted[v2] >= seen["canary"]
        assert all(c["errors"] == 0 for c in runs["versions"].values())


def test_version_cache_evicts_idle_unserved_versions() -> None:
    now = [0.0]
    cache = VersionCache(idle_s=100.0, clock=lambda: now[0])
    cache.put("qa", "a", "A")
    cache.put("qa", "b", "B")
    cache.put("qa", "c", "C")
    now[0] = 50.0
    assert cache.get("qa", "b") == "B"  # used: its idle time starts again
    now[0] = 120.0
    assert cache.sweep({("qa", "a")}) == [("qa", "c")]
    assert cache.get("qa", "a") == "A" and cache.get("qa", "c") is None and len(cache) == 2
    now[0] = 1000.0
    assert set(cache.sweep(set())) == {("qa", "a"), ("qa", "b")} and len(cache) == 0


def test_version_cache_keeps_at_most_the_cap_of_unserved_versions() -> None:
    now = [0.0]
    cache = VersionCache(idle_s=1e9, clock=lambda: now[0])
    for i in range(MAX_IDLE_VERSIONS + 6):
        now[0] = float(i)
        cache.put("qa", f"h{i}", i)
    evicted = cache.sweep({("qa", "h0")})
    assert evicted == [("qa", f"h{i}") for i in range(1, 6)] and cache.get("qa", "h0") == 0


async def test_canary_events_are_applied_through_the_release_record(
    redis_server, namespace, redis_client
) -> None:
    """A `release` event carries no canary fields; the replica reads the record it points at, so a canary
    starts serving without waiting for a reconcile pass (60 s here)."""
    store = Store(redis_client, Keys(namespace))
    v1, v2 = await two_versions(store)
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _metrics):
        await wait_for(lambda: state.synced and state.snapshot.get(FLOW) is not None, what="first load")
        await CanaryWriter(store).change(FLOW, "start", by="t", reason="", digest=v2, percent=25)
        await wait_for(lambda: state.snapshot.get(FLOW).canary is not None, what="canary from the event")
        loaded = state.snapshot.get(FLOW)
        assert (loaded.hash, loaded.canary.hash, loaded.canary.percent) == (v1, v2, 25.0)
        await store.activate(FLOW, v1, by="t", reason="again", unpin=True)
        await wait_for(lambda: state.snapshot.get(FLOW).generation == 3, what="activation event")
        assert state.snapshot.get(FLOW).canary is None and state.snapshot.get(FLOW).unpin_generation == 3
        assert sub.reconciles == 1  # only the one after subscribing: everything else came by event


async def test_failed_runs_name_their_version_and_count_as_errors(
    redis_server, namespace, redis_client
) -> None:
    store = Store(redis_client, Keys(namespace))
    v1, _ = await publish_activate(store, FLOW, "v1")
    data, v2 = toy_doc("v2", required=["question"])
    await store.publish(FLOW, data, v2, author="t", message="v2", node_count=1)
    await CanaryWriter(store).change(FLOW, "start", by="t", reason="", digest=v2, percent=100)
    async with worker(redis_server.url, namespace) as client:
        await wait_for(lambda: ready(client), what="ready")
        await wait_for(lambda: replica(client).state.snapshot.get(FLOW).canary is not None, what="canary")
        r = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {}})
        assert (r.status_code, r.json()["error"]) == (422, "invalid_inputs")
        assert (r.headers["x-flowfleet-version"], r.headers["x-flowfleet-variant"]) == (v2, "canary")
        ok = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {"question": "q"}})
        assert ok.status_code == 200 and ok.json()["version"] == v2
        counts = replica(client).heartbeat.status()["runs"][FLOW]["versions"][v2]
        assert (counts["runs"], counts["errors"]) == (2, 1)
        assert v1 not in replica(client).heartbeat.status()["runs"][FLOW]["versions"]
