"""The local cluster's lifecycle: Redis, then the control plane, then N replicas on one shared port.

cluster = LocalCluster(config, environ=os.environ)
try:
    report = cluster.start()   # returns once every replica serves every example flow
    cluster.supervise()        # until SIGINT/SIGTERM or a child dies
finally:
    cluster.stop()             # replicas drain first, Redis stops last
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cluster.store.keys import Keys
from control.localcluster import acl, bootstrap, children, redis_server
from control.localcluster.bootstrap import ExampleFlow, Released, StartupFailed
from control.localcluster.children import Child
from control.localcluster.credentials import Credentials

log = logging.getLogger(__name__)

NAMESPACE = Keys().namespace  # the ACL template's key patterns are written for the default namespace
STOP_GRACE_S = 15.0
# The `flowfleet` command run by the interpreter running this one (works without the console script).
FLOWFLEET = (sys.executable, "-c", "from control.cli import entry; entry()")


@dataclass(frozen=True)
class UpConfig:
    replicas: int = 3
    host: str = "127.0.0.1"
    port: int = 8000
    control_port: int = 8700
    redis_port: int = 6380
    state_dir: Path = Path(".flowfleet")
    flows_dir: Path = Path("flows")
    acl_template: Path = acl.DEFAULT_TEMPLATE
    startup_timeout_s: float = 60.0


@dataclass(frozen=True)
class Report:
    """What `flowfleet up` prints: where everything is."""

    api_url: str
    replica_url: str
    redis_address: str
    redis_version: str
    acl_mode: str
    admin_token_file: Path
    state_dir: Path
    log_dir: Path
    replica_ids: tuple[str, ...]
    examples: tuple[ExampleFlow, ...]
    released: tuple[Released, ...]
    pids: dict[str, int] = field(default_factory=dict)


class LocalCluster:
    def __init__(self, config: UpConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        self.state_dir = config.state_dir.resolve()
        self.log_dir = self.state_dir / "logs"
        # Children inherit PATH and friends, never a FLOWFLEET_* setting meant for something else.
        self.base_env = {k: v for k, v in environ.items() if not k.startswith("FLOWFLEET_")}
        self.redis: list[Child] = []
        self.control: list[Child] = []
        self.workers: list[Child] = []

    @property
    def children(self) -> list[Child]:
        return [*self.redis, *self.control, *self.workers]

    def dead_child(self) -> str | None:
        for child in self.children:
            if not child.alive():
                tail = child.log_tail(1500).strip()
                return (
                    f"{child.name} exited with code {child.proc.returncode}; end of {child.log_path}:\n{tail}"
                )
        return None

    # -- start --------------------------------------------------------------------------------------
    def start(self) -> Report:
        c = self.config
        if c.replicas < 1:
            raise StartupFailed("--replicas must be at least 1")
        examples = bootstrap.read_examples(c.flows_dir) if c.flows_dir.is_dir() else []
        creds = Credentials.load_or_create(self.state_dir)
        binary = redis_server.find_redis_server()
        version = redis_server.server_version(binary)
        selectors = redis_server.supports_selectors(version)
        if not selectors:
            log.warning(
                "redis-server %s is older than 7.0: replicas get a reduced ACL (read-only key patterns need "
                "Redis 7), so they could also overwrite flowfleet keys with SET/ZADD; install Redis 7 for "
                "the full least-privilege setup",
                ".".join(map(str, version)),
            )
        self._start_redis(binary, creds, selectors)
        api_url = f"http://{c.host}:{c.control_port}"
        replica_url = f"http://{c.host}:{c.port}"
        self._start_control(creds, api_url)
        replica_ids = tuple(f"local-{i}" for i in range(1, c.replicas + 1))
        self._start_workers(creds, replica_ids)
        api = bootstrap.ControlApi(api_url, creds.admin_token)
        try:
            released = bootstrap.publish_examples(api, examples)
        finally:
            api.close()
        bootstrap.wait_until(
            f"all {c.replicas} replicas to serve the example flows on {replica_url}",
            bootstrap.replicas_converged(replica_url, set(replica_ids), released),
            self.dead_child,
            c.startup_timeout_s,
        )
        return Report(
            api_url=api_url,
            replica_url=replica_url,
            redis_address=f"{c.host}:{c.redis_port}",
            redis_version=".".join(map(str, version)),
            acl_mode="users worker + control (Redis 7 key selectors)" if selectors else "reduced (Redis < 7)",
            admin_token_file=self.state_dir / "admin-token",
            state_dir=self.state_dir,
            log_dir=self.log_dir,
            replica_ids=replica_ids,
            examples=tuple(examples),
            released=tuple(released),
            pids={child.name: child.pid for child in self.children},
        )

    def _start_redis(self, binary: Path, creds: Credentials, selectors: bool) -> None:
        c = self.config
        data_dir = self.state_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        aclfile = acl.render_file(
            c.acl_template, data_dir / "users.acl", creds.redis_passwords(), selectors=selectors
        )
        argv = redis_server.server_argv(
            binary, host=c.host, port=c.redis_port, data_dir=data_dir, aclfile=aclfile
        )
        self.redis = [children.spawn("redis", argv, env=self.base_env, log_dir=self.log_dir, cwd=data_dir)]
        client = redis.Redis(
            host=c.host, port=c.redis_port, username="control", password=creds.control_password,
            socket_connect_timeout=1.0, socket_timeout=2.0,
        )  # fmt: skip

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            bootstrap.wait_until(f"redis-server on port {c.redis_port}", answers, self.dead_child, 20.0)
        finally:
            client.close()

    def _env(self, user: str, password: str, **extra: str) -> dict[str, str]:
        c = self.config
        return {
            **self.base_env,
            "FLOWFLEET_REDIS_URL": acl.redis_url(c.host, c.redis_port, user, password),
            "FLOWFLEET_NAMESPACE": NAMESPACE,
            **extra,
        }

    def _start_control(self, creds: Credentials, api_url: str) -> None:
        c = self.config
        env = self._env("control", creds.control_password, FLOWFLEET_ADMIN_TOKEN=creds.admin_token)
        argv = [*FLOWFLEET, "control", "--host", c.host, "--port", str(c.control_port)]
        self.control = [children.spawn("control", argv, env=env, log_dir=self.log_dir, cwd=self.state_dir)]
        bootstrap.wait_until(
            f"the control plane on {api_url}", bootstrap.http_ok(f"{api_url}/healthz"), self.dead_child, 30.0
        )

    def _start_workers(self, creds: Credentials, replica_ids: tuple[str, ...]) -> None:
        c = self.config
        argv = [
            sys.executable,
            "-m",
            "control.cli",
            "worker",
            "--reuse-port",
            "--host",
            c.host,
            "--port",
            str(c.port),
        ]
        for replica_id in replica_ids:
            env = self._env("worker", creds.worker_password, FLOWFLEET_REPLICA_ID=replica_id)
            self.workers.append(
                children.spawn(replica_id, argv, env=env, log_dir=self.log_dir, cwd=self.state_dir)
            )

    # -- run and stop -------------------------------------------------------------------------------
    def supervise(self) -> str:
        """Block until SIGINT/SIGTERM (returns its name) or until a child exits (raises StartupFailed)."""
        watched = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            while True:
                dead = self.dead_child()
                if dead:
                    raise StartupFailed(f"{dead}")
                info = signal.sigtimedwait(watched, 1.0)
                if info is not None and info.si_signo != signal.SIGCHLD:
                    return signal.Signals(info.si_signo).name
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def stop(self) -> None:
        """Replicas first (they drain in-flight runs), then the control plane, then Redis (AOF flushed)."""
        for group in (self.workers, self.control, self.redis):
            children.stop_all(group, STOP_GRACE_S)
