"""`flowfleet up` as a supervisor, end to end: one real fleet (Redis, control plane, two replicas) for the
module, started from a shell whose FLOWFLEET_* settings must reach it (tokens files, outbound policy)
or must not (a foreign Redis URL and namespace). While a client sends one request after another through
the shared port, a replica, the control plane and Redis are each killed with SIGKILL and come back;
`flowfleet up scale` takes it from 2 to 3 to 1 replicas; `flowfleet redis-cli` reads its Redis.

Measured numbers are printed (`pytest -s`): failed requests per kill, seconds until N replicas serve."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cluster.flow.hashing import content_address
from control.cli.up import READY_LINE
from control.localcluster import runstate
from control.localcluster.cluster import STOP_GRACE_S
from control.localcluster.runstate import FleetStatus
from tests.e2e.test_up import alive
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
FLOWFLEET = [sys.executable, "-c", "from control.cli import entry; entry()"]
QUESTION = {"inputs": {"question": "How do I reset my password?"}}
V2 = ROOT / "flows" / "support_qa_v2.json"
VIEWER_TOKEN = "viewer-token-for-the-local-fleet"
RUN_TOKEN = "run-token-for-the-local-fleet"
# The fleet must come back within 5 s; a loaded 2-core machine gets more, the measured time is printed.
BACK_WITHIN_S = 30.0


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Fleet:
    proc: subprocess.Popen[bytes]
    cwd: Path
    state_dir: Path
    port: int
    control_port: int
    redis_port: int
    admin_token: str = ""
    run_headers: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {RUN_TOKEN}"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def output(self) -> str:
        return (self.cwd / "up.out").read_text(errors="replace")

    def status(self) -> FleetStatus:
        return runstate.running_status(self.state_dir)

    def pid(self, name: str) -> int:
        pid = next(c.pid for c in self.status().children if c.name == name)
        assert pid is not None
        return pid

    def run(self, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/flows/support_qa/run", json={**QUESTION, **body}, headers=self.run_headers
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FLOWFLEET, *args], cwd=self.cwd, env=clean_env(), capture_output=True, text=True, timeout=90,
            check=False,
        )  # fmt: skip


def listening(port: int) -> bool:
    """Something accepts on the port (a plain bind would also fail on TIME_WAIT left by the kills)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLOWFLEET_")}


def wait_for(what: str, check: Callable[[], Any], timeout: float = BACK_WITHIN_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    cwd = tmp_path_factory.mktemp("up")
    (cwd / "tokens.json").write_bytes(
        orjson.dumps([{"name": "dashboard", "role": "viewer", "sha256": digest(VIEWER_TOKEN)}])
    )
    (cwd / "run-tokens.json").write_bytes(orjson.dumps([{"name": "web", "sha256": digest(RUN_TOKEN)}]))
    port, control_port, redis_port = free_port(), free_port(), free_port()
    env = {
        **clean_env(),
        # Relative paths: the children run in the state directory, `up` must make them absolute.
        "FLOWFLEET_TOKENS_FILE": "tokens.json",
        "FLOWFLEET_RUN_TOKENS_FILE": "run-tokens.json",
        "FLOWFLEET_EGRESS_ALLOW": "none",
        # Exported for some other deployment: the local fleet must not follow them.
        "FLOWFLEET_REDIS_URL": "redis://nobody:nothing@127.0.0.1:1/0",
        "FLOWFLEET_NAMESPACE": "someone-else",
        "FLOWFLEET_URL": "http://127.0.0.1:1",
    }
    argv = [
        *FLOWFLEET, "up", "--replicas", "2", "--port", str(port), "--control-port", str(control_port),
        "--redis-port", str(redis_port), "--flows", str(ROOT / "flows"), "--state-dir", ".flowfleet",
    ]  # fmt: skip
    with open(cwd / "up.out", "wb") as out, open(cwd / "up.err", "wb") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)
    up = Fleet(proc, cwd, cwd / ".flowfleet", port, control_port, redis_port)
    try:
        wait_for("the ready line", lambda: READY_LINE in up.output() or proc.poll() is not None, 90.0)
        assert proc.poll() is None, (cwd / "up.err").read_text()[-3000:]
        up.admin_token = (up.state_dir / "admin-token").read_text().strip()
        yield up
    finally:
        pids = [c.pid for c in runstate.read_status(up.state_dir).children] if proc.poll() is None else []
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0, (cwd / "up.err").read_text()[-3000:]
    assert "flowfleet up: everything stopped" in up.output()
    assert [pid for pid in pids if pid and alive(pid)] == []
    assert not any(listening(p) for p in (port, control_port, redis_port))
    assert not runstate.is_running(up.state_dir)


class Traffic:
    """One request after another through the shared port, each on a new connection (like a curl loop)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.ok = 0
        self.failures: list[str] = []
        self.replicas: set[str] = set()
        self.running = True
        self.thread = threading.Thread(target=self._loop)

    def _loop(self) -> None:
        while self.running:
            try:
                response = self.fleet.run()
            except httpx.HTTPError as e:
                self.failures.append(repr(e))
                continue
            if response.status_code == 200:
                self.ok += 1
                self.replicas.add(response.headers["x-flowfleet-replica"])
            else:
                self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")

    def __enter__(self) -> Traffic:
        self.thread.start()
        wait_for("traffic", lambda: self.ok >= 20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join(timeout=30)


def serving_again(fleet: Fleet, name: str, old_pid: int, replicas: int) -> Callable[[], bool]:
    def check() -> bool:
        status = fleet.status()
        child = next(c for c in status.children if c.name == name)
        return child.pid != old_pid and child.state == "serving" and len(status.serving) == replicas

    return check


# -- settings ---------------------------------------------------------------------------------------------
def environ_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().partition("=")[::2] for p in pairs if p)


def test_settings_from_the_shell_reach_the_fleet_and_its_own_stay_its_own(fleet: Fleet) -> None:
    text = fleet.output()
    assert f"FLOWFLEET_TOKENS_FILE {fleet.cwd / 'tokens.json'}" in text
    assert f"FLOWFLEET_RUN_TOKENS_FILE {fleet.cwd / 'run-tokens.json'} (every run needs a token)" in text
    assert "FLOWFLEET_EGRESS_ALLOW" in text and "ignored, up sets them: FLOWFLEET_NAMESPACE" in text
    assert "Authorization: Bearer $RUN_TOKEN" in text
    # Roles: the viewer from FLOWFLEET_TOKENS_FILE reads but may not activate; the admin token still works.
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    assert httpx.get(f"{fleet.api}/v1/flows", headers=viewer).status_code == 200
    denied = httpx.post(f"{fleet.api}/v1/flows/support_qa/rollback", headers=viewer, json={})
    assert denied.status_code == 403, denied.text
    # Runs need a run token now.
    assert httpx.post(f"{fleet.url}/v1/flows/support_qa/run", json=QUESTION).status_code == 401
    assert fleet.run().status_code == 200
    for name in ("control", "local-1"):
        env = environ_of(fleet.pid(name))
        assert env["FLOWFLEET_EGRESS_ALLOW"] == "none"
        assert env["FLOWFLEET_TOKENS_FILE"] == str(fleet.cwd / "tokens.json")
        assert env["FLOWFLEET_REDIS_URL"].endswith(f"@127.0.0.1:{fleet.redis_port}/0")
        assert env["FLOWFLEET_NAMESPACE"] == "flowfleet" and "FLOWFLEET_URL" not in env


# -- redis-cli --------------------------------------------------------------------------------------------
def test_redis_cli_reads_the_fleets_redis_with_the_password_off_the_command_line(fleet: Fleet) -> None:
    release = httpx.get(
        f"{fleet.api}/v1/flows/support_qa", headers={"Authorization": f"Bearer {fleet.admin_token}"}
    )
    current = release.json().get("release", release.json())["hash"]
    got = fleet.cli("redis-cli", "--raw", "HGET", "flowfleet:{support_qa}:release", "hash")
    assert (got.returncode, got.stdout.strip()) == (0, current), got.stderr
    # A redis-cli that waits (BLPOP) can be looked at: `flowfleet redis-cli` became it (exec, same pid).
    argv = [*FLOWFLEET, "redis-cli", "BLPOP", "flowfleet:probe", "20"]
    with subprocess.Popen(argv, cwd=fleet.cwd, env=clean_env(), stdout=subprocess.PIPE, text=True) as waiting:
        try:
            cmdline = wait_for("the exec", lambda: exec_done(waiting.pid)).split(b"\0")
            password = (fleet.state_dir / "redis-control-password").read_text().strip()
            assert not any(password.encode() in arg for arg in cmdline)
            port = str(fleet.redis_port).encode()
            assert cmdline[1:] == [
                b"-h",
                b"127.0.0.1",
                b"-p",
                port,
                b"--user",
                b"control",
                b"BLPOP",
                b"flowfleet:probe",
                b"20",
                b"",
            ]
            assert environ_of(waiting.pid)["REDISCLI_AUTH"] == password
            assert fleet.cli("redis-cli", "LPUSH", "flowfleet:probe", "hello").returncode == 0
            out, _ = waiting.communicate(timeout=20)
        finally:
            waiting.kill()
    assert out.split() == ["flowfleet:probe", "hello"]


def exec_done(pid: int) -> bytes | None:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    return cmdline if cmdline.split(b"\0")[0].endswith(b"redis-cli") else None


# -- supervision ------------------------------------------------------------------------------------------
def test_a_replica_killed_9_is_replaced_while_the_other_keeps_serving(fleet: Fleet) -> None:
    victim = fleet.pid("local-1")
    with Traffic(fleet) as traffic:
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for("local-1 to serve again", serving_again(fleet, "local-1", victim, 2))
        back_s = time.monotonic() - killed
        before = traffic.ok
        wait_for("runs after the restart", lambda: traffic.ok >= before + 20)
    failed = len(traffic.failures)
    print(f"\nreplica kill -9: {traffic.ok} ok, {failed} failed; 2 replicas serving after {back_s:.2f}s")
    # Every replica accepts from the one socket `up` holds: only the run in flight on the killed replica
    # (at most one, with one client) can fail.
    assert len(traffic.failures) <= 1, traffic.failures
    assert back_s < BACK_WITHIN_S
    wait_for("local-1 answering", lambda: fleet.run().headers["x-flowfleet-replica"] == "local-1")
    assert "restarts: 1 (local-1 1)" in fleet.output()


def test_the_control_plane_killed_9_comes_back(fleet: Fleet) -> None:
    victim = fleet.pid("control")
    admin = {"Authorization": f"Bearer {fleet.admin_token}"}
    with Traffic(fleet) as traffic:
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for("the control plane", serving_again(fleet, "control", victim, 2))
        back_s = time.monotonic() - killed
        fleet_view = httpx.get(f"{fleet.api}/v1/fleet", headers=admin)
    print(f"\ncontrol kill -9: {len(traffic.failures)} failed runs; control plane back after {back_s:.2f}s")
    assert traffic.failures == []  # replicas never needed it to run flows
    assert fleet_view.status_code == 200


def test_redis_killed_9_comes_back_with_its_data_and_the_fleet_recovers(fleet: Fleet) -> None:
    admin = {"Authorization": f"Bearer {fleet.admin_token}"}
    before = httpx.get(f"{fleet.api}/v1/flows/support_qa", headers=admin).json()
    before = before.get("release", before)
    victim = fleet.pid("redis")
    with Traffic(fleet) as traffic:
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for("redis", serving_again(fleet, "redis", victim, 2))
        back_s = time.monotonic() - killed
    print(f"\nredis kill -9: {len(traffic.failures)} failed runs; redis back after {back_s:.2f}s")
    assert traffic.failures == []  # replicas serve the versions they hold
    # AOF with appendfsync always: the release record survived.
    after = fleet.cli("redis-cli", "--raw", "HGET", "flowfleet:{support_qa}:release", "generation")
    assert after.stdout.strip() == str(before["generation"]), after.stderr
    # The fleet recovers: an activation made now reaches both replicas. (A replica that has not yet
    # reconnected to the new Redis cannot answer the two-phase prepare: that rollout aborts, exit 6.)
    attempts: list[subprocess.CompletedProcess[str]] = []

    def publish() -> bool:
        attempts.append(
            subprocess.run(
                [*FLOWFLEET, "publish", str(V2), "--activate", "-m", "after redis came back"],
                env={**clean_env(), "FLOWFLEET_URL": fleet.api, "FLOWFLEET_TOKEN": fleet.admin_token},
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )  # fmt: skip
        )
        assert attempts[-1].returncode in (0, 6), attempts[-1].stderr
        return attempts[-1].returncode == 0

    wait_for("an activation to go through", publish, 60.0)
    _, v2 = content_address(orjson.loads(V2.read_bytes()))
    seen: set[str] = set()

    def both_run_v2() -> bool:
        response = fleet.run()
        if response.status_code == 200 and response.json()["version"] == v2:
            seen.add(response.headers["x-flowfleet-replica"])
        return seen == {"local-1", "local-2"}

    wait_for("both replicas on v2", both_run_v2)


def test_scale_from_2_to_3_to_1(fleet: Fleet) -> None:
    grow = fleet.cli("up", "scale", "3", "--state-dir", ".flowfleet")
    assert grow.returncode == 0, grow.stderr
    assert "2 -> 3 replicas" in grow.stdout and "local-3 serving" in grow.stdout
    assert fleet.status().serving == ["local-1", "local-2", "local-3"]
    wait_for("local-3 answering", lambda: fleet.run().headers["x-flowfleet-replica"] == "local-3")
    leaving = [fleet.pid("local-2"), fleet.pid("local-3")]
    with Traffic(fleet) as traffic:
        started = time.monotonic()
        shrink = fleet.cli("up", "--state-dir", ".flowfleet", "scale", "1")
        took = time.monotonic() - started
    print(f"\nscale 3 -> 1: {len(traffic.failures)} failed runs; settled after {took:.2f}s")
    assert shrink.returncode == 0, shrink.stderr
    assert "local-2 retired" in shrink.stdout and "local-3 retired" in shrink.stdout
    # Retired replicas drain and exit on SIGTERM: no SIGKILL after the grace period.
    assert "did not stop" not in (fleet.cwd / "up.err").read_text() and took < STOP_GRACE_S
    assert traffic.failures == []  # the shared queue never went away with them
    assert fleet.status().serving == ["local-1"] and not any(alive(pid) for pid in leaving)
    assert traffic.replicas >= {"local-1"}
