"""Shared by the failover tests (Sentinel, Cluster): a control plane and replicas on an HA topology, a
steady series of activations through the control API, and the checks every failover must pass.

An activation is acknowledged when the API answered 200; the series records every answer, so a test can
show that each acknowledged (generation, version) is still in the flow's history after the primary died,
that failures were 503s with a clear code, and when they stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import FLOW, qa_doc
from tests.control_support import DEPLOYER_TOKEN, ControlProcess, bearer
from tests.e2e.fleet import WorkerProcess

NAMESPACE = "flowfleet"  # the ACL users' key patterns are written for the default namespace
# Codes an activation may fail with while the primary is away (docs/operations.md, "High availability").
FAILOVER_CODES = {"redis_unavailable", "redis_unreplicated"}
# Replicas' timing for these tests (reconcile every second, a 3 s watchdog), as the other fleet tests.
TIMING = {"FLOWFLEET_RECONCILE_S": "1", "FLOWFLEET_PING_S": "0.5", "FLOWFLEET_WATCHDOG_S": "3"}


@dataclass(frozen=True)
class Answer:
    sent: float  # time.time()
    took: float  # seconds
    status: int
    code: str | None  # the error code of a non-200 answer
    generation: int | None
    hash: str


@dataclass
class ActivationSeries:
    """Direct activations (`prepare: false`) of the published versions in turn, back to back."""

    http: httpx.AsyncClient
    control: ControlProcess
    versions: list[str]
    pause_s: float = 0.05
    answers: list[Answer] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> ActivationSeries:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> list[Answer]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.answers

    def acked(self, after: float = 0.0) -> list[Answer]:
        return [a for a in self.answers if a.status == 200 and a.sent >= after]

    async def wait_acked(self, count: int, after: float = 0.0, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked(after)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} activations acknowledged: {self.answers}"
            await asyncio.sleep(0.02)

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            digest = self.versions[n % len(self.versions)]
            n += 1
            sent = time.time()
            try:
                r = await self.http.post(
                    f"{self.control.url}/v1/flows/{FLOW}/activate",
                    json={"hash": digest, "prepare": False},
                    headers=bearer(DEPLOYER_TOKEN),
                    timeout=10.0,
                )
                body: Mapping[str, Any] = r.json()
                status = r.status_code
            except httpx.HTTPError as e:
                body, status = {"error": type(e).__name__}, 0
            ok = status == 200
            self.answers.append(
                Answer(sent, time.time() - sent, status, None if ok else str(body.get("error")),
                       int(body["generation"]) if ok else None, digest)
            )  # fmt: skip
            await asyncio.sleep(self.pause_s)


def start_control(redis_url: str, tmp_path: Path, **env: str) -> ControlProcess:
    control = ControlProcess(redis_url, NAMESPACE, tmp_path)
    # The guards act on their own schedule; keep them out of the activation series' way.
    control.env.update({"FLOWFLEET_GUARD_S": "0", "FLOWFLEET_CANARY_GUARD_S": "0", **env})
    return control.start()


def start_workers(redis_url: str, n: int, prefix: str, **env: str) -> list[WorkerProcess]:
    return [
        WorkerProcess(redis_url, NAMESPACE, f"{prefix}{i}", **{**TIMING, **env}).start() for i in range(n)
    ]


async def publish_versions(http: httpx.AsyncClient, control: ControlProcess, count: int) -> list[str]:
    hashes = []
    for n in range(count):
        r = await http.post(
            f"{control.url}/v1/flows/{FLOW}/versions", json=qa_doc(f"v{n}"), headers=bearer(DEPLOYER_TOKEN)
        )
        assert r.status_code in (200, 201), r.text
        hashes.append(r.json()["hash"])
    return hashes


def check_failures(answers: list[Answer], killed_at: float) -> tuple[int, float]:
    """Every failure came after the kill, was a 503 with a failover code, and answered within 5 s; after
    the first acknowledged activation following a failure, nothing failed. Returns (failures, slowest)."""
    failed = [a for a in answers if a.status != 200]
    assert all(a.sent >= killed_at - 0.5 for a in failed), [a for a in failed if a.sent < killed_at]
    assert all(a.status == 503 and a.code in FAILOVER_CODES for a in failed), failed
    if failed:
        recovered = min(
            (a.sent for a in answers if a.status == 200 and a.sent > failed[0].sent), default=None
        )
        assert recovered is not None, "no activation succeeded after the failover"
        assert not [a for a in failed if a.sent > recovered], "an activation failed after the recovery"
    slowest = max((a.took for a in failed), default=0.0)
    assert slowest < 5.0, f"a failed activation took {slowest:.2f} s to answer"
    return len(failed), slowest


def check_history(history: list[Mapping[str, Any]], answers: list[Answer]) -> None:
    """No acknowledged activation is lost: each (generation, hash) answered 200 is in the history."""
    kept = {(int(e["generation"]), str(e["hash"])) for e in history}
    lost = [
        (a.generation, a.hash[:12]) for a in answers if a.status == 200 and (a.generation, a.hash) not in kept
    ]
    assert not lost, f"acknowledged activations missing after the failover: {lost}"


async def history_of(http: httpx.AsyncClient, control: ControlProcess) -> list[Mapping[str, Any]]:
    r = await http.get(
        f"{control.url}/v1/flows/{FLOW}/history", params={"limit": 1000}, headers=bearer(DEPLOYER_TOKEN)
    )
    assert r.status_code == 200, r.text
    entries: list[Mapping[str, Any]] = r.json()["releases"]
    return entries
