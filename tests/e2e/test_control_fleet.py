"""The whole path: `flowfleet` CLI -> control server (uvicorn) -> Redis -> real worker processes.

A GitOps sync activates v1 on two replicas, a publish moves them to v2, a rollback brings v1 back, an
invalid publish changes nothing, and `flowfleet status` reports every replica current at each step.
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

from cluster.flow.hashing import content_address
from tests.control_support import Cli, ControlProcess, flow_doc, invalid_doc
from tests.e2e.fleet import WorkerProcess, served_version, wait_all_serve, wait_ready
from tests.redis_server import RedisServer

FLOW = "support_qa"


@pytest.fixture
def control(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[ControlProcess]:
    server = ControlProcess(redis_server.url, namespace, tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def fleet(redis_server: RedisServer, namespace: str) -> Iterator[list[WorkerProcess]]:
    workers = [WorkerProcess(redis_server.url, namespace, f"r{i}").start() for i in range(2)]
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


async def wait_status(
    cli: Cli, generation: int, replicas: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Poll `flowfleet status FLOW -o json` until `replicas` rows are current at `generation`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(cli, "status", FLOW, "-o", "json")
        assert result.code == 0, result
        rows: list[dict[str, Any]] = result.json()["rows"]
        if len(rows) == replicas and all(
            r["state"] == "current" and r["generation"] == generation for r in rows
        ):
            return rows
        assert time.monotonic() < deadline, f"fleet not current at generation {generation}: {rows}"
        await asyncio.sleep(0.1)


async def test_cli_drives_a_real_fleet(
    control: ControlProcess, fleet: list[WorkerProcess], http: httpx.AsyncClient, tmp_path: Path
) -> None:
    cli = Cli(control.url)
    await wait_ready(http, fleet)
    flows = tmp_path / "flows"
    flows.mkdir()
    v1_doc, v2_doc = flow_doc("Summarise: {input}"), flow_doc("Summarise in one line: {input}")
    v1, v2 = content_address(v1_doc)[1], content_address(v2_doc)[1]

    (flows / "support_qa.json").write_text(json.dumps(v1_doc))
    synced = await asyncio.to_thread(cli, "sync", str(flows), "--activate", "-m", "initial")
    assert synced.code == 0, synced
    await wait_all_serve(http, fleet, FLOW, v1)
    rows = await wait_status(cli, 1, len(fleet))
    assert {r["replica"] for r in rows} == {w.replica_id for w in fleet} and {r["hash"] for r in rows} == {v1}

    (tmp_path / "v2.json").write_text(json.dumps(v2_doc))
    published = await asyncio.to_thread(
        cli, "publish", str(tmp_path / "v2.json"), "--activate", "-m", "shorter"
    )
    assert published.code == 0, published
    await wait_all_serve(http, fleet, FLOW, v2)
    await wait_status(cli, 2, len(fleet))

    rolled = await asyncio.to_thread(cli, "rollback", FLOW, "-m", "answers too terse", "-o", "json")
    assert rolled.code == 0 and rolled.json()["hash"] == v1
    await wait_all_serve(http, fleet, FLOW, v1)
    await wait_status(cli, 3, len(fleet))

    (tmp_path / "bad.json").write_text(json.dumps(invalid_doc()))
    refused = await asyncio.to_thread(cli, "publish", str(tmp_path / "bad.json"), "--activate")
    assert refused.code == 1
    # The refusal happened before anything reached Redis: the fleet is still current on generation 3.
    await wait_status(cli, 3, len(fleet), timeout=0.0)
    assert [await served_version(http, w, FLOW) for w in fleet] == [v1] * len(fleet)

    history = (await asyncio.to_thread(cli, "history", FLOW, "-o", "json")).json()["releases"]
    assert [(h["generation"], h["action"], h["activated_by"]) for h in history] == [
        (3, "rollback", "ci"),
        (2, "activate", "ci"),
        (1, "activate", "ci"),
    ]
