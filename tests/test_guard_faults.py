"""The rollback guard under faults: whose failure it is (a canary's, not the stable's), which failures count
(content, retried; never transient or environment ones), a pass cut short by a connection reset, and two
control planes sharing the guard through a lease.

Most tests run the guard against a real redis-server with replica statuses written by the test (as in
tests/test_guard.py); the last one runs a real control plane and real worker processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.flow.hashing import content_address
from cluster.store.canary_store import CanaryWriter
from cluster.store.keys import Keys
from cluster.store.release import Release
from cluster.store.store import Store
from control.metrics import ControlMetrics
from control.rollout.guard import RollbackGuard
from control.rollout.twophase import TwoPhaseCutover
from control.service import ControlService
from tests.control_support import DEPLOYER_TOKEN, ControlProcess, bearer, flow_doc
from tests.e2e.fleet import WorkerProcess, hold_plugin_dir, wait_all_serve, wait_ready
from tests.redis_server import RedisServer
from tests.worker_support import wait_for

FLOW = "support_qa"


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


@pytest.fixture
def service(store: Store) -> ControlService:
    metrics = ControlMetrics()
    return ControlService(store, metrics=metrics, cutover=TwoPhaseCutover(store, metrics, timeout_s=1))


def guard(service: ControlService, **kw: Any) -> RollbackGuard:
    return RollbackGuard(service, interval_s=0.05, **({"max_failures": 3, "max_replicas": 0} | kw))


async def stored(store: Store, template: str) -> str:
    data, digest = content_address(flow_doc(template))
    await store.publish(FLOW, data, digest, author="t", message="", node_count=2)
    return digest


async def report(
    store: Store, rid: str, error_hash: str, generation: int, count: int, *, reason: str = "invalid_document",
    serving: tuple[str, int] | None = None,
) -> None:  # fmt: skip
    """Write replica `rid`'s status as a worker would: serving `serving` (hash, generation), failing."""
    error = {"hash": error_hash, "generation": generation, "reason": reason, "message": f"{reason} here"}
    entry = {
        "hash": serving[0] if serving else None, "generation": serving[1] if serving else None,
        "last_error": error, "consecutive_failures": count,
    }  # fmt: skip
    await store.write_replica_status(rid, {"state": "serving", "flows": {FLOW: entry}}, 30)


async def two_releases(store: Store) -> tuple[str, str, Release]:
    v0, v1 = await stored(store, "v0 {input}"), await stored(store, "v1 {input}")
    await store.activate(FLOW, v0, by="ci", reason="zero")
    return v0, v1, await store.activate(FLOW, v1, by="ci", reason="one")


async def test_a_canary_replicas_cannot_load_is_aborted_and_the_stable_keeps_its_place(
    store: Store, service: ControlService
) -> None:
    _, v1, _ = await two_releases(store)
    canary = await stored(store, "canary {input}")
    started = await CanaryWriter(store).change(FLOW, "start", by="ci", reason="", digest=canary, percent=50)
    # The worker records a failed canary against the release it loads: stable hash, canary's generation.
    for rid in ("r1", "r2"):
        await report(store, rid, v1, started.generation, 2, serving=(v1, 2))
    [made] = await guard(service, max_failures=2, max_replicas=2).check()
    release = await store.get_release(FLOW)
    assert release == made and release is not None
    assert (release.hash, release.canary_hash, release.action) == (v1, None, "canary_abort")
    assert release.activated_by == "auto-rollback" and release.reason.startswith("canary version ")
    assert "r1 (invalid_document" in release.reason
    assert [r.action for r in await store.history(FLOW, 10)][:2] == ["canary_abort", "canary_start"]
    entry = (await store.audit(FLOW, 1))[0]
    assert (entry["action"], entry["by"]) == ("canary_abort", "auto-rollback")
    assert service.metrics.registry.get_sample_value(
        "flowfleet_control_auto_rollbacks_total", {"result": "canary_aborted"}
    ) == 1  # fmt: skip


@pytest.mark.parametrize(
    "reason", ["redis_error", "missing_blob", "timeout", "missing_secret", "missing_search_provider"]
)
async def test_transient_and_environment_failures_never_roll_back(
    store: Store, service: ControlService, reason: str
) -> None:
    _, v1, current = await two_releases(store)
    for rid in ("r1", "r2", "r3"):
        await report(store, rid, v1, current.generation, 9, reason=reason)
    assert await guard(service, max_failures=3, max_replicas=2).check() == []
    assert await store.get_release(FLOW) == current


async def test_a_failure_counts_only_once_the_replica_retried_it(
    store: Store, service: ControlService
) -> None:
    v0, v1, current = await two_releases(store)
    await report(store, "r1", v1, current.generation, 1)
    watcher = guard(service, max_failures=1, max_replicas=1)
    assert await watcher.check() == [], "one attempt is not yet a verdict on the version"
    await report(store, "r1", v1, current.generation, 2, reason="compile_error")
    [rolled] = await watcher.check()
    assert (rolled.hash, rolled.action, rolled.activated_by) == (v0, "rollback", "auto-rollback")


async def test_a_pass_cut_short_by_a_connection_reset_is_retried_next_pass(
    store: Store, service: ControlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    v0, v1, current = await two_releases(store)
    await report(store, "r1", v1, current.generation, 3)
    activate = store.activate
    resets: list[str] = []

    async def reset_once(*args: Any, **kwargs: Any) -> Release:
        if not resets:
            resets.append("reset")
            raise RedisConnectionError("Connection reset by peer")
        return await activate(*args, **kwargs)

    monkeypatch.setattr(store, "activate", reset_once)
    watcher = guard(service)
    try:
        first = await watcher.check()
    except RedisConnectionError:
        first = []  # (a pass that lets the reset escape must still judge the release again)
    assert first == [] and resets == ["reset"]
    [rolled] = await watcher.check()
    assert (rolled.hash, rolled.generation, rolled.action) == (v0, current.generation + 1, "rollback")


async def test_two_control_planes_share_the_guard_and_one_takes_over_when_the_other_dies(
    store: Store, service: ControlService
) -> None:
    first, second = guard(service, holder="control-a"), guard(service, holder="control-b")
    checked: list[str] = []
    for name, g in (("a", first), ("b", second)):
        original = g.check

        async def counted(name: str = name, original: Any = original) -> Any:
            checked.append(name)
            return await original()

        g.check = counted  # type: ignore[method-assign]
    task_a = asyncio.create_task(first.run())
    await wait_for(lambda: "a" in checked, what="control plane a takes the lease")
    task_b = asyncio.create_task(second.run())
    await wait_for(lambda: second.passes >= 5, what="control plane b standing by")
    assert "b" not in checked and await store.redis.get(store.keys.lease("rollback-guard")) == b"control-a"

    task_a.cancel()  # control plane a dies: no more renewals, no graceful release of the lease
    await asyncio.gather(task_a, return_exceptions=True)
    v0, v1, current = await two_releases(store)
    await report(store, "r1", v1, current.generation, 3)
    died = time.monotonic()
    await wait_for(lambda: "b" in checked, timeout=5, what="control plane b takes over")
    assert time.monotonic() - died < 2.0  # the lease's TTL (1 s for this interval) plus a pass
    await wait_for(
        lambda: _generation(store, current.generation + 1), timeout=5, what="b rolls the failing release back"
    )
    second.stop()
    await asyncio.wait_for(task_b, 5)
    assert await store.redis.get(store.keys.lease("rollback-guard")) is None, "a graceful stop gives it up"
    assert (await store.get_release(FLOW)).hash == v0  # type: ignore[union-attr]


async def _generation(store: Store, generation: int) -> bool:
    release = await store.get_release(FLOW)
    return release is not None and release.generation >= generation


# -- a real fleet --------------------------------------------------------------------------------------
def hold_doc() -> dict[str, Any]:
    """Loadable only where the TestHold plugin is installed (never run here, only compiled)."""
    params = {"url": "http://127.0.0.1:9/none", "label": "canary"}
    return {"name": FLOW, "nodes": [{"id": "hold", "type": "TestHold", "params": params}]}


@pytest.fixture
def plugin() -> Path:
    return hold_plugin_dir()


@pytest.fixture
def control(
    redis_server: RedisServer, namespace: str, tmp_path: Path, plugin: Path
) -> Iterator[ControlProcess]:
    server = ControlProcess(redis_server.url, namespace, tmp_path)
    server.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH")) if p)
    server.env |= {"FLOWFLEET_GUARD_S": "0.2", "FLOWFLEET_AUTO_ROLLBACK_FAILURES": "2"}
    yield server.start()
    server.stop()


@pytest.fixture
def fleet(redis_server: RedisServer, namespace: str, plugin: Path) -> Iterator[list[WorkerProcess]]:
    """g0 and g1 have the plugin, g2 does not: the canary is exactly "a version one replica cannot load"."""
    workers = [
        WorkerProcess(redis_server.url, namespace, "g0", PLUGIN_PATH=str(plugin)).start(),
        WorkerProcess(redis_server.url, namespace, "g1", PLUGIN_PATH=str(plugin)).start(),
        WorkerProcess(redis_server.url, namespace, "g2").start(),
    ]
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0, headers=bearer(DEPLOYER_TOKEN)) as client:
        yield client


async def test_on_a_real_fleet_an_unloadable_canary_is_aborted_and_the_stable_serves_everywhere(
    control: ControlProcess, fleet: list[WorkerProcess], http: httpx.AsyncClient, store: Store
) -> None:
    url = f"{control.url}/v1/flows/{FLOW}"
    await wait_ready(http, fleet)
    digests = []
    for doc in (flow_doc("v0: {input}"), flow_doc("v1: {input}"), hold_doc()):
        reply = await http.post(f"{url}/versions", json=doc)
        assert reply.status_code in (200, 201), reply.text
        digests.append(reply.json()["hash"])
    v0, v1, canary = digests
    for digest in (v0, v1):
        assert (
            await http.post(f"{url}/activate", json={"hash": digest, "prepare": False})
        ).status_code == 200
    await wait_all_serve(http, fleet, FLOW, v1)

    started = await http.post(f"{url}/canary", json={"hash": canary, "percent": 50})
    assert started.status_code == 200, started.text
    # g2 fails the canary at once and again after its 2 s backoff; then the guard acts.
    await wait_for(lambda: _canary_gone(store), timeout=20, what="the guard aborts the canary")
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.action) == (v1, "canary_abort")
    assert release.activated_by == "auto-rollback" and "g2 (invalid_document" in release.reason
    assert "rollback" not in [r.action for r in await store.history(FLOW)]
    await wait_all_serve(http, fleet, FLOW, v1)
    for worker in fleet:
        body = (await http.get(f"{worker.url}/v1/flows")).json()
        entry = next(f for f in body["flows"] if f["flow"] == FLOW)
        assert (entry["generation"], entry.get("canary")) == (release.generation, None), worker.replica_id


async def _canary_gone(store: Store) -> bool:
    release = await store.get_release(FLOW)
    return release is not None and release.canary_hash is None and release.action != "canary_start"
