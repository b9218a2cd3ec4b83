"""The canary routes of the control API against a real redis-server: success, every refusal, status
side by side, the guard deciding from replica heartbeats, and `unpin` on activate and rollback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.store import Store
from cluster.traffic.runstats import RunStats
from control.canary.guard import CanaryGuard
from control.canary.service import CanaryService
from control.canary.verdict import judge
from control.http.api import create_app
from control.service import ControlService
from tests.control_support import (
    ADMIN_TOKEN,
    DEPLOYER_TOKEN,
    VIEWER_TOKEN,
    bearer,
    flow_doc,
    write_tokens_file,
)
from tests.redis_server import RedisServer

FLOW = "support_qa"


@pytest.fixture
def settings(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        namespace=namespace,
        admin_token=ADMIN_TOKEN,
        tokens_file=str(write_tokens_file(tmp_path)),
        canary_guard_s=0,  # these tests run the guard's passes themselves
        canary_min_runs=10,
    )


@pytest.fixture
async def http(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, redis=redis_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as client:
            client.headers.update(bearer(DEPLOYER_TOKEN))
            yield client


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


async def published(http: httpx.AsyncClient, doc: Any, *, activate: bool = False) -> str:
    params = {"activate": "true"} if activate else {}
    r = await http.post(f"/v1/flows/{FLOW}/versions", content=json.dumps(doc), params=params)
    assert r.status_code in (200, 201), r.text
    digest: str = r.json()["hash"]
    return digest


async def two_versions(http: httpx.AsyncClient) -> tuple[str, str]:
    v1 = await published(http, flow_doc("Summarise: {input}"), activate=True)
    v2 = await published(http, flow_doc("Summarise briefly: {input}"))
    return v1, v2


def error(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]


async def report_runs(
    store: Store, replica: str, epoch: float, per_version: dict[str, tuple[int, int]]
) -> None:
    """A replica heartbeat carrying run counters, as worker.heartbeat writes it."""
    stats = RunStats()
    for digest, (runs, errors) in per_version.items():
        for i in range(runs):
            stats.record(FLOW, epoch, digest, ok=i >= errors, seconds=0.004 if i % 2 else 0.04)
    await store.write_replica_status(replica, {"id": replica, "flows": {}, "runs": stats.report()}, ttl_s=30)


async def test_start_set_promote_through_the_api(http: httpx.AsyncClient, store: Store) -> None:
    v1, v2 = await two_versions(http)
    r = await http.post(f"/v1/flows/{FLOW}/canary", json={"hash": v2[:10], "percent": 10},
                        headers={"X-Flowfleet-Message": "try brevity"})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["hash"], body["canary_hash"], body["canary_percent"], body["action"]) == (
        v1,
        v2,
        10.0,
        "canary_start",
    )
    assert (body["canary_by"], body["reason"], body["generation"]) == ("ci", "try brevity", 2)

    r = await http.post(f"/v1/flows/{FLOW}/canary/percent", json={"percent": 50, "expected_generation": 2})
    assert r.status_code == 200 and r.json()["canary_percent"] == 50.0

    status = (await http.get(f"/v1/flows/{FLOW}/canary", headers=bearer(VIEWER_TOKEN))).json()
    assert (
        status["canary"]["hash"] == v2
        and status["canary"]["percent"] == 50.0
        and status["stable"]["hash"] == v1
    )
    assert status["guard"]["abort"] is False and "waiting for 10 runs" in status["guard"]["verdict"]

    r = await http.post(f"/v1/flows/{FLOW}/canary/promote")
    assert r.status_code == 200, r.text
    assert (r.json()["hash"], r.json()["previous_hash"], r.json()["canary_hash"]) == (v2, v1, None)
    status = (await http.get(f"/v1/flows/{FLOW}/canary")).json()
    assert status["canary"] is None and status["stable"]["hash"] == v2
    flows = (await http.get("/v1/flows")).json()["flows"]
    assert flows[0]["release"]["hash"] == v2


async def test_every_refusal_has_its_status_and_code(
    http: httpx.AsyncClient, store: Store, redis_client
) -> None:
    r = await http.post(f"/v1/flows/{FLOW}/canary/abort")
    assert error(r) == (404, "flow_not_found")
    v1 = await published(http, flow_doc("Summarise: {input}"))
    r = await http.post(f"/v1/flows/{FLOW}/canary", json={"hash": v1, "percent": 5})
    assert error(r) == (409, "no_release")
    assert error(await http.get(f"/v1/flows/{FLOW}/canary")) == (409, "no_release")
    await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": v1})
    v2 = await published(http, flow_doc("Summarise briefly: {input}"))
    for op, payload in (("percent", {"percent": 5}), ("promote", {}), ("abort", {})):
        assert error(await http.post(f"/v1/flows/{FLOW}/canary/{op}", json=payload)) == (409, "no_canary")
    cases: list[tuple[dict[str, Any], tuple[int, str]]] = [
        ({"hash": v2, "percent": 101}, (400, "invalid_percent")),
        ({"hash": v2, "percent": "10"}, (400, "invalid_percent")),
        ({"hash": v2}, (400, "invalid_percent")),
        ({"percent": 10}, (400, "bad_request")),
        ({"hash": v2, "percent": 10, "color": "blue"}, (400, "bad_request")),
        ({"hash": "zz", "percent": 10}, (400, "bad_request")),
        ({"hash": "f" * 64, "percent": 10}, (404, "version_not_found")),
        ({"hash": v1, "percent": 10}, (409, "canary_is_stable")),
        ({"hash": v2, "percent": 10, "expected_generation": 7}, (409, "generation_conflict")),
    ]
    for payload, expected in cases:
        assert error(await http.post(f"/v1/flows/{FLOW}/canary", json=payload)) == expected, payload
    # A stored version that does not compile (stored past the API's checks) is refused like an activation.
    bad = flow_doc("x {input}")
    bad["nodes"][1]["type"] = "NoSuchComponent"
    data, broken = content_address(bad)
    await store.publish(FLOW, data, broken, author="x", message="", node_count=2)
    assert error(await http.post(f"/v1/flows/{FLOW}/canary", json={"hash": broken, "percent": 5})) == (
        422, "invalid_flow")  # fmt: skip
    assert (await http.post(f"/v1/flows/{FLOW}/canary", json={"hash": v2, "percent": 5})).status_code == 200
    v3 = await published(http, flow_doc("Summarise in French: {input}"))
    assert error(await http.post(f"/v1/flows/{FLOW}/canary", json={"hash": v3, "percent": 5})) == (
        409,
        "canary_running",
    )
    assert error(await http.post(f"/v1/flows/{FLOW}/canary/percent", json={"percent": -1})) == (
        400,
        "invalid_percent",
    )
    # Corrupt bytes of the canary: promoting it is refused, nothing changes.
    await redis_client.set(Keys(store.keys.namespace).blob(FLOW, v2), b'{"name":"tampered"}')
    assert error(await http.post(f"/v1/flows/{FLOW}/canary/promote")) == (409, "corrupt_blob")
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.canary_hash) == (v1, v2)
    viewer = await http.post(f"/v1/flows/{FLOW}/canary/abort", headers=bearer(VIEWER_TOKEN))
    assert error(viewer) == (403, "forbidden")


async def test_status_adds_up_replicas_of_the_current_epoch(http: httpx.AsyncClient, store: Store) -> None:
    v1, v2 = await two_versions(http)
    started = (await http.post(f"/v1/flows/{FLOW}/canary", json={"hash": v2, "percent": 20})).json()
    epoch = started["canary_started_at"]
    await report_runs(store, "r1", epoch, {v1: (40, 1), v2: (10, 0)})
    await report_runs(store, "r2", epoch, {v1: (40, 1), v2: (10, 0)})
    await report_runs(store, "old", 1.0, {v1: (500, 500)})  # runs from before this canary do not count
    status = (await http.get(f"/v1/flows/{FLOW}/canary")).json()
    assert status["replicas"] == 2 and status["epoch"] == epoch
    assert (status["stable"]["runs"], status["stable"]["errors"]) == (80, 2)
    assert status["stable"]["error_rate"] == pytest.approx(0.025)
    assert (status["canary"]["runs"], status["canary"]["errors"], status["canary"]["error_rate"]) == (
        20,
        0,
        0.0,
    )
    assert 2.5 < status["stable"]["p50_ms"] <= 50 and status["stable"]["p95_ms"] <= 50
    assert status["guard"]["abort"] is False and "within" in status["guard"]["verdict"]


async def test_guard_aborts_a_failing_canary_once_with_auto_rollback(
    store: Store, settings: Settings
) -> None:
    canaries = CanaryService(ControlService(store), margin=0.05, min_runs=10)
    guard = CanaryGuard(canaries, interval_s=0.01)
    data1, v1 = content_address(flow_doc("a {input}"))
    data2, v2 = content_address(flow_doc("b {input}"))
    for data, digest in ((data1, v1), (data2, v2)):
        await store.publish(FLOW, data, digest, author="t", message="", node_count=2)
    await store.activate(FLOW, v1, by="t", reason="")
    started = await canaries.start(FLOW, v2, 30, actor="ci")
    await report_runs(store, "r1", started.canary_epoch, {v1: (30, 0), v2: (5, 5)})
    assert await guard.check() == []  # the canary has too few runs to judge
    await report_runs(store, "r1", started.canary_epoch, {v1: (30, 0), v2: (12, 6)})
    assert await guard.check() == [FLOW]
    assert await guard.check() == []  # idempotent: nothing left to abort
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.canary_hash, release.action) == (
        v1,
        None,
        "canary_abort",
    )
    assert release.activated_by == "auto-rollback"
    entry = (await store.audit(FLOW))[0]
    assert (entry["action"], entry["by"], entry["canary_hash"]) == ("canary_abort", "auto-rollback", v2)
    assert "exceeds stable" in entry["reason"] and "6/12 canary" in entry["reason"]
    metric = canaries.service.metrics.registry.get_sample_value(
        "flowfleet_control_canary_changes_total", {"action": "abort", "actor": "auto", "result": "ok"}
    )
    assert metric == 1


def test_judge() -> None:
    from cluster.traffic.runstats import VersionSummary

    def s(runs: int, errors: int) -> VersionSummary:
        return VersionSummary("a" * 64, runs, errors, errors / runs if runs else 0.0, None, None)

    assert not judge(s(200, 2), s(99, 99), margin=0.05, min_runs=100).abort  # too few canary runs
    assert not judge(s(99, 0), s(200, 100), margin=0.05, min_runs=100).abort  # too few stable runs
    assert not judge(s(100, 10), s(100, 15), margin=0.05, min_runs=100).abort  # exactly at the margin
    assert judge(s(100, 10), s(100, 16), margin=0.05, min_runs=100).abort
    assert not judge(s(100, 50), s(100, 0), margin=0.0, min_runs=100).abort  # a better canary


async def test_unpin_on_activate_and_rollback(http: httpx.AsyncClient, store: Store) -> None:
    v1, v2 = await two_versions(http)
    r = await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": v2, "unpin": True})
    assert r.status_code == 200 and r.json()["unpin_generation"] == 2
    r = await http.post(f"/v1/flows/{FLOW}/rollback", json={"unpin": True})
    assert r.status_code == 200 and r.json()["unpin_generation"] == 3 and r.json()["hash"] == v1
    r = await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": v2})
    assert r.json()["unpin_generation"] == 3
    assert error(await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": v2, "unpin": "yes"})) == (
        400, "bad_request")  # fmt: skip
