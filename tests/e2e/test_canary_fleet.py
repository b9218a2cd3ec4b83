"""Canary, session pinning and the canary guard end to end: `flowfleet` CLI and HTTP -> control server
-> Redis -> three real worker processes running the real engine.

- a request key lands on the same version on every replica, exactly as the pure bucketing predicts;
- a session pinned to v1 keeps v1 on every replica after v2 is activated, a new session gets v2, and an
  `--unpin` activation moves the old session;
- a canary whose flow fails at run time is aborted by the control plane's guard (actor auto-rollback).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.traffic.canary import bucket, is_canary
from tests.control_support import DEPLOYER_TOKEN, Cli, ControlProcess, bearer, flow_doc
from tests.e2e.fleet import WorkerProcess, get_json, wait_all_serve, wait_ready
from tests.redis_server import RedisServer

FLOW = "support_qa"


def failing_doc() -> dict[str, Any]:
    """Valid, but every run fails: the echo model's reply is not JSON, which the parser requires."""
    doc = flow_doc("Answer in JSON: {input}")
    del doc["tests"]
    doc["nodes"].append({"id": "parse", "type": "OutputParser", "params": {"mode": "json"}})
    doc["edges"].append(
        {"source": "llm_1", "target": "parse", "source_output": "text", "target_input": "text"}
    )
    return doc


@pytest.fixture
def make_control(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[Any]:
    started: list[ControlProcess] = []

    def make(**env: str) -> ControlProcess:
        server = ControlProcess(redis_server.url, namespace, tmp_path)
        server.env.update(env)
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def fleet(redis_server: RedisServer, namespace: str) -> Iterator[list[WorkerProcess]]:
    workers = [WorkerProcess(redis_server.url, namespace, f"c{i}").start() for i in range(3)]
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


async def publish(http: httpx.AsyncClient, control: ControlProcess, doc: Any, activate: bool = False) -> str:
    r = await http.post(
        f"{control.url}/v1/flows/{FLOW}/versions",
        content=json.dumps(doc),
        params={"activate": "true"} if activate else {},
        headers=bearer(DEPLOYER_TOKEN),
    )
    assert r.status_code in (200, 201), r.text
    digest: str = r.json()["hash"]
    return digest


async def run(
    http: httpx.AsyncClient, worker: WorkerProcess, *, key: str | None = None, session: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"inputs": {"input": "hi"}}
    if session is not None:
        body["session_id"] = session
    headers = {"X-Flowfleet-Key": key} if key is not None else {}
    return await http.post(f"{worker.url}/v1/flows/{FLOW}/run", json=body, headers=headers)


async def wait_canary(
    http: httpx.AsyncClient, workers: list[WorkerProcess], canary: str | None, timeout: float = 20.0
) -> None:
    """Poll until every worker's loaded release names `canary` (None: no canary)."""
    deadline = time.monotonic() + timeout
    for w in workers:
        while True:
            body = await get_json(http, f"{w.url}/v1/flows")
            entry = next((f for f in (body or {}).get("flows", []) if f["flow"] == FLOW), None)
            if entry is not None and (entry.get("canary") or {}).get("hash") == canary:
                break
            assert time.monotonic() < deadline, f"{w.replica_id} does not run canary {canary}: {body}"
            await asyncio.sleep(0.02)


async def test_a_key_gets_the_same_version_on_every_replica(
    make_control: Any, fleet: list[WorkerProcess], http: httpx.AsyncClient
) -> None:
    control = make_control(FLOWFLEET_CANARY_GUARD_S="0")
    cli = Cli(control.url)
    await wait_ready(http, fleet)
    v1 = await publish(http, control, flow_doc("Summarise: {input}"), activate=True)
    v2 = await publish(http, control, flow_doc("Summarise briefly: {input}"))
    await wait_all_serve(http, fleet, FLOW, v1)

    started = await asyncio.to_thread(
        cli, "canary", "start", FLOW, v2[:12], "--percent", "30", "-m", "brevity"
    )
    assert started.code == 0, started
    assert "canary_start" in started.out and "30%" in started.out
    await wait_canary(http, fleet, v2)

    keys = [f"user-{i}" for i in range(300)]
    canary_keys = 0
    for key in keys:
        answers = [await run(http, w, key=key) for w in fleet]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        versions = {
            (a.json()["version"], a.json()["variant"], a.headers["x-flowfleet-version"]) for a in answers
        }
        expected = (v2, "canary", v2) if is_canary(bucket(FLOW, key), 30) else (v1, "stable", v1)
        assert versions == {expected}, key
        canary_keys += expected[0] == v2
    # Deterministic, so the share is exactly what the bucketing gives for these keys: close to 30 %.
    assert 0.22 < canary_keys / len(keys) < 0.38, canary_keys

    # The control plane adds up every replica's counters: 900 runs, none failed.
    deadline = time.monotonic() + 20
    while True:
        status = await asyncio.to_thread(cli, "canary", "status", FLOW, "-o", "json")
        assert status.code == 0, status
        body = status.json()
        if body["stable"]["runs"] + body["canary"]["runs"] == 3 * len(keys):
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)
    assert (body["canary"]["runs"], body["stable"]["runs"]) == (
        3 * canary_keys,
        3 * (len(keys) - canary_keys),
    )
    assert (
        body["canary"]["error_rate"] == 0.0 and body["replicas"] == 3 and body["canary"]["p95_ms"] is not None
    )
    table = await asyncio.to_thread(cli, "canary", "status", FLOW)
    assert "canary at 30%" in table.out and v2[:12] in table.out and "ERROR RATE" in table.out, table

    resized = await asyncio.to_thread(
        cli, "canary", "set", FLOW, "--percent", "40", "--expected-generation", "2"
    )
    assert resized.code == 0 and "canary_set" in resized.out and "at 40%" in resized.out, resized
    refused = await asyncio.to_thread(cli, "canary", "set", FLOW, "--percent", "150")
    assert refused.code == 2 and "percent must be from 0 to 100" in refused.err, refused
    await wait_canary(http, fleet, v2)

    promoted = await asyncio.to_thread(cli, "canary", "promote", FLOW)
    assert promoted.code == 0, promoted
    await wait_all_serve(http, fleet, FLOW, v2)
    await wait_canary(http, fleet, None)
    assert {(await run(http, w, key=keys[0])).json()["version"] for w in fleet} == {v2}
    again = await asyncio.to_thread(cli, "canary", "abort", FLOW)
    assert again.code == 3 and "no canary" in again.err, again


async def test_a_session_keeps_its_version_across_replicas_until_unpinned(
    make_control: Any, fleet: list[WorkerProcess], http: httpx.AsyncClient
) -> None:
    control = make_control(FLOWFLEET_CANARY_GUARD_S="0")
    cli = Cli(control.url)
    await wait_ready(http, fleet)
    v1 = await publish(http, control, flow_doc("Summarise: {input}"), activate=True)
    await wait_all_serve(http, fleet, FLOW, v1)
    first = await run(http, fleet[0], session="chat-1")
    assert (first.json()["version"], first.json()["pinned"]) == (v1, True)

    v2 = await publish(http, control, flow_doc("Summarise briefly: {input}"), activate=True)
    await wait_all_serve(http, fleet, FLOW, v2)
    for w in fleet:
        r = await run(http, w, session="chat-1")
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["variant"], r.json()["generation"]) == (v1, "pinned", 1), (
            w.replica_id
        )
        assert r.json()["outputs"]["llm_1"].startswith("Summarise: hi") or "Summarise: hi" in json.dumps(
            r.json()
        )
        fresh = await run(http, w, session=f"chat-new-{w.replica_id}")
        assert (fresh.json()["version"], fresh.json()["variant"]) == (v2, "stable")

    v3 = await publish(http, control, flow_doc("Summarise with a disclaimer: {input}"))
    fixed = await asyncio.to_thread(
        cli, "activate", FLOW, v3[:12], "--unpin", "-m", "compliance fix", "-o", "json"
    )
    assert fixed.code == 0 and fixed.json()["unpin_generation"] == 3, fixed
    await wait_all_serve(http, fleet, FLOW, v3)
    for w in fleet:
        for session in ("chat-1", "chat-new-c0"):
            r = await run(http, w, session=session)
            assert (r.json()["version"], r.json()["variant"]) == (v3, "stable"), (w.replica_id, session)

    # A rollback with --unpin moves them again.
    rolled = await asyncio.to_thread(cli, "rollback", FLOW, "--to", v1[:12], "--unpin", "-o", "json")
    assert rolled.code == 0 and rolled.json()["unpin_generation"] == 4, rolled
    await wait_all_serve(http, fleet, FLOW, v1)
    assert {(await run(http, w, session="chat-1")).json()["version"] for w in fleet} == {v1}


async def test_a_failing_canary_is_aborted_automatically(
    make_control: Any, fleet: list[WorkerProcess], http: httpx.AsyncClient
) -> None:
    control = make_control(
        FLOWFLEET_CANARY_GUARD_S="0.2", FLOWFLEET_CANARY_MIN_RUNS="20", FLOWFLEET_CANARY_ERROR_MARGIN="0.05"
    )
    cli = Cli(control.url)
    await wait_ready(http, fleet)
    v1 = await publish(http, control, flow_doc("Summarise: {input}"), activate=True)
    bad = await publish(http, control, failing_doc())
    await wait_all_serve(http, fleet, FLOW, v1)
    started = await asyncio.to_thread(cli, "canary", "start", FLOW, bad, "--percent", "50")
    assert started.code == 0, started
    await wait_canary(http, fleet, bad)

    # Traffic in batches of 20 runs over the three replicas until the guard acts (bounded by a deadline).
    aborted = None
    deadline = time.monotonic() + 60
    sent = 0
    while aborted is None and time.monotonic() < deadline:
        for _ in range(20):
            r = await run(http, fleet[sent % 3], key=f"user-{sent}")
            sent += 1
            assert r.status_code == 200 or (r.status_code, r.json()["error"]) == (502, "node_failed"), r.text
            if r.status_code == 502:  # only the canary fails, and the failure says so
                assert (r.headers["x-flowfleet-version"], r.headers["x-flowfleet-variant"]) == (bad, "canary")
        history = (await asyncio.to_thread(cli, "history", FLOW, "-o", "json")).json()["releases"]
        if history[0]["action"] == "canary_abort":
            aborted = history[0]
    assert aborted is not None, "the guard never aborted the failing canary"
    assert (aborted["activated_by"], aborted["hash"], aborted["canary_hash"]) == ("auto-rollback", v1, None)
    audit = (await asyncio.to_thread(cli, "audit", "--flow", FLOW, "-o", "json")).json()["entries"]
    entry = next(e for e in audit if e["action"] == "canary_abort")
    assert (
        entry["by"] == "auto-rollback" and entry["canary_hash"] == bad and "exceeds stable" in entry["reason"]
    )
    await wait_canary(http, fleet, None)
    # Every key, canary ones included, is served by the stable version again, on every replica.
    for i in range(30):
        r = await run(http, fleet[i % 3], key=f"user-{i}")
        assert r.status_code == 200 and (r.json()["version"], r.json()["variant"]) == (v1, "stable")
    status = (await asyncio.to_thread(cli, "canary", "status", FLOW, "-o", "json")).json()
    assert status["canary"] is None and status["stable"]["hash"] == v1
