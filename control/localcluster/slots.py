"""What each child of the local fleet is: how to start it again, and how `up` knows it serves.

Redis serves once it answers PING as the control user, the control plane once `/healthz` answers, a
replica once it has written its pid to its ready file (it accepts connections from then on).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis as redis_module

from control.localcluster import bootstrap, children
from control.localcluster.bootstrap import StartupFailed
from control.localcluster.children import Child
from control.localcluster.supervisor import Slot
from worker.serve import BACKLOG

REPLICA = (sys.executable, "-m", "control.localcluster.replica")


def listening_socket(host: str, port: int) -> socket.socket:
    """The replicas' shared port, bound once by `up`: every replica inherits this one socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise StartupFailed(f"cannot listen on {host}:{port} for the replicas: {e.strerror}") from e
    return sock


def redis(
    argv: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    data_dir: Path,
    address: tuple[str, int],
    control_password: str,
) -> Slot:
    def start() -> Child:
        return children.spawn("redis", argv, env=env, log_dir=log_dir, cwd=data_dir)

    def answers(child: Child) -> bool:
        client = redis_module.Redis(
            host=address[0], port=address[1], username="control", password=control_password,
            socket_connect_timeout=1.0, socket_timeout=2.0,
        )  # fmt: skip
        try:
            return bool(client.ping())
        except redis_module.RedisError:
            return False
        finally:
            client.close()

    return Slot("redis", "redis", start, answers)


def control(argv: Sequence[str], env: Mapping[str, str], log_dir: Path, cwd: Path, api_url: str) -> Slot:
    healthy = bootstrap.http_ok(f"{api_url}/healthz", timeout_s=1.0)

    def start() -> Child:
        return children.spawn("control", argv, env=env, log_dir=log_dir, cwd=cwd)

    return Slot("control", "control", start, lambda child: healthy())


def replica(name: str, fd: int, env: Mapping[str, str], state_dir: Path, log_dir: Path) -> Slot:
    ready_file = state_dir / "replicas" / f"{name}.ready"
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [*REPLICA, "--fd", str(fd), "--ready-file", str(ready_file)]

    def start() -> Child:
        ready_file.unlink(missing_ok=True)
        return children.spawn(name, argv, env=env, log_dir=log_dir, cwd=state_dir, pass_fds=(fd,))

    def accepting(child: Child) -> bool:
        try:
            return ready_file.read_text(encoding="ascii").strip() == str(child.pid)
        except OSError:
            return False

    return Slot(name, "replica", start, accepting)
