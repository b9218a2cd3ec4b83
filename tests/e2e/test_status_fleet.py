"""`flowfleet status` tells the truth about real worker processes: a replica stopped with SIGTERM leaves
the fleet at once; one killed with SIGKILL shows `stale` once its heartbeat is late and `gone` once its
status expired, with the age of its last heartbeat, within bounded times; the table shows host and PID."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.flow.hashing import content_address
from control.fleetview import late_after
from tests.control_support import DEPLOYER_TOKEN, Cli, ControlProcess, bearer, flow_doc
from tests.e2e.fleet import WorkerProcess, wait_all_serve, wait_ready
from tests.redis_server import RedisServer

FLOW = "support_qa"
HEARTBEAT_S, TTL_S = 0.5, 8.0


@pytest.fixture
def control(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[ControlProcess]:
    server = ControlProcess(redis_server.url, namespace, tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def fleet(redis_server: RedisServer, namespace: str) -> Iterator[dict[str, WorkerProcess]]:
    settings = {"FLOWFLEET_HEARTBEAT_S": str(HEARTBEAT_S), "FLOWFLEET_STATUS_TTL_S": str(TTL_S)}
    workers = {
        name: WorkerProcess(redis_server.url, namespace, name, **settings).start()
        for name in ("r-stays", "r-term", "r-kill")
    }
    yield workers
    for worker in workers.values():
        worker.stop()


@pytest.fixture
async def http(control: ControlProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=control.url, headers=bearer(DEPLOYER_TOKEN), timeout=10) as client:
        yield client


async def rows_of(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get("/v1/fleet")
    assert response.status_code == 200, response.text
    return {row["replica"]: row for row in response.json()["rows"]}


async def until(
    http: httpx.AsyncClient, check: Callable[[dict[str, dict[str, Any]]], bool], timeout: float, what: str
) -> dict[str, dict[str, Any]]:
    """Poll GET /v1/fleet until `check(rows)` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await rows_of(http)
        if check(rows):
            return rows
        assert time.monotonic() < deadline, f"{what} not seen within {timeout}s: {rows}"
        await asyncio.sleep(0.05)


async def test_stopped_replicas_leave_at_once_and_killed_ones_go_stale_then_gone(
    control: ControlProcess,
    fleet: dict[str, WorkerProcess],
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    cli = Cli(control.url)
    async with httpx.AsyncClient(timeout=10) as plain:
        await wait_ready(plain, fleet.values())
        doc = flow_doc("Summarise: {input}")
        (tmp_path / "f.json").write_text(json.dumps(doc))
        published = await asyncio.to_thread(cli, "publish", str(tmp_path / "f.json"), "--activate")
        assert published.code == 0, published
        await wait_all_serve(plain, fleet.values(), FLOW, content_address(doc)[1])
    await until(
        http,
        lambda rows: set(rows) == set(fleet) and all(r["state"] == "current" for r in rows.values()),
        20.0,
        "three current replicas",
    )

    # The table names each replica's host and PID, and the age of its last heartbeat.
    table = await asyncio.to_thread(cli, "status", FLOW)
    header, *lines = table.out.strip().splitlines()
    assert header.split() == [
        "REPLICA",
        "HOST",
        "PID",
        "FLOW",
        "GEN",
        "HASH",
        "CURRENT",
        "STATE",
        "AGE",
        "ERROR",
    ]
    shown = {cells[0]: cells for cells in (line.split() for line in lines)}
    for name, worker in fleet.items():
        assert shown[name][1:3] == [socket.gethostname(), str(worker.pid)], table
        assert shown[name][7] == "current" and shown[name][8].endswith("s"), table

    # SIGTERM: it drains and deregisters before it exits; never stale, never gone.
    term = fleet["r-term"]
    term.terminate()
    await asyncio.to_thread(term.wait, 30.0)
    rows = await rows_of(http)
    assert "r-term" not in rows and set(rows) == {"r-stays", "r-kill"}, rows

    # SIGKILL: no deregistration. Late heartbeat → stale (with host, pid, age), expired status → gone.
    killed = fleet["r-kill"]
    pid = killed.pid
    killed.kill()
    started = time.monotonic()
    rows = await until(http, lambda rows: rows["r-kill"]["state"] == "stale", 10.0, "r-kill stale")
    stale_after = time.monotonic() - started
    row = rows["r-kill"]
    assert row["age_s"] > late_after(HEARTBEAT_S) and (row["host"], row["pid"]) == (socket.gethostname(), pid)
    assert rows["r-stays"]["state"] == "current"
    # It may be back, so `status --wait` does not call the rollout done; it is not current either.
    rollout = (await http.get(f"/v1/flows/{FLOW}/rollout")).json()
    assert [(r["replica"], r["state"]) for r in rollout["replicas"]] == [
        ("r-kill", "stale"),
        ("r-stays", "current"),
    ]
    assert (rollout["current"], rollout["total"], rollout["done"]) == (1, 2, False)
    table = await asyncio.to_thread(cli, "status", FLOW)
    killed_line = next(line.split() for line in table.out.splitlines() if line.startswith("r-kill"))
    assert killed_line[2] == str(pid) and killed_line[7] == "stale", table

    rows = await until(http, lambda rows: rows["r-kill"]["state"] == "gone", TTL_S + 10.0, "r-kill gone")
    gone_after = time.monotonic() - started
    assert rows["r-kill"]["age_s"] >= TTL_S - 0.5 and rows["r-stays"]["state"] == "current"
    rollout = (await http.get(f"/v1/flows/{FLOW}/rollout")).json()
    assert [r["replica"] for r in rollout["replicas"]] == ["r-stays"] and rollout["done"] is True
    assert [g["replica"] for g in rollout["gone"]] == ["r-kill"]
    table = await asyncio.to_thread(cli, "status", FLOW)
    gone_line = next(line.split() for line in table.out.splitlines() if line.startswith("r-kill"))
    assert gone_line[7] == "gone" and gone_line[8].endswith("s"), table
    print(f"r-kill stale after {stale_after:.2f}s, gone after {gone_after:.2f}s")  # noqa: T201
    assert stale_after < late_after(HEARTBEAT_S) + 5.0 and gone_after < TTL_S + 5.0
