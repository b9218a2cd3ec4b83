"""Real Redis high-availability topologies on loopback, for tests: Sentinel and Redis Cluster.

Both are built from the installed `redis-server` (7.x), with short failure-detection timings so a
failover completes in seconds, and both can lose a primary to SIGKILL:

    topo = SentinelTopology(replicas=2).start()     # primary + 2 replicas + 3 sentinels
    topo.url()                                       # redis+sentinel://127.0.0.1:p1,.../flowfleet/0
    old = topo.kill_primary(); new = topo.wait_promotion(old)

    topo = ClusterTopology().start()                 # 3 primaries, 3 replicas (--cluster-replicas 1)
    topo.url()                                       # redis+cluster://127.0.0.1:p1,127.0.0.1:p2/

With `users` (name -> ACL rule text, see `acl_users`), every data node loads an ACL file: the worker and
control users of compose/redis/users.acl plus the HA users (`replication`, `sentinel`, `admin`), and the
sentinels require their own `flowfleet` user. Timings: Sentinel `down-after-milliseconds` 1000, Cluster
`cluster-node-timeout` 2000.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from control.localcluster import acl
from tests.redis_server import RedisServer, find_redis_server, free_port

SERVICE = "flowfleet"
DOWN_AFTER_MS = 1000
NODE_TIMEOUT_MS = 2000
# The sentinels' users and how they log in to the nodes and to each other, as compose deploys them.
SENTINEL_TEMPLATE = acl.HA_TEMPLATE.with_name("sentinel-auth.conf")


def sentinel_auth(passwords: Mapping[str, str]) -> str:
    """compose/redis/sentinel-auth.conf with the passwords filled in (as compose/redis/sentinel-start.sh)."""
    text = SENTINEL_TEMPLATE.read_text(encoding="utf-8")
    for placeholder, value in (
        ("__SENTINEL_PASSWORD_SHA256__", acl.password_sha256(passwords["sentinel"])),
        ("__SENTINEL_CLIENT_PASSWORD_SHA256__", acl.password_sha256(passwords["client"])),
        ("__SENTINEL_PASSWORD__", passwords["sentinel"]),
    ):
        text = text.replace(placeholder, value)
    return text


def ha_passwords() -> dict[str, str]:
    """A fresh password for every user a topology with ACLs needs."""
    return {name: secrets.token_urlsafe(18) for name in (*acl.USERS, *acl.HA_USERS, "admin", "client")}


def acl_file(directory: Path, passwords: Mapping[str, str]) -> Path:
    """The data nodes' ACL file: compose/redis/users.acl, compose/redis/ha-users.acl, and a test admin."""
    base = acl.render(acl.DEFAULT_TEMPLATE.read_text(encoding="utf-8"), passwords)
    ha = acl.render(acl.HA_TEMPLATE.read_text(encoding="utf-8"), passwords, users=acl.HA_USERS)
    admin = f"user admin on #{acl.password_sha256(passwords['admin'])} ~* &* +@all\n"
    path = directory / "users.acl"
    path.write_text(base + ha + admin, encoding="utf-8")
    return path


def acl_refusals(topo: _Topology, ignored: frozenset[str] = frozenset({"client|setinfo"})) -> list[str]:
    """What the live nodes' ACL LOG holds (user, command or key), but what redis-py tries and shrugs
    off (CLIENT SETINFO, unknown to Redis 7.0): the users' grants must cover everything they did."""
    refusals = []
    for node in topo.nodes:
        if node.proc is None or node.proc.poll() is not None:
            continue
        with contextlib.closing(topo.admin(node.port)) as c:
            for entry in c.acl_log(count=100):
                if entry["object"] not in ignored:
                    refusals.append(f"{node.port} {entry['username']}: {entry['reason']} {entry['object']}")
    return refusals


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.05) -> Any:
    """Bounded polling: the first truthy value `probe` returns, or AssertionError past `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (redis.RedisError, OSError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class _Topology:
    def __init__(self, passwords: Mapping[str, str] | None) -> None:
        self.passwords = dict(passwords) if passwords else None
        self.dir = Path(tempfile.mkdtemp(prefix="flowfleet-topology-"))
        self.nodes: list[RedisServer] = []

    def _node_args(self) -> list[str]:
        # A replica's first sync starts at once (the default waits 5 s for more replicas to join it).
        args = ["--repl-diskless-sync-delay", "0"]
        if self.passwords is None:
            return args
        aclpath = self.dir / "users.acl"
        if not aclpath.exists():
            acl_file(self.dir, self.passwords)
        return [
            *args, "--aclfile", str(aclpath),
            "--masteruser", "replication", "--masterauth", self.passwords["replication"],
        ]  # fmt: skip

    def admin(self, port: int, **kwargs: Any) -> redis.Redis:
        """A synchronous client with every right (the test's own `admin` user when ACLs are on)."""
        auth = {} if self.passwords is None else {"username": "admin", "password": self.passwords["admin"]}
        return redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1, **auth, **kwargs
        )

    def _userinfo(self, user: str | None) -> str:
        if user is None:
            return ""
        assert self.passwords is not None, "this topology has no ACL users"
        return f"{user}:{self.passwords[user]}@"

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.resume()  # a frozen server cannot act on SIGTERM
                node.proc.terminate()  # all at once; stop() below waits for each
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelProcess:
    """`redis-server sentinel.conf --sentinel` on a free port, monitoring `SERVICE`."""

    def __init__(self, directory: Path, primary_port: int, passwords: Mapping[str, str] | None) -> None:
        self.port = free_port()
        self.dir = directory / f"sentinel-{self.port}"
        self.dir.mkdir(parents=True)
        lines = [
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}", f"logfile {self.dir / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} 10000",
            f"sentinel parallel-syncs {SERVICE} 2",
        ]  # fmt: skip
        self.config = self.dir / "sentinel.conf"
        auth = "" if passwords is None else sentinel_auth(passwords)
        self.config.write_text("\n".join(lines) + "\n" + auth, encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        args = [find_redis_server(), str(self.config), "--sentinel"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _answers(self.port), f"sentinel on port {self.port}", timeout=10)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


class SentinelTopology(_Topology):
    """One primary, `replicas` replicas, three sentinels (quorum 2)."""

    def __init__(self, replicas: int = 2, passwords: Mapping[str, str] | None = None) -> None:
        super().__init__(passwords)
        self.replica_count = replicas
        self.sentinels: list[SentinelProcess] = []

    def start(self) -> SentinelTopology:
        try:
            return self._start()
        except BaseException:
            self.stop()  # what did start must not outlive a failed start
            raise

    def _start(self) -> SentinelTopology:
        primary = RedisServer(*self._node_args())
        self.nodes.append(primary)
        primary.start()
        for _ in range(self.replica_count):
            self.nodes.append(RedisServer(*self._node_args(), "--replicaof", "127.0.0.1", str(primary.port)))
            self.nodes[-1].start()
        replicas = [node.port for node in self.nodes[1:]]
        wait_for(lambda: in_sync(self.admin, primary.port, replicas), f"replicas {replicas} in sync")
        for _ in range(3):
            self.sentinels.append(SentinelProcess(self.dir, primary.port, self.passwords))
            self.sentinels[-1].start()
        for s in self.sentinels:
            wait_for(lambda s=s: self._sentinel_sees_all(s.port), f"sentinel {s.port} to see everyone")
        return self

    def _sentinel(self, port: int) -> redis.Redis:
        auth = (
            {} if self.passwords is None else {"username": "flowfleet", "password": self.passwords["client"]}
        )
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1, **auth)

    def _sentinel_sees_all(self, port: int) -> bool:
        with contextlib.closing(self._sentinel(port)) as s:
            state = s.sentinel_master(SERVICE)
            return bool(
                int(state["num-slaves"]) == self.replica_count and int(state["num-other-sentinels"]) == 2
            )

    def url(self, user: str | None = None, *, scheme: str = "redis+sentinel") -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{scheme}://{self._userinfo(user)}{hosts}/{SERVICE}/0"

    @property
    def sentinel_env(self) -> dict[str, str]:
        """The companion settings naming the sentinels' own user (empty without ACLs)."""
        if self.passwords is None:
            return {}
        return {
            "FLOWFLEET_REDIS_SENTINEL_USERNAME": "flowfleet",
            "FLOWFLEET_REDIS_SENTINEL_PASSWORD": self.passwords["client"],
        }

    def primary_port(self) -> int:
        """The primary as a majority of the sentinels report it."""
        ports = []
        for s in self.sentinels:
            with (
                contextlib.suppress(redis.RedisError, OSError),
                contextlib.closing(self._sentinel(s.port)) as c,
            ):
                ports.append(int(c.sentinel_get_master_addr_by_name(SERVICE)[1]))
        return max(set(ports), key=ports.count)

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def kill_primary(self) -> RedisServer:
        node = self.node(self.primary_port())
        node.kill()
        return node

    def wait_promotion(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Until every sentinel names another primary and that node says it is one."""

        def promoted() -> RedisServer | None:
            ports = set()
            for s in self.sentinels:
                with contextlib.closing(self._sentinel(s.port)) as c:
                    ports.add(int(c.sentinel_get_master_addr_by_name(SERVICE)[1]))
            if len(ports) != 1 or old.port in ports:
                return None
            new = self.node(ports.pop())
            with contextlib.closing(self.admin(new.port)) as c:
                return new if c.info("replication")["role"] == "master" else None

        found: RedisServer = wait_for(promoted, "a sentinel promotion", timeout=timeout, every=0.02)
        return found

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        super().stop()


class ClusterTopology(_Topology):
    """`primaries` primaries with `replicas_each` replicas each, made by `redis-cli --cluster create`."""

    def __init__(
        self, primaries: int = 3, replicas_each: int = 1, passwords: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(passwords)
        self.size = primaries * (1 + replicas_each)
        self.replicas_each = replicas_each

    def start(self) -> ClusterTopology:
        try:
            return self._start()
        except BaseException:
            self.stop()  # what did start must not outlive a failed start
            raise

    def _start(self) -> ClusterTopology:
        for _ in range(self.size):
            # An explicit bus port: the default (port + 10000) overflows for ephemeral ports above 55535.
            # A replica is listed in CLUSTER SLOTS once its replication offset moved: ping it every second.
            args = ["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--repl-ping-replica-period", "1",
                    *self._node_args()]  # fmt: skip
            self.nodes.append(RedisServer(*args))
            self.nodes[-1].start()
        cli = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
        auth = [] if self.passwords is None else ["--user", "admin", "--pass", self.passwords["admin"]]
        subprocess.run(
            [cli, *auth, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas_each), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        for node in self.nodes:
            wait_for(lambda n=node: self._settled(n.port), f"cluster node {node.port} to settle")
        return self

    def _settled(self, port: int) -> bool:
        with contextlib.closing(self.admin(port)) as c:
            info = c.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or f"cluster_known_nodes:{self.size}" not in text:
                return False
            role = c.info("replication")
            if role["role"] != "master" and role.get("master_link_status") != "up":
                return False
            slots = c.execute_command("CLUSTER", "SLOTS")
            return all(len(entry) - 3 == self.replicas_each for entry in slots)

    def url(self, user: str | None = None, *, scheme: str = "redis+cluster", seeds: int = 2) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:seeds])
        return f"{scheme}://{self._userinfo(user)}{hosts}/"

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def slot_owner(self, key: str) -> RedisServer:
        """The primary serving `key`'s slot, as a live node reports it."""
        with contextlib.closing(self.admin(self.alive()[0].port)) as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no node serves the slot of {key}")

    def wait_promotion(self, old: RedisServer, key: str, timeout: float = 30.0) -> RedisServer:
        """Until a live node serves `key`'s slot as a primary with the cluster ok again."""

        def promoted() -> RedisServer | None:
            owner = self.slot_owner(key)
            if owner.port == old.port:
                return None
            with contextlib.closing(self.admin(owner.port)) as c:
                ok = b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO")
                return owner if ok and c.info("replication")["role"] == "master" else None

        found: RedisServer = wait_for(promoted, "a cluster failover", timeout=timeout, every=0.02)
        return found

    def rejoin(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Restart a killed node with its nodes.conf: it comes back as a replica of whoever took over."""
        node.start()

        def replicating() -> bool:
            with contextlib.closing(self.admin(node.port)) as c:
                info = c.info("replication")
            return info["role"] == "slave" and info.get("master_link_status") == "up"

        wait_for(replicating, f"node {node.port} to rejoin as a replica", timeout=timeout)
        wait_for(lambda: self._settled(node.port), f"node {node.port} to settle", timeout=timeout)


def _answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))


def _link_up(client: redis.Redis) -> bool:
    with contextlib.closing(client):
        return client.info("replication").get("master_link_status") == "up"


def _acknowledged(primary: redis.Redis, replicas: int) -> bool:
    """Whether `replicas` replicas acknowledge a write on the primary within 100 ms. A replica reports
    its link up before it acknowledges anything (after a diskless sync it may not answer the primary's
    GETACK until its own periodic ACK), and until then WAIT does not count it."""
    with contextlib.closing(primary):
        primary.incr("flowfleet-test:replication-probe")
        return int(primary.execute_command("WAIT", replicas, 100)) >= replicas


def in_sync(admin: Callable[[int], redis.Redis], primary_port: int, replica_ports: list[int]) -> bool:
    """Every replica on `replica_ports` replicates the primary, as both sides see it."""
    if not all(_link_up(admin(port)) for port in replica_ports):
        return False
    return _acknowledged(admin(primary_port), len(replica_ports))


@contextlib.contextmanager
def frozen(node: RedisServer) -> Iterator[None]:
    """SIGSTOP for the duration of the block (SIGCONT on the way out, whatever happens)."""
    assert node.proc is not None
    node.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        node.proc.send_signal(signal.SIGCONT)


_SHARED: dict[str, Any] = {"cluster": None, "users": 0}


@pytest.fixture(scope="session")
def acl_cluster() -> Iterator[ClusterTopology]:
    """One 3-primary, 3-replica cluster with the ACL users for the whole session: tests use their own flow
    names and never kill its nodes (the failover tests build their own). Each test module that imports
    this fixture gets its own session fixture from pytest; they share the cluster, the last one stops it."""
    if _SHARED["cluster"] is None:
        _SHARED["cluster"] = ClusterTopology(passwords=ha_passwords()).start()
    _SHARED["users"] += 1
    yield _SHARED["cluster"]
    _SHARED["users"] -= 1
    if _SHARED["users"] == 0:
        _SHARED["cluster"].stop()
        _SHARED["cluster"] = None
