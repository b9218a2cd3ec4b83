"""The local cluster's lifecycle: Redis, then the control plane, then N replicas on one shared port.

cluster = LocalCluster(config, environ=os.environ)
try:
    report = cluster.start()       # returns once every replica serves every example flow
    cluster.supervise(on_change)   # restarts what dies, scales on request; until SIGINT/SIGTERM
finally:
    cluster.stop()                 # replicas drain first, Redis stops last
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cluster.settings import Settings
from cluster.store.keys import Keys
from control.localcluster import acl, bootstrap, external, redis_server, runstate, slots
from control.localcluster.bootstrap import ExampleFlow, Released, StartupFailed
from control.localcluster.children import Child
from control.localcluster.credentials import Credentials
from control.localcluster.environment import CLIENT_ONLY, ChildEnvironment, child_environment
from control.localcluster.runstate import FleetStatus, RunLock
from control.localcluster.supervisor import Slot, Supervisor

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
    # A Redis, Sentinel or Cluster that runs already (`--redis-url`): `up` starts no redis-server then.
    redis_url: str | None = None


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
    environment: ChildEnvironment = field(default_factory=lambda: child_environment({}, Path("/")))


class LocalCluster:
    def __init__(self, config: UpConfig, environ: Mapping[str, str], cwd: Path | None = None) -> None:
        self.config = config
        self.state_dir = config.state_dir.resolve()
        self.log_dir = self.state_dir / "logs"
        self.env = child_environment(environ, cwd or Path.cwd())
        self.lock = RunLock(self.state_dir)
        self.listener: socket.socket | None = None
        self.creds: Credentials | None = None
        self.fleet = Supervisor(
            infra=[],
            replicas=[],
            new_replica=self._replica_slot,
            on_change=self._write_status,
            take_scale_request=lambda: runstate.take_scale_request(self.state_dir),
            stop_grace_s=STOP_GRACE_S,
        )

    @property
    def children(self) -> list[Child]:
        return [slot.child for slot in self.fleet.slots if slot.child is not None]

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
        self._check_settings()
        try:
            self.lock.acquire()
        except runstate.AlreadyRunning as e:
            raise StartupFailed(str(e)) from e
        self._write_status()  # replaces whatever an earlier `up` left behind
        for name in self.env.ignored:
            why = (
                "only the CLI reads it" if name in CLIENT_ONLY else "flowfleet up sets the local fleet's own"
            )
            log.warning("ignoring %s from your environment: %s", name, why)
        self.listener = slots.listening_socket(c.host, c.port)
        self.creds = creds = Credentials.load_or_create(self.state_dir)
        external.remember(self.state_dir, c.redis_url)
        if c.redis_url is None:
            redis_address, redis_version, acl_mode = self._own_redis(creds)
        else:
            redis_address, redis_version = external.probe(c.redis_url, self.env.base)
            acl_mode = "the user --redis-url names, for the control plane and every replica"
        api_url = f"http://{c.host}:{c.control_port}"
        replica_url = f"http://{c.host}:{c.port}"
        self._start(self._control_slot(creds, api_url), f"the control plane on {api_url}", 30.0)
        self.fleet.scale(c.replicas)
        api = bootstrap.ControlApi(api_url, creds.admin_token)
        try:
            released = bootstrap.publish_examples(api, examples)
        finally:
            api.close()
        replica_ids = tuple(slot.name for slot in self.fleet.replicas)
        bootstrap.wait_until(
            f"all {c.replicas} replicas to serve the example flows on {replica_url}",
            bootstrap.replicas_converged(replica_url, set(replica_ids), released),
            self.dead_child,
            c.startup_timeout_s,
        )
        bootstrap.wait_until(
            "every replica to accept connections", self._all_accepting, self.dead_child, c.startup_timeout_s
        )
        self._write_status()
        return Report(
            api_url=api_url,
            replica_url=replica_url,
            redis_address=redis_address,
            redis_version=redis_version,
            acl_mode=acl_mode,
            admin_token_file=self.state_dir / "admin-token",
            state_dir=self.state_dir,
            log_dir=self.log_dir,
            replica_ids=replica_ids,
            examples=tuple(examples),
            released=tuple(released),
            pids={child.name: child.pid for child in self.children},
            environment=self.env,
        )

    def _all_accepting(self) -> bool:
        for slot in self.fleet.replicas:
            if slot.state == "starting" and slot.child is not None and slot.ready(slot.child):
                slot.state = "serving"
        return all(slot.state == "serving" for slot in self.fleet.slots)

    def _check_settings(self) -> None:
        """Fail before starting anything on a setting the children would refuse."""
        Settings.from_env(self.env.base)
        for name, path in (("FLOWFLEET_TOKENS_FILE", self.env.tokens_file),
                           ("FLOWFLEET_RUN_TOKENS_FILE", self.env.run_tokens_file)):  # fmt: skip
            if path is not None and not path.is_file():
                raise StartupFailed(f"{name}={path}: no such file")

    def _start(self, slot: Slot, what: str, timeout_s: float) -> None:
        self.fleet.infra.append(slot)
        slot.spawn()
        child = slot.child
        assert child is not None
        bootstrap.wait_until(what, lambda: slot.ready(child), self.dead_child, timeout_s)
        slot.state = "serving"

    def _own_redis(self, creds: Credentials) -> tuple[str, str, str]:
        """Start the fleet's own redis-server (AOF, the ACL users): its address, version and ACL mode."""
        c = self.config
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
        self._start(self._redis_slot(binary, creds, selectors), f"redis-server on port {c.redis_port}", 20.0)
        acl_mode = "users worker + control (Redis 7 key selectors)" if selectors else "reduced (Redis < 7)"
        return f"{c.host}:{c.redis_port}", ".".join(map(str, version)), acl_mode

    def _redis_slot(self, binary: Path, creds: Credentials, selectors: bool) -> Slot:
        c = self.config
        data_dir = self.state_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        aclfile = acl.render_file(
            c.acl_template, data_dir / "users.acl", creds.redis_passwords(), selectors=selectors
        )
        argv = redis_server.server_argv(
            binary, host=c.host, port=c.redis_port, data_dir=data_dir, aclfile=aclfile
        )
        address = (c.host, c.redis_port)
        return slots.redis(argv, self.env.base, self.log_dir, data_dir, address, creds.control_password)

    def _env(self, user: str, password: str, **extra: str) -> dict[str, str]:
        c = self.config
        return {
            **self.env.base,
            "FLOWFLEET_REDIS_URL": c.redis_url or acl.redis_url(c.host, c.redis_port, user, password),
            "FLOWFLEET_NAMESPACE": NAMESPACE,
            **extra,
        }

    def _control_slot(self, creds: Credentials, api_url: str) -> Slot:
        c = self.config
        env = self._env("control", creds.control_password, FLOWFLEET_ADMIN_TOKEN=creds.admin_token)
        argv = [*FLOWFLEET, "control", "--host", c.host, "--port", str(c.control_port)]
        return slots.control(argv, env, self.log_dir, self.state_dir, api_url)

    def _replica_slot(self, name: str) -> Slot:
        assert self.listener is not None and self.creds is not None
        env = self._env("worker", self.creds.worker_password, FLOWFLEET_REPLICA_ID=name)
        return slots.replica(name, self.listener.fileno(), env, self.state_dir, self.log_dir)

    # -- run and stop -------------------------------------------------------------------------------
    def status(self, *, running: bool = True) -> FleetStatus:
        c = self.config
        return FleetStatus(
            pid=os.getpid(),
            api_url=f"http://{c.host}:{c.control_port}",
            replica_url=f"http://{c.host}:{c.port}",
            redis_host=c.host,
            redis_port=c.redis_port,
            wanted=self.fleet.wanted,
            children=self.fleet.statuses(),
            running=running,
        )

    def _write_status(self) -> None:
        runstate.write_status(self.state_dir, self.status())

    def supervise(self, on_change: Callable[[FleetStatus], None] = lambda status: None) -> str:
        """Block until SIGINT/SIGTERM (returns its name), restarting children that die."""

        def changed() -> None:
            status = self.status()
            runstate.write_status(self.state_dir, status)
            on_change(status)

        self.fleet.on_change = changed
        return self.fleet.run()

    def stop(self) -> None:
        """Replicas first (they drain in-flight runs), then the control plane, then Redis (AOF flushed)."""
        self.fleet.stop()
        if self.listener is not None:
            self.listener.close()
        if self.lock.handle is not None:
            runstate.write_status(self.state_dir, self.status(running=False))
            self.lock.release()
