"""End-to-end harness: real `python -m worker` processes on loopback ports, plus a hold server.

`hold_plugin_dir()` makes a directory that, put on a worker's PYTHONPATH, advertises one extra
component through the `flowfleet.components` entry-point group (the documented plugin mechanism):
`TestHold` fetches `params.url` and outputs `label:body`. Pointed at a `HoldServer`, a run blocks until
the test releases it, so "a run in flight" is a fact the test controls, not a timing guess.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]

HOLD_MODULE = '''
"""Test-only component: fetches params.url (a hold server) and outputs "label:body"."""
from typing import Any, Mapping

import httpx

from cluster.components.base import Component, Ports, RunContext


class TestHold(Component):
    type_name = "TestHold"
    description = "Waits for an HTTP answer (end-to-end tests only)."
    params_schema = {
        "type": "object",
        "properties": {"url": {"type": "string"}, "label": {"type": "string"}},
        "required": ["url", "label"],
        "additionalProperties": False,
    }

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(inputs=(), outputs=("text",), default_output="text")

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        async with httpx.AsyncClient() as client:
            reply = await client.get(self.params["url"], timeout=ctx.remaining() or 60.0)
        return {"text": self.params["label"] + ":" + reply.text}
'''


def hold_plugin_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="flowfleet-plugin-"))
    (path / "ff_test_hold.py").write_text(textwrap.dedent(HOLD_MODULE))
    dist = path / "ff_test_hold-0.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ff-test-hold\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text("[flowfleet.components]\nTestHold = ff_test_hold:TestHold\n")
    return path


class HoldServer:
    """A tiny HTTP server whose GET /<key> answers only after `release(key)`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, asyncio.Event] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self._server: asyncio.Server | None = None

    def url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.port}/{key}"

    def _event(self, table: dict[str, asyncio.Event], key: str) -> asyncio.Event:
        return table.setdefault(key, asyncio.Event())

    async def start(self) -> HoldServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        for gate in self.gates.values():
            gate.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_arrived(self, key: str, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self._event(self.arrived, key).wait(), timeout)

    def release(self, key: str) -> None:
        self._event(self.gates, key).set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            key = request_line.split(" ")[1].lstrip("/")
            self._event(self.arrived, key).set()
            await self._event(self.gates, key).wait()
            body = b"released"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()


class WorkerProcess:
    """One replica: `python -m worker` with FLOWFLEET_* settings, logs in a temp file.

    `port` + `reuse_port` let several replicas share one address (SO_REUSEPORT); `cwd` runs the process
    in another directory (an empty one shows that a replica needs no local files)."""

    def __init__(
        self,
        redis_url: str,
        namespace: str,
        replica_id: str,
        *,
        port: int | None = None,
        reuse_port: bool = False,
        cwd: Path | None = None,
        **env: str,
    ) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.replica_id = replica_id
        self.env = env
        self.port = port or free_port()
        self.reuse_port = reuse_port
        self.cwd = cwd or ROOT
        self.log_path = Path(tempfile.mkstemp(prefix=f"flowfleet-{replica_id}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WorkerProcess:
        env = {
            **os.environ,
            "FLOWFLEET_REDIS_URL": self.redis_url,
            "FLOWFLEET_NAMESPACE": self.namespace,
            "FLOWFLEET_REPLICA_ID": self.replica_id,
            "FLOWFLEET_RECONCILE_S": "1",
            "FLOWFLEET_HEARTBEAT_S": "0.5",
            "FLOWFLEET_STATUS_TTL_S": "5",
            "FLOWFLEET_PING_S": "0.5",
            "FLOWFLEET_WATCHDOG_S": "3",
            "FLOWFLEET_SHUTDOWN_GRACE_S": "30",
            **self.env,
        }
        extra = env.pop("PLUGIN_PATH", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), extra, os.environ.get("PYTHONPATH")) if p)
        args = [sys.executable, "-m", "worker", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.reuse_port:
            args.append("--reuse-port")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                env=env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no drain, no last heartbeat."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_path.unlink(missing_ok=True)


async def get_json(client: httpx.AsyncClient, url: str) -> Any:
    try:
        r = await client.get(url, timeout=2.0)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


async def wait_ready(
    client: httpx.AsyncClient, workers: Iterable[WorkerProcess], timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    for w in workers:
        while await get_json(client, f"{w.url}/readyz") is None:
            if w.proc is not None and w.proc.poll() is not None:
                raise AssertionError(f"worker {w.replica_id} exited:\n{w.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {w.replica_id} not ready:\n{w.log()[-3000:]}")
            await asyncio.sleep(0.05)


async def served_version(client: httpx.AsyncClient, worker: WorkerProcess, flow: str) -> str | None:
    body = await get_json(client, f"{worker.url}/v1/flows")
    if body is None:
        return None
    return next((f["hash"] for f in body["flows"] if f["flow"] == flow), None)


async def wait_all_serve(
    client: httpx.AsyncClient, workers: Iterable[WorkerProcess], flow: str, digest: str, timeout: float = 20.0
) -> float:
    """Poll until every worker serves `digest`; returns the seconds it took."""
    started = time.monotonic()
    pending = list(workers)
    while pending:
        versions = [await served_version(client, w, flow) for w in pending]
        pending = [w for w, v in zip(pending, versions, strict=True) if v != digest]
        if not pending:
            break
        if time.monotonic() - started > timeout:
            logs = "\n".join(f"--- {w.replica_id}\n{w.log()[-2000:]}" for w in pending)
            raise AssertionError(f"{[w.replica_id for w in pending]} not on {digest[:12]}:\n{logs}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started
