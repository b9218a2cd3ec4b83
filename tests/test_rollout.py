"""TwoPhaseCutover against a real redis-server, with scripted replicas that answer prepares in their status.

Each scripted replica subscribes to the channel like a worker and, on a `prepare`, writes its status
with the answer it was given (ready, a NACK, or nothing at all). The real workers are exercised in
tests/e2e/test_rollout_fleet.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.errors import GenerationConflict
from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store import rollouts
from cluster.store.events import CARRY_MAX_BYTES, Abort, Prepare, decode
from cluster.store.keys import Keys
from cluster.store.store import Store
from control.http.api import create_app
from control.metrics import ControlMetrics
from control.rollout.cutover import CutoverRelease, CutoverRequest
from control.rollout.twophase import RolloutAborted, TwoPhaseCutover
from tests.control_support import ADMIN_TOKEN, DEPLOYER_TOKEN, bearer, flow_doc, write_tokens_file
from tests.redis_server import RedisServer

FLOW = "support_qa"


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


async def stored(store: Store, template: str) -> str:
    data, digest = content_address(flow_doc(template))
    await store.publish(FLOW, data, digest, author="t", message="", node_count=2)
    return digest


@pytest.fixture
async def versions(store: Store) -> tuple[str, str]:
    v1, v2 = await stored(store, "v1 {input}"), await stored(store, "v2 {input}")
    await store.activate(FLOW, v1, by="t", reason="first")
    return v1, v2


@asynccontextmanager
async def replica(
    store: Store, url: str, rid: str, answer: str, *, ttl_s: float = 30.0, state: str = "serving"
) -> AsyncIterator[list[Any]]:
    """A scripted replica: `answer` is "ok", "nack" or "silent". Yields the events it received."""
    seen: list[Any] = []
    status: dict[str, Any] = {"state": state, "flows": {}, "prepared": {}}
    await store.write_replica_status(rid, status, ttl_s)
    client = aioredis.Redis.from_url(url)
    pubsub: Any = client.pubsub()
    await pubsub.subscribe(store.keys.channel())
    while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
        pass

    async def listen() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            event = decode(message["data"]) if message else None
            if event is None:
                continue
            seen.append(event)
            if isinstance(event, Prepare) and answer != "silent":
                reply = {"rollout": event.rollout, "hash": event.hash, "ok": answer == "ok"}
                if answer == "nack":
                    reply |= {"reason": "invalid_document", "message": "unknown component 'TestHold'"}
                status["prepared"] = {event.flow: reply}
                await store.write_replica_status(rid, status, ttl_s)

    task = asyncio.create_task(listen())
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()
        await client.aclose()
        await store.redis.delete(store.keys.replica(rid))


async def fleet(stack: AsyncExitStack, store: Store, url: str, answers: dict[str, str]) -> list[list[Any]]:
    return [await stack.enter_async_context(replica(store, url, rid, a)) for rid, a in answers.items()]


def request(digest: str, **options: Any) -> CutoverRequest:
    return CutoverRequest(FLOW, digest, "ci", "go", **options)


async def test_every_replica_ready_commits(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    v1, v2 = versions
    metrics = ControlMetrics()
    async with AsyncExitStack() as stack:
        await fleet(stack, store, redis_server.url, {"a": "ok", "b": "ok"})
        release = await TwoPhaseCutover(store, metrics, timeout_s=5)(request(v2))
    assert isinstance(release, CutoverRelease) and release.generation == 2 and release.hash == v2
    assert release.rollout is not None and release.rollout["ready"] == ["a", "b"]
    assert release.rollout["failures"] == [] and release.rollout["forced"] is False
    record = await rollouts.read_record(store.redis, store.keys, FLOW)
    assert record is not None and record["state"] == "committed" and record["generation"] == 2
    assert metrics.registry.get_sample_value("flowfleet_control_rollout_ack_seconds_count") == 1
    assert metrics.registry.get_sample_value("flowfleet_control_rollouts_total", {"result": "committed"}) == 1


async def test_a_nack_aborts_with_nothing_switched(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    v1, v2 = versions
    metrics = ControlMetrics()
    async with AsyncExitStack() as stack:
        seen_a, _ = await fleet(stack, store, redis_server.url, {"a": "ok", "b": "nack"})
        with pytest.raises(RolloutAborted) as caught:
            await TwoPhaseCutover(store, metrics, timeout_s=5)(request(v2))
        await wait_for(lambda: any(isinstance(e, Abort) for e in seen_a))
    assert caught.value.details["failures"] == [
        {"replica": "b", "reason": "invalid_document", "message": "unknown component 'TestHold'"}
    ]
    assert caught.value.http_status == 409 and caught.value.exit_code == 6
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.generation) == (v1, 1)
    [prepare] = [e for e in seen_a if isinstance(e, Prepare)]
    [abort] = [e for e in seen_a if isinstance(e, Abort)]
    assert abort.rollout == prepare.rollout and prepare.generation == 2
    entry = (await store.audit(FLOW, 1))[0]
    assert entry["action"] == "rollout_aborted" and entry["failures"].startswith("b: invalid_document")
    assert metrics.registry.get_sample_value(
        "flowfleet_control_rollout_nacks_total", {"reason": "invalid_document"}
    ) == 1  # fmt: skip


async def test_a_silent_replica_times_out(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    _, v2 = versions
    async with AsyncExitStack() as stack:
        await fleet(stack, store, redis_server.url, {"a": "ok", "b": "silent"})
        with pytest.raises(RolloutAborted) as caught:
            await TwoPhaseCutover(store, ControlMetrics(), timeout_s=0.3)(request(v2))
    assert [(f.replica, f.reason) for f in caught.value.failures] == [("b", "timeout")]
    assert (await store.get_release(FLOW)).generation == 1  # type: ignore[union-attr]


async def test_force_commits_despite_nacks_and_audits_it(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    _, v2 = versions
    async with AsyncExitStack() as stack:
        await fleet(stack, store, redis_server.url, {"a": "ok", "b": "nack"})
        release = await TwoPhaseCutover(store, ControlMetrics(), timeout_s=5)(request(v2, force=True))
    assert release.generation == 2 and release.hash == v2
    assert isinstance(release, CutoverRelease) and release.rollout is not None
    assert release.rollout["forced"] is True and release.rollout["ready"] == ["a"]
    audit = await store.audit(FLOW, 2)
    assert [e["action"] for e in audit] == ["rollout_forced", "activate"]
    assert audit[0]["failures"].startswith("b: invalid_document")
    record = await rollouts.read_record(store.redis, store.keys, FLOW)
    assert record is not None and record["state"] == "forced" and record["generation"] == 2


async def test_replicas_that_expire_or_drain_are_not_waited_for(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    _, v2 = versions
    async with AsyncExitStack() as stack:
        await fleet(stack, store, redis_server.url, {"a": "ok"})
        await stack.enter_async_context(replica(store, redis_server.url, "dying", "silent", ttl_s=0.4))
        await stack.enter_async_context(replica(store, redis_server.url, "drain", "silent", state="draining"))
        release = await TwoPhaseCutover(store, ControlMetrics(), timeout_s=10)(request(v2))
    assert isinstance(release, CutoverRelease) and release.rollout is not None
    assert release.rollout["replicas"] == ["a", "dying"] and release.rollout["gone"] == ["dying"]
    assert release.generation == 2


async def test_without_live_replicas_or_with_no_prepare_it_commits_directly(
    store: Store, versions: tuple[str, str]
) -> None:
    v1, v2 = versions
    cutover = TwoPhaseCutover(store, ControlMetrics(), timeout_s=5)
    release = await cutover(request(v2))
    assert isinstance(release, CutoverRelease) and release.rollout is not None
    assert release.rollout["note"] == "no live replica: committed directly" and release.generation == 2
    again = await cutover(request(v1, prepare=False))
    assert isinstance(again, CutoverRelease) and again.rollout == {"mode": "direct"} and again.generation == 3


async def test_a_conflicting_commit_aborts_the_prepared_rollout(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    _, v2 = versions
    async with AsyncExitStack() as stack:
        [seen] = await fleet(stack, store, redis_server.url, {"a": "ok"})
        with pytest.raises(GenerationConflict):
            await TwoPhaseCutover(store, ControlMetrics(), timeout_s=5)(request(v2, expected_generation=7))
        await wait_for(lambda: any(isinstance(e, Abort) for e in seen))
    record = await rollouts.read_record(store.redis, store.keys, FLOW)
    assert record is not None and record["state"] == "aborted"


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- the HTTP API -------------------------------------------------------------------------------------
@pytest.fixture
async def http(
    redis_server: RedisServer, namespace: str, tmp_path: Path, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        redis_url=redis_server.url,
        namespace=namespace,
        admin_token=ADMIN_TOKEN,
        tokens_file=str(write_tokens_file(tmp_path)),
        prepare_timeout_s=5,
        guard_interval_s=0,
    )
    app = create_app(settings, redis=redis_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as client:
            client.headers.update(bearer(DEPLOYER_TOKEN))
            yield client


async def test_the_api_answers_409_rollout_aborted_with_each_replica(
    http: httpx.AsyncClient, store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    _, v2 = versions
    async with AsyncExitStack() as stack:
        await fleet(stack, store, redis_server.url, {"a": "ok", "b": "nack"})
        refused = await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": v2})
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["error"] == "rollout_aborted" and body["details"]["hash"] == v2
        assert [f["replica"] for f in body["details"]["failures"]] == ["b"]
        rollback = await http.post(f"/v1/flows/{FLOW}/rollback", json={"force": True})
        assert rollback.status_code == 409 and rollback.json()["error"] == "no_previous_release"
        forced = await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": v2, "force": True})
        assert forced.status_code == 200 and forced.json()["rollout"]["forced"] is True
        progress = (await http.get(f"/v1/flows/{FLOW}/rollout")).json()
    assert progress["generation"] == 2 and progress["rollout"]["state"] == "forced"
    assert progress["total"] == 2 and progress["current"] == 0 and progress["done"] is False


@pytest.mark.parametrize(
    "body",
    [{"prepare": "no"}, {"force": 1}, {"timeout_s": 0}, {"timeout_s": 301}, {"timeout_s": True}, {"wait": 1}],
)
async def test_malformed_cutover_options_are_400(
    http: httpx.AsyncClient, versions: tuple[str, str], body: dict[str, Any]
) -> None:
    reply = await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": versions[1], **body})
    assert reply.status_code == 400 and reply.json()["error"] == "bad_request", reply.text
    bad_query = await http.post(
        f"/v1/flows/{FLOW}/versions", content=json.dumps(flow_doc("x {input}")),
        params={"activate": "true", "timeout_s": "soon"},
    )  # fmt: skip
    assert bad_query.status_code == 400


async def test_a_nack_ends_the_wait_at_once_without_blaming_replicas_still_compiling(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    _, v2 = versions
    async with AsyncExitStack() as stack:
        await fleet(stack, store, redis_server.url, {"a": "nack", "b": "silent"})
        with pytest.raises(RolloutAborted) as caught:
            # A 60 s timeout that is never reached: the NACK decides.
            await asyncio.wait_for(TwoPhaseCutover(store, ControlMetrics(), timeout_s=60)(request(v2)), 10)
    assert [(f.replica, f.reason) for f in caught.value.failures] == [("a", "invalid_document")]


async def test_a_cancelled_activation_aborts_its_rollout(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    _, v2 = versions
    async with AsyncExitStack() as stack:
        [seen] = await fleet(stack, store, redis_server.url, {"a": "silent"})
        task = asyncio.create_task(TwoPhaseCutover(store, ControlMetrics(), timeout_s=60)(request(v2)))
        await wait_for(lambda: any(isinstance(e, Prepare) for e in seen))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: any(isinstance(e, Abort) for e in seen))
    record = await rollouts.read_record(store.redis, store.keys, FLOW)
    assert record is not None and record["state"] == "aborted"
    assert (await store.get_release(FLOW)).generation == 1  # type: ignore[union-attr]


async def test_the_prepare_carries_a_small_version_and_not_a_big_one(
    store: Store, versions: tuple[str, str], redis_server: RedisServer
) -> None:
    v1, v2 = versions
    small = await store.get_blob(FLOW, v2)
    assert small is not None
    async with AsyncExitStack() as stack:
        [seen] = await fleet(stack, store, redis_server.url, {"a": "ok"})
        await TwoPhaseCutover(store, ControlMetrics(), timeout_s=5)(request(v2, data=small))
        big = b"x" * (CARRY_MAX_BYTES + 1)  # only its size matters here: the event leaves it out
        await TwoPhaseCutover(store, ControlMetrics(), timeout_s=5)(request(v1, data=big))
    first, second = [e for e in seen if isinstance(e, Prepare)]
    assert first.carried is not None and (first.carried.blob_hash, first.carried.blob) == (v2, small)
    assert second.hash == v1 and second.carried is None
