"""`flowfleet up` end to end: a subprocess in a temporary directory brings up Redis, the control plane
and three replicas on one port; runs are spread over all three by the kernel; an activation made with
the CLI reaches every replica; Ctrl-C (SIGINT) leaves no process behind; a restart keeps the state."""

from __future__ import annotations

import collections
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from cluster.flow.hashing import content_address
from control.cli.up import READY_LINE
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
FLOWFLEET = [sys.executable, "-c", "from control.cli import entry; entry()"]
REPLICAS = {"local-1", "local-2", "local-3"}
V2 = ROOT / "flows" / "support_qa_v2.json"
QUESTION = {"inputs": {"question": "How do I reset my password?"}}


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    output: list[str]
    port: int
    control_port: int
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def children(self) -> list[int]:
        """Direct children of `flowfleet up` (Redis, control plane, replicas), read from /proc."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]


def start_up(tmp_path: Path, *, redis_port: int, timeout: float = 90.0) -> Up:
    port, control_port = free_port(), free_port()
    state_dir = tmp_path / ".flowfleet"
    argv = [
        *FLOWFLEET, "up", "--replicas", "3", "--port", str(port), "--control-port", str(control_port),
        "--redis-port", str(redis_port), "--flows", str(ROOT / "flows"), "--state-dir", str(state_dir),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFLEET_")}
    with open(tmp_path / "up-stderr.log", "ab") as stderr:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr)
    up = Up(proc, [], port, control_port, state_dir)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buffer = b""
        while not any(line.startswith(READY_LINE) for line in up.output):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                stop(up)
                log = (tmp_path / "up-stderr.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"flowfleet up never became ready:\n{''.join(up.output)}\n{log}")
            if selector.select(timeout=min(remaining, 1.0)):
                buffer += proc.stdout.read() or b""
                *lines, buffer = buffer.split(b"\n")
                up.output += [line.decode() for line in lines]
    return up


def stop(up: Up) -> int:
    """Ctrl-C; returns the exit code and keeps what `flowfleet up` printed while stopping."""
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGINT)
    try:
        code = up.proc.wait(timeout=60)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
        assert up.proc.stdout is not None
        up.output += (up.proc.stdout.read() or b"").decode().splitlines()
        up.proc.stdout.close()
    return code


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def replicas_serving(up: Up, flow: str, digest: str, timeout: float = 30.0) -> set[str]:
    """Replicas seen (through the shared port, one new connection per probe) serving `digest`."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != REPLICAS and time.monotonic() < deadline:
        response = httpx.get(f"{up.url}/v1/flows")
        loaded = {f["flow"]: f["hash"] for f in response.json()["flows"]}
        if loaded.get(flow) == digest:
            seen.add(response.headers["x-flowfleet-replica"])
    return seen


@pytest.fixture
def redis_port() -> Iterator[int]:
    yield free_port()


def test_up_serves_through_one_port_takes_cli_activations_and_stops_cleanly(
    tmp_path: Path, redis_port: int
) -> None:
    up = start_up(tmp_path, redis_port=redis_port)
    try:
        text = "\n".join(up.output)
        token_file = up.state_dir / "admin-token"
        assert str(token_file) in text and f"http://127.0.0.1:{up.control_port}" in text
        assert "curl" in text and "publish" in text and "rollback support_qa" in text
        children = up.children()
        assert len(children) == 5  # redis, control plane, three replicas

        # The kernel spreads new connections over every replica bound to the shared port.
        answered: collections.Counter[str] = collections.Counter()
        for _ in range(300):
            response = httpx.post(f"{up.url}/v1/flows/support_qa/run", json=QUESTION)
            assert response.status_code == 200, response.text
            answered[response.headers["x-flowfleet-replica"]] += 1
            if set(answered) == REPLICAS:
                break
        assert set(answered) == REPLICAS, answered
        v1 = response.json()["version"]
        # A session pins its version in Redis under the replicas' least-privilege ACL user.
        session = {**QUESTION, "session_id": "chat-up"}
        pinned = httpx.post(f"{up.url}/v1/flows/support_qa/run", json=session)
        assert pinned.status_code == 200 and pinned.json()["pinned"] is True, pinned.text

        # An activation through the CLI reaches all three replicas.
        env = {
            **os.environ,
            "FLOWFLEET_URL": f"http://127.0.0.1:{up.control_port}",
            "FLOWFLEET_TOKEN": token_file.read_text().strip(),
        }
        publish = subprocess.run(
            [*FLOWFLEET, "publish", str(V2), "--activate", "-m", "v2", "--output", "json"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert publish.returncode == 0, publish.stderr
        _, v2 = content_address(orjson.loads(V2.read_bytes()))
        assert v2 in publish.stdout and v2 != v1
        assert replicas_serving(up, "support_qa", v2) == REPLICAS
        # The session keeps v1 on whichever replica answers; a new session gets v2.
        for _ in range(6):
            kept = httpx.post(f"{up.url}/v1/flows/support_qa/run", json=session).json()
            assert (kept["version"], kept["variant"], kept["pinned"]) == (v1, "pinned", True), kept
        fresh = httpx.post(f"{up.url}/v1/flows/support_qa/run", json={**QUESTION, "session_id": "chat-new"})
        assert fresh.json()["version"] == v2
    finally:
        code = stop(up)
    assert code == 0, "\n".join(up.output)
    assert "flowfleet up: everything stopped" in up.output
    assert [pid for pid in children if alive(pid)] == []
    assert all(bindable(port) for port in (up.port, up.control_port, redis_port))

    # Started again on the same state: Redis kept everything (AOF), and the example flows do not
    # override the version activated meanwhile.
    again = start_up(tmp_path, redis_port=redis_port)
    try:
        kept = next(line for line in again.output if line.strip().startswith("support_qa"))
        assert v2[:12] in kept and "generation 2" in kept and "kept the current release" in kept
        assert replicas_serving(again, "support_qa", v2) == REPLICAS
    finally:
        assert stop(again) == 0
