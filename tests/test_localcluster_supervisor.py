"""`flowfleet up` as a supervisor, with real child processes: a dead child is restarted after a bounded
backoff, replicas are added and retired on request, children never inherit the supervisor's blocked
signals; the settings that reach the children; the files through which other commands find `up`."""

from __future__ import annotations

import doctest
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from control.localcluster import children, environment, runstate, supervisor
from control.localcluster.children import Child
from control.localcluster.environment import child_environment
from control.localcluster.runstate import ChildStatus, FleetStatus, NotRunning, RunLock
from control.localcluster.supervisor import Slot, Supervisor, restart_delay

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_module_examples_hold() -> None:
    for module in (supervisor, environment):
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0


def test_the_first_restart_is_quick_and_a_crash_loop_backs_off() -> None:
    assert restart_delay(0) == supervisor.FIRST_RESTART_S <= 0.5
    delays = [restart_delay(n) for n in range(12)]
    assert delays == sorted(delays) and delays[-1] == supervisor.MAX_RESTART_S


# -- the supervisor, with sleeping children ------------------------------------------------------------
def sleeper_slot(tmp_path: Path, name: str, kind: str = "replica") -> Slot:
    def start() -> Child:
        return children.spawn(name, SLEEPER, env=os.environ, log_dir=tmp_path, cwd=tmp_path)

    return Slot(name, kind, start, lambda child: child.alive())


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Supervisor]:
    requests: list[int] = []
    made = Supervisor(
        infra=[sleeper_slot(tmp_path, "db", "redis")],
        replicas=[sleeper_slot(tmp_path, f"r-{i}") for i in (1, 2)],
        new_replica=lambda name: sleeper_slot(tmp_path, name),
        on_change=lambda: None,
        take_scale_request=lambda: requests.pop() if requests else None,
        stop_grace_s=5.0,
    )
    made.requests = requests  # type: ignore[attr-defined]
    for slot in made.slots:
        slot.spawn()
    try:
        yield made
    finally:
        made.stop()


def run_until(
    fleet: Supervisor,
    done: Callable[[], bool],
    first: Callable[[], None] = lambda: None,
    timeout: float = 15.0,
) -> float:
    """Run the real loop until `done()` holds; returns the seconds it took. `first` runs inside the loop.

    The loop only returns on SIGINT/SIGTERM, so each step checks `done()` and then sends SIGTERM to this
    very process: inside the loop SIGTERM is blocked and waited for, never delivered."""
    started = time.monotonic()
    original = fleet.step
    pending = [first]

    def step(now: float) -> bool:
        while pending:
            pending.pop()()
        changed = original(now)
        if done() or time.monotonic() - started > timeout:
            os.kill(os.getpid(), signal.SIGTERM)
        return changed

    fleet.step = step  # type: ignore[method-assign]
    try:
        assert fleet.run() == "SIGTERM"
    finally:
        fleet.step = original  # type: ignore[method-assign]
    assert done(), [s.status() for s in fleet.slots]
    return time.monotonic() - started


def serving(fleet: Supervisor) -> list[str]:
    fleet.step(time.monotonic())
    return [s.name for s in fleet.slots if s.state == "serving"]


def test_a_killed_child_is_restarted_at_once_and_counted(fleet: Supervisor) -> None:
    assert serving(fleet) == ["db", "r-1", "r-2"]
    victim = fleet.replicas[0]
    old_pid = victim.pid
    os.kill(old_pid, signal.SIGKILL)
    took = run_until(fleet, lambda: victim.state == "serving" and victim.pid != old_pid)
    assert took < 3.0
    assert victim.restarts == 1 and fleet.replicas[1].restarts == 0
    assert [c.restarts for c in fleet.statuses()] == [0, 1, 0]
    # Killed again at once: it had not run stably, so this restart waits longer.
    os.kill(victim.pid, signal.SIGKILL)
    victim.child.proc.wait(timeout=5)  # type: ignore[union-attr]
    fleet.step(time.monotonic())
    assert victim.state == "restarting" and victim.quick_failures == 2
    assert victim.status() == ChildStatus("r-1", "replica", None, "restarting", 1)


def test_scale_requests_add_and_retire_replicas(fleet: Supervisor) -> None:
    def ask_for_four() -> None:
        fleet.requests.append(4)  # type: ignore[attr-defined]
        os.kill(os.getpid(), signal.SIGUSR1)  # as `flowfleet up scale 4` does (blocked inside the loop)

    names = ["db", "r-1", "r-2", "local-3", "local-4"]
    run_until(fleet, lambda: [s.name for s in fleet.slots if s.state == "serving"] == names, ask_for_four)
    assert fleet.wanted == 4
    retired = [slot.pid for slot in fleet.replicas[1:]]
    fleet.scale(1)
    assert [(s.name, s.state) for s, _ in fleet.retiring] == [
        ("local-4", "stopping"), ("local-3", "stopping"), ("r-2", "stopping"),
    ]  # fmt: skip
    run_until(fleet, lambda: not fleet.retiring)
    assert [s.name for s in fleet.replicas] == ["r-1"] and fleet.wanted == 1
    assert not any(alive(pid) for pid in retired)
    fleet.scale(0)  # refused: a fleet without replicas serves nothing
    assert fleet.wanted == 1


def test_stop_stops_everything_and_cancels_pending_restarts(fleet: Supervisor) -> None:
    pids = [s.pid for s in fleet.slots]
    os.kill(pids[1], signal.SIGKILL)
    fleet.replicas[0].child.proc.wait()  # type: ignore[union-attr]
    fleet.step(time.monotonic())
    assert fleet.replicas[0].state == "restarting"
    fleet.stop()
    fleet.step(time.monotonic() + 60)
    assert all(s.state == "stopped" for s in fleet.slots)
    assert not any(alive(pid) for pid in pids)


def alive(pid: int) -> bool:
    try:
        # A zombie not yet reaped by its parent counts as gone.
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_children_started_by_the_loop_still_obey_sigterm(tmp_path: Path) -> None:
    """The loop blocks SIGTERM to wait for it; a mask survives exec, so without unblocking in the child a
    replica the supervisor started (restart, scale) ignored SIGTERM until SIGKILL, 15 s later."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        child = children.spawn("masked", SLEEPER, env=os.environ, log_dir=tmp_path, cwd=tmp_path)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    blocked = Path(f"/proc/{child.pid}/status").read_text().split("SigBlk:")[1].split()[0]
    assert int(blocked, 16) == 0
    started = time.monotonic()
    assert child.stop(grace_s=5.0) == -signal.SIGTERM
    assert time.monotonic() - started < 2.0


# -- settings ---------------------------------------------------------------------------------------------
def test_up_keeps_its_own_settings_and_passes_the_others(tmp_path: Path) -> None:
    env = child_environment(
        {
            "FLOWFLEET_REDIS_URL": "redis://prod:6379/0",
            "FLOWFLEET_NAMESPACE": "prod",
            "FLOWFLEET_ADMIN_TOKEN": "mine",
            "FLOWFLEET_URL": "https://control.example",
            "FLOWFLEET_TOKEN": "t",
            "FLOWFLEET_REPLICA_ID": "",
            "FLOWFLEET_TOKENS_FILE": "conf/tokens.json",
            "FLOWFLEET_RUN_TOKENS_FILE": "/etc/run-tokens.json",
            "FLOWFLEET_FLOW_SECRETS": "OPENAI_API_KEY, TAVILY_API_KEY",
            "FLOWFLEET_RUN_TIMEOUT_S": "5",
            "OPENAI_API_KEY": "sk-1",
            "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
        },
        tmp_path,
    )
    assert env.ignored == tuple(
        f"FLOWFLEET_{name}" for name in ("ADMIN_TOKEN", "NAMESPACE", "REDIS_URL", "TOKEN", "URL")
    )
    assert env.passed == tuple(
        f"FLOWFLEET_{name}" for name in ("FLOW_SECRETS", "RUN_TIMEOUT_S", "RUN_TOKENS_FILE", "TOKENS_FILE")
    )
    assert not any(name in env.base for name in (*environment.OWNED, *environment.CLIENT_ONLY))
    assert env.base["OPENAI_API_KEY"] == "sk-1" and env.base["OPENAI_BASE_URL"].endswith("/v1")
    # The children run in the state directory: a relative path is made absolute against the shell's.
    assert env.tokens_file == tmp_path / "conf" / "tokens.json"
    assert env.run_tokens_file == Path("/etc/run-tokens.json")
    assert env.secrets == (("OPENAI_API_KEY", True), ("TAVILY_API_KEY", False))
    default = child_environment({}, tmp_path)
    assert default.secrets == (("OPENAI_API_KEY", False), ("HF_TOKEN", False)) and default.tokens_file is None


# -- how other commands find `up` --------------------------------------------------------------------------
def test_one_up_per_state_directory_and_its_status_file(tmp_path: Path) -> None:
    assert not runstate.is_running(tmp_path)
    with pytest.raises(NotRunning, match="no flowfleet up is running"):
        runstate.request_scale(tmp_path, 3)
    lock = RunLock(tmp_path).acquire()
    try:
        assert runstate.is_running(tmp_path)
        with pytest.raises(runstate.AlreadyRunning, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
        status = FleetStatus(
            os.getpid(), "http://a", "http://r", "127.0.0.1", 6380, 2,
            (ChildStatus("redis", "redis", 10, "serving", 1),
             ChildStatus("local-1", "replica", 11, "serving"),
             ChildStatus("local-2", "replica", None, "restarting", 2)),
        )  # fmt: skip
        runstate.write_status(tmp_path, status)
        assert runstate.running_status(tmp_path) == status
        assert status.serving == ["local-1"] and status.restarts == 3 and not status.settled
    finally:
        lock.release()
    assert not runstate.is_running(tmp_path)
    with pytest.raises(NotRunning):
        runstate.running_status(tmp_path)
    assert runstate.read_status(tmp_path) == status  # the addresses stay readable after a stop


def test_a_scale_request_is_a_file_and_a_signal(tmp_path: Path) -> None:
    got: list[int] = []
    previous = signal.signal(runstate.SCALE_SIGNAL, lambda signum, frame: got.append(signum))
    lock = RunLock(tmp_path).acquire()
    try:
        runstate.write_status(tmp_path, FleetStatus(os.getpid(), "a", "r", "h", 1, 2))
        assert runstate.request_scale(tmp_path, 5).wanted == 2
        assert got == [runstate.SCALE_SIGNAL]
        assert runstate.take_scale_request(tmp_path) == 5
        assert runstate.take_scale_request(tmp_path) is None
        (tmp_path / runstate.SCALE_REQUEST).write_text("many")
        assert runstate.take_scale_request(tmp_path) is None
    finally:
        lock.release()
        signal.signal(runstate.SCALE_SIGNAL, previous)
