"""Shared by the fleet benchmarks and tests/chaos: a real redis-server, the control plane and real worker
processes on loopback, and activation through the control plane's HTTP API (percentiles are in
`bench.stats`, the scripts' options and results in `bench.script`).

    async with Fleet(replicas=3) as fleet:
        a = await fleet.publish(qa_doc("a"))
        activation = await fleet.activate(a, mode="one-phase")
        swaps = await fleet.wait_swapped(activation.generation)   # replica id -> its swap timestamp

Process helpers come from tests/ (tests/redis_server.py, tests/e2e/fleet.py, tests/control_support.py),
which import nothing from pytest, so benchmarks and tests start replicas the same way.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.report import stack_line
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.control_support import DEPLOYER_TOKEN, ControlProcess, bearer
from tests.e2e.fleet import WorkerProcess, wait_ready
from tests.redis_server import RedisServer, free_port

FLOW = "bench_qa"
MODES = ("one-phase", "two-phase")
# Production defaults for the replicas (cluster/settings.py), so benchmarks measure what ships.
PRODUCTION_TIMING = {
    "FLOWFLEET_RECONCILE_S": "5",
    "FLOWFLEET_HEARTBEAT_S": "2",
    "FLOWFLEET_STATUS_TTL_S": "10",
    "FLOWFLEET_PING_S": "5",
    "FLOWFLEET_WATCHDOG_S": "15",
}


def qa_doc(tag: str, flow: str = FLOW) -> dict[str, Any]:
    """The 3-node flow PromptTemplate -> LLM(echo) -> ChatOutput; `tag` makes a distinct version."""
    return {
        "name": flow,
        "nodes": [
            {
                "id": "prompt",
                "type": "PromptTemplate",
                "params": {"template": f"[{tag}] Summarise: {{input}}"},
            },
            {"id": "llm", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
            {"id": "out", "type": "ChatOutput", "params": {"name": "answer"}},
        ],
        "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "out"}],
    }


class ModeUnavailable(Exception):
    """The control plane does not offer this activation mode (yet)."""


@dataclass(frozen=True)
class Activation:
    hash: str
    generation: int
    started: float  # time.time() just before the call
    returned: float  # time.time() when the response was read
    activated_at: float  # the release record's timestamp
    body: dict[str, Any]

    @property
    def mode(self) -> str:
        """How the control plane says it cut over (`rollout.mode`), or one-phase when it has no rollouts."""
        rollout = self.body.get("rollout")
        return str(rollout.get("mode")) if isinstance(rollout, dict) else "one-phase"


class Fleet:
    """redis-server + `flowfleet control` + `replicas` worker processes; stops everything on exit.

    `shared_port`: every replica binds the same port with SO_REUSEPORT (the kernel balances connections);
    otherwise each has its own port, so each can be probed.
    """

    def __init__(
        self,
        replicas: int,
        *,
        shared_port: bool = False,
        env: dict[str, str] | None = None,
        control: bool = True,
        redis_args: tuple[str, ...] = (),
    ) -> None:
        self.replicas = replicas
        self.shared_port = free_port() if shared_port else None
        self.env = {**PRODUCTION_TIMING, **(env or {})}
        self.with_control = control
        self.redis_args = redis_args
        self.namespace = f"ffbench-{uuid.uuid4().hex[:8]}"
        self.keys = Keys(self.namespace)
        self.dir = Path(tempfile.mkdtemp(prefix="flowfleet-bench-"))
        self.redis: RedisServer | None = None
        self.control: ControlProcess | None = None
        self.workers: list[WorkerProcess] = []
        self.http = httpx.AsyncClient(timeout=30.0)
        self.client: aioredis.Redis | None = None
        self._legacy_activate = False  # the control plane predates the `prepare` field

    @property
    def url(self) -> str:
        """The shared address (with `shared_port`)."""
        assert self.shared_port is not None
        return f"http://127.0.0.1:{self.shared_port}"

    @property
    def store(self) -> Store:
        assert self.client is not None
        return Store(self.client, self.keys)

    async def __aenter__(self) -> Fleet:
        try:
            self.redis = RedisServer(*self.redis_args).start()
            self.client = aioredis.Redis.from_url(self.redis.url)
            if self.with_control:
                self.control = ControlProcess(self.redis.url, self.namespace, self.dir)
                await asyncio.to_thread(self.control.start)
            for i in range(self.replicas):
                self.add_worker(f"r{i}")
            if self.shared_port is None:
                await wait_ready(self.http, self.workers, timeout=60.0)
            await self.wait_registered(self.replicas)
            print(stack_line(), flush=True)  # which stack the replicas run on, in every fleet bench's output
        except BaseException:
            await self.close()
            raise
        return self

    def add_worker(self, replica_id: str, **env: str) -> WorkerProcess:
        assert self.redis is not None
        worker = WorkerProcess(
            self.redis.url,
            self.namespace,
            replica_id,
            port=self.shared_port,
            reuse_port=self.shared_port is not None,
            **{**self.env, **env},
        ).start()
        self.workers.append(worker)
        return worker

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for w in self.workers:
            await asyncio.to_thread(w.stop)
        if self.control is not None:
            await asyncio.to_thread(self.control.stop)
        await self.http.aclose()
        if self.client is not None:
            await self.client.aclose()
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- control plane -------------------------------------------------------------------------------
    async def publish(self, doc: dict[str, Any]) -> str:
        assert self.control is not None
        r = await self.http.post(
            f"{self.control.url}/v1/flows/{doc['name']}/versions",
            content=json.dumps(doc),
            headers=bearer(DEPLOYER_TOKEN),
        )
        assert r.status_code in (200, 201), r.text
        digest: str = r.json()["hash"]
        return digest

    async def activate(self, digest: str, mode: str = "one-phase", flow: str = FLOW) -> Activation:
        """POST /v1/flows/{flow}/activate; `mode` two-phase asks for prepare -> commit, one-phase not,
        default leaves it to the control plane.

        A control plane without the `prepare` field has only the one-phase path: one-phase is then
        requested without the field, and two-phase raises ModeUnavailable."""
        assert self.control is not None and mode in (*MODES, "default")
        body: dict[str, Any] = {"hash": digest}
        if not self._legacy_activate and mode != "default":
            body["prepare"] = mode == "two-phase"
        started = time.time()
        r = await self.http.post(
            f"{self.control.url}/v1/flows/{flow}/activate", json=body, headers=bearer(DEPLOYER_TOKEN)
        )
        returned = time.time()
        if r.status_code == 400 and "prepare" in r.text and "unknown field" in r.text:
            if mode == "two-phase":
                raise ModeUnavailable("the control plane has no two-phase activation")
            self._legacy_activate = True
            return await self.activate(digest, mode, flow)
        assert r.status_code == 200, r.text
        rel = r.json()
        return Activation(digest, rel["generation"], started, returned, rel["activated_at"], rel)

    # -- replicas, as Redis sees them ----------------------------------------------------------------
    async def statuses(self) -> dict[str, dict[str, Any]]:
        return {s["id"]: s for s in await self.store.read_fleet()}

    async def wait_registered(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` replicas report themselves ready in Redis."""
        deadline = time.monotonic() + timeout
        while sum(1 for s in (await self.statuses()).values() if s.get("ready")) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} replicas reported in {timeout}s")
            await asyncio.sleep(0.05)

    async def wait_swapped(
        self, generation: int, flow: str = FLOW, timeout: float = 60.0, poll_s: float = 0.005
    ) -> dict[str, float]:
        """Wait until every replica's status shows `generation` (or newer) of `flow`; returns each
        replica's own swap timestamp (`loaded_at`, unix seconds) for that generation."""
        ids = [w.replica_id for w in self.workers if w.proc is not None and w.proc.poll() is None]
        deadline = time.monotonic() + timeout
        while True:
            statuses = await self.statuses()
            flows = {i: (statuses.get(i) or {}).get("flows", {}).get(flow) or {} for i in ids}
            if all((f.get("generation") or 0) >= generation for f in flows.values()):
                return {i: float(f["loaded_at"]) for i, f in flows.items()}
            if time.monotonic() > deadline:
                behind = [i for i, f in flows.items() if (f.get("generation") or 0) < generation]
                raise TimeoutError(f"replicas {behind} not on generation {generation} after {timeout}s")
            await asyncio.sleep(poll_s)
