"""How other commands find and talk to a running `flowfleet up`: three files in its state directory.

- `up.lock` is flock-ed by the running `up` for its whole life: a second `up` on the same state
  directory is refused, and whether one runs does not depend on a pid that may have been reused.
- `up.json` is the fleet's status (pids, states, restart counters, addresses), rewritten atomically on
  every change; `flowfleet up scale` and `flowfleet redis-cli` read it.
- `scale-request` holds a replica count; `flowfleet up scale N` writes it and sends SIGUSR1 to `up`,
  whose supervisor reads (and removes) it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from cluster.errors import FlowfleetError

LOCK = "up.lock"
STATUS = "up.json"
SCALE_REQUEST = "scale-request"
SCALE_SIGNAL = signal.SIGUSR1


class NotRunning(FlowfleetError):
    """No `flowfleet up` holds the state directory."""

    code = "not_running"


class AlreadyRunning(FlowfleetError):
    code = "already_running"


@dataclass(frozen=True)
class ChildStatus:
    name: str
    kind: str  # redis | control | replica
    pid: int | None
    state: str  # starting | serving | restarting | stopping
    restarts: int = 0


@dataclass(frozen=True)
class FleetStatus:
    pid: int
    api_url: str
    replica_url: str
    redis_host: str
    redis_port: int
    wanted: int
    children: tuple[ChildStatus, ...] = ()
    running: bool = True

    @property
    def replicas(self) -> list[ChildStatus]:
        return [c for c in self.children if c.kind == "replica"]

    @property
    def serving(self) -> list[str]:
        return [c.name for c in self.replicas if c.state == "serving"]

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.children)

    @property
    def settled(self) -> bool:
        """Exactly `wanted` replicas, all serving, none still stopping."""
        return len(self.replicas) == self.wanted == len(self.serving)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> FleetStatus:
        doc: dict[str, Any] = orjson.loads(data)
        children = tuple(ChildStatus(**c) for c in doc.pop("children", []))
        return cls(**doc, children=children)


@dataclass
class RunLock:
    """Held for as long as `up` runs (the kernel drops it if `up` dies, however it dies)."""

    state_dir: Path
    handle: IO[str] | None = field(default=None, repr=False)

    def acquire(self) -> RunLock:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_dir / LOCK, "a+", encoding="ascii")  # held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise AlreadyRunning(
                f"another flowfleet up (pid {holder}) is running on {self.state_dir}; "
                f"stop it, or use `flowfleet up scale N` to change its replicas"
            ) from e
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def is_running(state_dir: Path) -> bool:
    try:
        handle = open(state_dir / LOCK, encoding="ascii")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def write_status(state_dir: Path, status: FleetStatus) -> None:
    _write_atomically(state_dir / STATUS, status.to_json())


def read_status(state_dir: Path) -> FleetStatus | None:
    """The last status `up` wrote on this state directory (running or not), if any."""
    try:
        return FleetStatus.from_json((state_dir / STATUS).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError, TypeError):
        return None


def running_status(state_dir: Path) -> FleetStatus:
    status = read_status(state_dir) if is_running(state_dir) else None
    if status is None or not status.running:
        raise NotRunning(f"no flowfleet up is running on {state_dir} (start one with `flowfleet up`)")
    return status


def request_scale(state_dir: Path, replicas: int) -> FleetStatus:
    """Ask the running `up` for `replicas` replicas; returns the status it had before."""
    status = running_status(state_dir)
    _write_atomically(state_dir / SCALE_REQUEST, f"{replicas}\n".encode())
    # The lock holder's pid, not up.json's: that file may be a crashed `up`'s, whose pid is reused.
    os.kill(int((state_dir / LOCK).read_text(encoding="ascii")), SCALE_SIGNAL)
    return status


def take_scale_request(state_dir: Path) -> int | None:
    path = state_dir / SCALE_REQUEST
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    with contextlib.suppress(ValueError):
        return int(text)
    return None


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
