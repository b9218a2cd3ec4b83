"""Two-phase rollouts one at a time, and what a rollout leaves when its control plane dies, against a real
redis-server with scripted replicas that answer prepares in their status (real workers: tests/chaos/).

- a second activate / rollback / canary change of a flow while a rollout prepares is 409
  `rollout_in_progress`, and the first one commits on its healthy replicas;
- a version gc removed before the prepare is a 409 `version_removed`, and no replica hears of it;
- the `forced` mark survives a lost final record write; a record left `preparing` expires as aborted;
- the wait follows the replicas' answers without reading every status at every poll; a replica restarted
  during the prepare is not waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store import rollouts
from cluster.store.events import Abort, Prepare, decode
from cluster.store.keys import Keys
from cluster.store.replication import RedisUnreplicated, ReplicaWait
from cluster.store.store import Store
from control.http.api import create_app
from control.metrics import ControlMetrics
from control.rollout.cutover import CutoverRelease, CutoverRequest
from control.rollout.guard import RollbackGuard
from control.rollout.twophase import RolloutAborted, TwoPhaseCutover
from control.service import ControlService
from tests.control_support import ADMIN_TOKEN, DEPLOYER_TOKEN, bearer, flow_doc, write_tokens_file
from tests.redis_server import RedisServer
from tests.worker_support import wait_for

FLOW = "support_qa"


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


async def stored(store: Store, template: str) -> str:
    data, digest = content_address(flow_doc(template))
    await store.publish(FLOW, data, digest, author="t", message="", node_count=2)
    return digest


@pytest.fixture
async def versions(store: Store) -> tuple[str, str, str]:
    v1, v2, v3 = [await stored(store, f"v{n} {{input}}") for n in (1, 2, 3)]
    await store.activate(FLOW, v1, by="t", reason="first")
    return v1, v2, v3


class Scripted:
    """A replica that subscribes like a worker and answers each prepare in its status: "ok", "nack",
    "silent", or "ok" once `gate` is set. `restart()` rewrites its status as a new process would."""

    def __init__(self, store: Store, rid: str, answer: str, gate: asyncio.Event | None) -> None:
        self.store, self.rid, self.answer, self.gate = store, rid, answer, gate
        self.status: dict[str, Any] = {
            "state": "serving", "subscribed": True, "started_at": 1.0, "flows": {}, "prepared": {},
        }  # fmt: skip
        self.seen: list[Any] = []

    async def write(self) -> None:
        await self.store.write_replica_status(self.rid, self.status, 30)

    async def restart(self) -> None:
        self.status = {**self.status, "started_at": 2.0, "prepared": {}}
        self.answer = "silent"
        await self.write()

    async def on_prepare(self, event: Prepare) -> None:
        if self.answer == "silent":
            return
        if self.gate is not None:
            await self.gate.wait()
        reply: dict[str, Any] = {"rollout": event.rollout, "hash": event.hash, "ok": self.answer != "nack"}
        if self.answer == "nack":
            reply |= {"reason": "invalid_document", "message": "unknown component 'TestHold'"}
        self.status["prepared"] = {event.flow: reply}
        await self.write()


@asynccontextmanager
async def scripted(
    store: Store, url: str, rid: str, answer: str = "ok", gate: asyncio.Event | None = None
) -> AsyncIterator[Scripted]:
    replica = Scripted(store, rid, answer, gate)
    await replica.write()
    client = aioredis.Redis.from_url(url)
    pubsub: Any = client.pubsub()
    await pubsub.subscribe(store.keys.channel())
    while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
        pass

    async def listen() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            event = decode(message["data"]) if message else None
            if event is not None:
                replica.seen.append(event)
                if isinstance(event, Prepare):
                    asyncio.create_task(replica.on_prepare(event))

    task = asyncio.create_task(listen())
    try:
        yield replica
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()
        await client.aclose()
        await store.redis.delete(store.keys.replica(rid))


def prepares(replica: Scripted) -> list[Prepare]:
    return [e for e in replica.seen if isinstance(e, Prepare)]


@pytest.fixture
async def http(
    redis_server: RedisServer, namespace: str, tmp_path: Path, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        redis_url=redis_server.url, namespace=namespace, admin_token=ADMIN_TOKEN,
        tokens_file=str(write_tokens_file(tmp_path)), prepare_timeout_s=10, guard_interval_s=0,
        canary_guard_s=0,
    )  # fmt: skip
    app = create_app(settings, redis=redis_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as client:
            client.headers.update(bearer(DEPLOYER_TOKEN))
            yield client


async def test_a_second_change_while_a_rollout_prepares_is_409_and_the_first_commits(
    http: httpx.AsyncClient, store: Store, versions: tuple[str, str, str], redis_server: RedisServer
) -> None:
    v1, v2, v3 = versions
    gate = asyncio.Event()
    async with AsyncExitStack() as stack:
        slow = await stack.enter_async_context(scripted(store, redis_server.url, "a", gate=gate))
        quick = await stack.enter_async_context(scripted(store, redis_server.url, "b"))
        first = asyncio.create_task(http.post(f"/v1/flows/{FLOW}/activate", json={"hash": v2}))
        await wait_for(lambda: prepares(slow), what="the first rollout's prepare")
        url = f"/v1/flows/{FLOW}"
        attempts = {
            "two-phase activate": http.post(f"{url}/activate", json={"hash": v3}),
            "one-phase activate": http.post(f"{url}/activate", json={"hash": v3, "prepare": False}),
            "rollback": http.post(f"{url}/rollback", json={"to_hash": v1, "prepare": False}),
            "canary start": http.post(f"{url}/canary", json={"hash": v3, "percent": 10}),
        }
        for what, attempt in attempts.items():
            refused = await attempt
            assert refused.status_code == 409, (what, refused.text)
            body = refused.json()
            assert body["error"] == "rollout_in_progress", (what, body)
            assert (body["details"]["hash"], body["details"]["by"]) == (v2, "ci"), what
        gate.set()
        committed = await asyncio.wait_for(first, 10)
    assert committed.status_code == 200, committed.text
    rollout = committed.json()["rollout"]
    assert (rollout["ready"], rollout["failures"]) == (["a", "b"], [])
    assert len(prepares(slow)) == len(prepares(quick)) == 1, "only the first rollout was ever prepared"
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.generation) == (v2, 2)


async def test_a_version_removed_before_the_prepare_is_409_and_no_replica_hears_of_it(
    store: Store, versions: tuple[str, str, str], redis_server: RedisServer
) -> None:
    _, v2, _ = versions
    metrics = ControlMetrics()
    async with scripted(store, redis_server.url, "a") as replica:
        removed = await store.gc(by="admin")  # v2 and v3 were never released
        assert v2 in removed.removed[FLOW]
        with pytest.raises(rollouts.VersionRemoved) as caught:
            await TwoPhaseCutover(store, metrics, timeout_s=5)(CutoverRequest(FLOW, v2, "ci", "go"))
    assert (caught.value.http_status, caught.value.code) == (409, "version_removed")
    assert prepares(replica) == [] and metrics.registry.get_sample_value(
        "flowfleet_control_rollout_nacks_total", {"reason": "missing_blob"}
    ) is None  # fmt: skip
    assert (await store.get_release(FLOW)).generation == 1  # type: ignore[union-attr]


async def test_a_commit_whose_final_record_write_is_lost_keeps_its_forced_mark(
    store: Store, versions: tuple[str, str, str], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, v2, _ = versions
    write_record = rollouts.write_record

    async def dies_after_the_commit(redis: Any, keys: Keys, flow: str, record: Any) -> None:
        if record.get("state") in ("committed", "forced"):
            raise RedisConnectionError("control plane gone")  # its last write never happens
        await write_record(redis, keys, flow, record)

    monkeypatch.setattr(rollouts, "write_record", dies_after_the_commit)
    metrics = ControlMetrics()
    cutover = TwoPhaseCutover(store, metrics, timeout_s=5)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(scripted(store, redis_server.url, "a"))
        await stack.enter_async_context(scripted(store, redis_server.url, "b", "nack"))
        with pytest.raises(RedisConnectionError):
            await cutover(CutoverRequest(FLOW, v2, "ci", "accepting b", force=True))
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.generation) == (v2, 2)
    record = await rollouts.read_record(store.redis, store.keys, FLOW)
    assert record is not None and (record["state"], record["forced"], record["generation"]) == (
        "committing", True, 2,
    )  # fmt: skip
    # b keeps failing v2, as the operator accepted: the guard leaves the forced release alone.
    error = {"hash": v2, "generation": 2, "reason": "invalid_document", "message": "no TestHold"}
    entry = {"hash": None, "generation": None, "last_error": error, "consecutive_failures": 5}
    await store.write_replica_status("b", {"state": "serving", "flows": {FLOW: entry}}, 30)
    service = ControlService(store, metrics=metrics, cutover=cutover)
    guard = RollbackGuard(service, interval_s=1, max_failures=3, max_replicas=1)
    assert await guard.check() == []
    assert (await store.get_release(FLOW)).generation == 2  # type: ignore[union-attr]


async def test_a_rollout_left_preparing_expires_as_aborted_and_frees_the_flow(
    store: Store, versions: tuple[str, str, str], redis_server: RedisServer
) -> None:
    _, v2, v3 = versions
    clock = [1000.0]
    # What a control plane that died right after its prepare leaves: the record, and nobody to end it.
    left = {"id": "dead0001", "flow": FLOW, "hash": v2, "action": "activate", "by": "ci",
            "state": "preparing", "replicas": ["a"], "timeout_s": 3, "started_at": clock[0]}  # fmt: skip
    await rollouts.begin(store.redis, store.keys, FLOW, v2, left, now=clock[0])
    metrics = ControlMetrics()
    late = Store(store.redis, store.keys, clock=lambda: clock[0])
    cutover = TwoPhaseCutover(late, metrics, timeout_s=5, clock=lambda: clock[0])
    service = ControlService(late, metrics=metrics, cutover=cutover)
    guard = RollbackGuard(service, interval_s=1, max_failures=3, max_replicas=0)
    async with scripted(store, redis_server.url, "a") as replica:
        with pytest.raises(rollouts.RolloutInProgress):
            await cutover(CutoverRequest(FLOW, v3, "ops", "next"))
        await guard.check()
        assert (await rollouts.read_record(store.redis, store.keys, FLOW))["state"] == "preparing"  # type: ignore[index]
        clock[0] += 3 + rollouts.STALE_GRACE_S  # the timeout, and the grace, have passed
        assert (await service.rollout_status(FLOW))["rollout"]["state"] == "aborted"  # reads see it at once
        await guard.check()
        await wait_for(lambda: any(isinstance(e, Abort) for e in replica.seen), what="the abort event")
        record = await rollouts.read_record(store.redis, store.keys, FLOW)
        assert record is not None and (record["state"], record["expired"]) == ("aborted", True)
        entry = (await store.audit(FLOW, 1))[0]
        assert entry["action"] == "rollout_aborted" and entry["rollout"] == "dead0001"
        [abort] = [e for e in replica.seen if isinstance(e, Abort)]
        assert abort.rollout == "dead0001"
        released = await cutover(CutoverRequest(FLOW, v3, "ops", "next"))
    assert released.hash == v3 and released.generation == 2


async def test_the_wait_reads_a_status_only_when_its_replica_wrote_it(
    make_redis_server: Callable[..., RedisServer], namespace: str
) -> None:
    server = make_redis_server()
    client = aioredis.Redis.from_url(server.url)
    store = Store(client, Keys(namespace))
    _, v2, _ = [await stored(store, f"v{n} {{input}}") for n in (1, 2, 3)]
    async with AsyncExitStack() as stack:
        for rid in ("a", "b", "c", "d", "e"):
            await stack.enter_async_context(scripted(store, server.url, rid))
        await stack.enter_async_context(scripted(store, server.url, "hung", "silent"))
        before = await get_calls(client)
        with pytest.raises(RolloutAborted) as caught:
            await TwoPhaseCutover(store, ControlMetrics(), timeout_s=1.0)(
                CutoverRequest(FLOW, v2, "ci", "go")
            )
        reads = await get_calls(client) - before
    await client.aclose()
    assert [f.replica for f in caught.value.failures] == ["hung"]
    # 6 replicas: one read each to pick them, then one per answer. Reading every status every 10 ms for
    # the second it waits for "hung" would be ~600.
    assert reads <= 20, reads
    assert Settings().prepare_timeout_s > Settings().status_ttl_s, "a dead replica expires before the timeout"


async def get_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_a_replica_restarted_during_the_prepare_is_not_waited_for(
    store: Store, versions: tuple[str, str, str], redis_server: RedisServer
) -> None:
    _, v2, _ = versions
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(scripted(store, redis_server.url, "a"))
        bounced = await stack.enter_async_context(scripted(store, redis_server.url, "b", "silent"))
        task = asyncio.create_task(TwoPhaseCutover(store, ControlMetrics(), timeout_s=10)(
            CutoverRequest(FLOW, v2, "ci", "go")
        ))  # fmt: skip
        await wait_for(lambda: prepares(bounced), what="the prepare")
        await bounced.restart()  # same id, a new process: it never heard this prepare
        release = await asyncio.wait_for(task, 5)
    assert isinstance(release, CutoverRelease) and release.rollout is not None
    assert (release.rollout["ready"], release.rollout["gone"]) == (["a"], ["b"])
    assert release.generation == 2


async def test_a_commit_too_few_redis_replicas_acknowledged_is_committed_not_aborted(
    redis_client: aioredis.Redis, namespace: str, redis_server: RedisServer
) -> None:
    # One Redis node, yet one replica must acknowledge: WAIT times out after the release record moved.
    store = Store(redis_client, Keys(namespace), replica_wait=ReplicaWait(1, 50))
    v1 = await stored(store, "v1 {input}")
    v2 = await stored(store, "v2 {input}")
    await Store(redis_client, Keys(namespace)).activate(FLOW, v1, by="t", reason="first")
    async with scripted(store, redis_server.url, "web-1") as replica:
        cutover = TwoPhaseCutover(store, ControlMetrics(), timeout_s=5)
        with pytest.raises(RedisUnreplicated):
            await cutover(CutoverRequest(FLOW, v2, "ci", "go"))
        assert (await store.get_release(FLOW)).hash == v2  # type: ignore[union-attr]
        record = await rollouts.read_record(store.redis, store.keys, FLOW)
        assert record is not None and record["state"] == "committed" and record["unreplicated"] is True
        assert not [e for e in replica.seen if isinstance(e, Abort)], "a commit that happened is not aborted"
