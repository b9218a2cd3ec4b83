"""Child processes of the local cluster: started in their own process groups, stopped in order.

Each child gets its own session so the terminal's Ctrl-C reaches only `flowfleet up`, which then stops
the replicas first (they drain), the control plane next and Redis last. On Linux a child also receives
SIGTERM if `flowfleet up` itself dies, so even `kill -9` of the parent leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _child_setup() -> Callable[[], None]:
    """What runs in the child between fork and exec: unblock every signal (the supervisor blocks the
    ones it waits for, and a signal mask survives exec: a replica started by it would ignore SIGTERM),
    and on Linux ask for SIGTERM when `flowfleet up` dies."""
    prctl: Callable[..., int] | None = None
    if sys.platform.startswith("linux"):
        prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl

    def preexec() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def signal_group(self, signum: int) -> None:
        # The child leads its own process group: signalling the group also reaches anything it forked.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def terminate(self) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)

    def wait_or_kill(self, timeout_s: float) -> int:
        """Wait for the exit; SIGKILL the group after `timeout_s`. Returns the exit code."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop within %.1fs; killing it", self.name, self.pid, timeout_s)
            self.signal_group(signal.SIGKILL)
            self.proc.wait()
        # Reap whatever the child may have left in its group (nothing, normally).
        self.signal_group(signal.SIGKILL)
        return self.proc.returncode

    def stop(self, grace_s: float) -> int:
        """SIGTERM, then SIGKILL after `grace_s`; returns the exit code."""
        self.terminate()
        return self.wait_or_kill(grace_s)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    cwd: Path,
    pass_fds: Sequence[int] = (),
) -> Child:
    """Start `argv` with stdout and stderr appended to `<log_dir>/<name>.log`; `pass_fds` stay open in it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            # Safe here: `flowfleet up` starts no threads, the one hazard of preexec_fn.
            preexec_fn=_child_setup(),
        )
    log.info("started %s pid=%d log=%s", name, proc.pid, log_path)
    return Child(name, proc, log_path)


def stop_all(children: Sequence[Child], grace_s: float) -> None:
    """SIGTERM every child at once, then wait for each (SIGKILL past `grace_s`): they drain in parallel."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace_s
    for child in children:
        code = child.wait_or_kill(max(0.1, deadline - time.monotonic()))
        log.info("stopped %s pid=%d %s", child.name, child.pid, describe_exit(code))


def describe_exit(code: int) -> str:
    """`exit 0`, or the signal's name: uvicorn re-raises SIGTERM after a clean shutdown (-15)."""
    if code < 0:
        return f"on {signal.Signals(-code).name}"
    return f"exit {code}"
