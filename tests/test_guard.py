"""The automatic rollback task against a real redis-server, with replica statuses written by the test."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.flow.hashing import content_address
from cluster.store import rollouts
from cluster.store.keys import Keys
from cluster.store.store import Store
from control.metrics import ControlMetrics
from control.rollout.guard import RollbackGuard
from control.rollout.twophase import TwoPhaseCutover
from control.service import ControlService
from tests.control_support import flow_doc

FLOW = "support_qa"


@pytest.fixture
def store(redis_client, namespace) -> Store:
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


async def failing(store: Store, rid: str, digest: str, generation: int, count: int) -> None:
    error = {"hash": digest, "generation": generation, "reason": "invalid_document", "message": "no TestHold"}
    entry = {"hash": None, "generation": None, "last_error": error, "consecutive_failures": count}
    await store.write_replica_status(rid, {"state": "serving", "flows": {FLOW: entry}}, 30)


async def test_repeated_failures_roll_back_once_as_auto_rollback(
    store: Store, service: ControlService
) -> None:
    v1, v2 = await stored(store, "v1 {input}"), await stored(store, "v2 {input}")
    await store.activate(FLOW, v1, by="ci", reason="one")
    await store.activate(FLOW, v2, by="ci", reason="two")
    await failing(store, "r2", v2, 2, 2)
    assert await guard(service).check() == [], "two failures are not yet three"
    await failing(store, "r2", v2, 2, 3)
    # Two control planes judging at once: compare-and-set lets exactly one of them roll back.
    results = await asyncio.gather(guard(service).check(), guard(service).check())
    rolled = [r for result in results for r in result]
    assert len(rolled) == 1 and (rolled[0].hash, rolled[0].generation) == (v1, 3)
    release = await store.get_release(FLOW)
    assert release is not None and release.activated_by == "auto-rollback" and release.action == "rollback"
    assert "r2 (invalid_document: no TestHold)" in release.reason
    await failing(store, "r2", v1, 3, 5)
    assert await guard(service).check() == [], "an automatic rollback is never rolled back"
    assert len(await store.history(FLOW)) == 3


async def test_without_an_earlier_release_it_records_the_reason_once(
    store: Store, service: ControlService
) -> None:
    v1 = await stored(store, "v1 {input}")
    await store.activate(FLOW, v1, by="ci", reason="one")
    await failing(store, "r2", v1, 1, 3)
    watcher = guard(service)
    assert await watcher.check() == [] and await watcher.check() == []
    skipped = [e for e in await store.audit(FLOW, 10) if e["action"] == "auto_rollback_skipped"]
    assert (
        len(skipped) == 1
        and skipped[0]["by"] == "auto-rollback"
        and "no earlier release" in skipped[0]["reason"]
    )
    assert (await store.get_release(FLOW)).generation == 1  # type: ignore[union-attr]
    assert service.metrics.registry.get_sample_value(
        "flowfleet_control_auto_rollbacks_total", {"result": "no_previous"}
    ) == 1  # fmt: skip


async def test_a_forced_release_is_left_alone(store: Store, service: ControlService) -> None:
    v1, v2 = await stored(store, "v1 {input}"), await stored(store, "v2 {input}")
    await store.activate(FLOW, v1, by="ci", reason="one")
    await store.activate(FLOW, v2, by="ci", reason="two")
    await rollouts.write_record(
        store.redis, store.keys, FLOW, {"id": "x", "state": "forced", "generation": 2}
    )
    await failing(store, "r2", v2, 2, 9)
    assert await guard(service, max_replicas=1).check() == []
    assert (await store.get_release(FLOW)).generation == 2  # type: ignore[union-attr]


async def test_the_task_runs_until_stopped_and_survives_errors(store: Store, service: ControlService) -> None:
    watcher = guard(service)
    calls: list[int] = []

    async def flaky() -> list[Any]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("redis away")
        if len(calls) == 3:
            watcher.stop()
        return []

    watcher.check = flaky  # type: ignore[method-assign]
    await asyncio.wait_for(watcher.run(), timeout=5)
    assert len(calls) == 3
