"""FLOWFLEET_REDIS_URL names one node, a Sentinel-managed primary or a Redis Cluster (cluster.store.topology),
the one factory builds redis-py's own client for each (cluster.store.redis_conn), release changes wait
for a replica's acknowledgement where one is required (cluster.store.replication), and `flowfleet up
--redis-url` runs the local fleet on a topology it did not start."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.flow.hashing import content_address
from cluster.settings import Settings, SettingsError
from cluster.store.keys import Keys
from cluster.store.redis_conn import connect, open_pubsub
from cluster.store.replication import RedisUnreplicated, ReplicaWait
from cluster.store.store import Store
from cluster.store.topology import InvalidRedisUrl, describe, parse, redact
from control.cli.up import READY_LINE
from tests import redis_topologies
from tests.redis_server import RedisServer, free_port
from tests.redis_topologies import ClusterTopology, SentinelTopology, frozen, ha_passwords

acl_cluster = redis_topologies.acl_cluster  # the session's shared cluster (a fixture)
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "service", "db", "user", "password"),
    [
        ("redis://cache:6379/2", "single", (), None, 0, None, None),
        ("unix:///run/redis.sock?db=1", "single", (), None, 0, None, None),
        ("redis+sentinel://s1,s2:26380,[::1]:26381/mymaster", "sentinel",
         (("s1", 26379), ("s2", 26380), ("::1", 26381)), "mymaster", 0, None, None),
        ("redis+sentinel://control:p%40ss@s1:26379/flowfleet/3", "sentinel",
         (("s1", 26379),), "flowfleet", 3, "control", "p@ss"),
        ("rediss+cluster://worker:pw@h1:7000,h2/", "cluster", (("h1", 7000), ("h2", 6379)), None, 0,
         "worker", "pw"),
        ("redis+cluster://h1:7000?ssl_ca_certs=/ca.crt", "cluster", (("h1", 7000),), None, 0, None, None),
    ],
)  # fmt: skip
def test_urls_name_the_three_topologies(
    url: str, kind: str, nodes: tuple[tuple[str, int], ...], service: str | None, db: int, user: str | None,
    password: str | None,
) -> None:  # fmt: skip
    target = parse(url)
    assert (target.kind, target.nodes, target.service, target.db) == (kind, nodes, service, db)
    assert (target.username, target.password) == (user, password)
    assert target.has_failover == (kind != "single")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis+sentinel://s1:26379", "names no Sentinel service"),
        ("redis+sentinel://s1:26379/svc/zero", "the database must be a number"),
        ("redis+sentinel:///svc", "names no sentinel"),
        ("redis+cluster://h1:7000/3", "only database 0"),
        ("redis+cluster://h1:port/", "'port' is not a port"),
        ("redis+cluster://h1:7000/?socket_timeout=1", "unknown option(s) socket_timeout"),
        ("rediss+sentinel://u:hunter2@s1/svc/x", "u:***@s1"),
        ("memcached://cache", "unsupported Redis URL scheme 'memcached'"),
    ],
)
def test_bad_urls_fail_at_once_and_never_show_the_password(url: str, fragment: str) -> None:
    with pytest.raises(InvalidRedisUrl) as caught:
        connect(url)
    assert fragment in str(caught.value) and "hunter2" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_descriptions_and_redaction_never_show_a_password() -> None:
    url = "redis+sentinel://control:s3cret@10.0.0.1,10.0.0.2/flowfleet/0"
    assert redact(url) == "redis+sentinel://control:***@10.0.0.1,10.0.0.2/flowfleet/0"
    assert (
        describe(parse(url)) == "Sentinel service flowfleet (sentinels 10.0.0.1:26379, 10.0.0.2:26379; db 0)"
    )
    assert "s3cret" not in describe(parse("rediss+cluster://u:s3cret@h1:7000/"))


@pytest.mark.parametrize(
    ("url", "setting", "wanted"),
    [
        ("redis://h:6379/0", "auto", 0),  # one node: a WAIT 1 would block for its whole timeout
        ("redis+sentinel://s1/svc", "auto", 1),
        ("redis+cluster://h1:7000/", "auto", 1),
        ("redis://managed:6379/0", "1", 1),  # a managed Redis with a replica behind one address
        ("redis+cluster://h1:7000/", "0", 0),  # accept unreplicated changes
    ],
)
def test_how_many_replicas_must_acknowledge(url: str, setting: str, wanted: int) -> None:
    settings = Settings.from_env({"FLOWFLEET_REDIS_URL": url, "FLOWFLEET_REDIS_MIN_REPLICAS": setting})
    assert ReplicaWait.from_settings(settings).replicas == wanted
    with pytest.raises(SettingsError, match="FLOWFLEET_REDIS_MIN_REPLICAS"):
        ReplicaWait.from_settings(Settings(redis_min_replicas="some"))


@pytest.fixture
def primary_and_replica(make_redis_server: Callable[..., RedisServer]) -> tuple[RedisServer, RedisServer]:
    primary = make_redis_server("--repl-diskless-sync-delay", "0")
    replica = make_redis_server("--replicaof", "127.0.0.1", str(primary.port))
    admin = redis_topologies._Topology(None).admin
    redis_topologies.wait_for(
        lambda: redis_topologies.in_sync(admin, primary.port, [replica.port]), "the replica in sync"
    )
    return primary, replica


async def test_wait_counts_the_activations_own_connection(
    primary_and_replica: tuple[RedisServer, RedisServer], namespace: str
) -> None:
    """WAIT after the activation script, in one pipeline: a frozen replica makes the activation answer
    RedisUnreplicated after the WAIT timeout (the record is written on the primary all the same); with
    no replica required, nothing waits. On a replica-less node WAIT 1 blocks its whole timeout, which is
    why `auto` asks a single-node URL for no acknowledgement."""
    primary, replica = primary_and_replica
    client = connect(primary.url, retries=1)
    keys = Keys(namespace)
    acknowledged = Store(client, keys, replica_wait=ReplicaWait(1, 300))
    unacknowledged = Store(client, keys)
    try:
        data, digest = content_address({"n": 1})
        await acknowledged.publish("qa", data, digest, author="ci", message="", node_count=1)
        started = time.monotonic()
        assert (await acknowledged.activate("qa", digest, by="ci", reason="")).generation == 1
        replicated_s = time.monotonic() - started
        with frozen(replica):
            started = time.monotonic()
            with pytest.raises(RedisUnreplicated) as caught:
                await acknowledged.activate("qa", digest, by="ci", reason="")
            refused_s = time.monotonic() - started
            assert caught.value.http_status == 503 and caught.value.details["generation"] == 2
            release = await unacknowledged.get_release("qa")
            assert release is not None and release.generation == 2  # written, not acknowledged
            started = time.monotonic()
            assert (await unacknowledged.activate("qa", digest, by="ci", reason="")).generation == 3
            accepted_s = time.monotonic() - started
        lonely = aioredis.Redis(port=replica.port)  # a replica-less node: promote the replica
        await lonely.execute_command("REPLICAOF", "NO", "ONE")
        started = time.monotonic()
        assert await lonely.execute_command("WAIT", 1, 300) == 0
        blocked_s = time.monotonic() - started
        await lonely.aclose()
    finally:
        await client.aclose()
    print(
        f"WAIT 1: acknowledged in {replicated_s * 1000:.1f} ms; replica frozen: refused after "
        f"{refused_s * 1000:.0f} ms (WAIT 300 ms), accepted unreplicated in {accepted_s * 1000:.1f} ms; "
        f"a node without replicas blocks WAIT 1 300 for {blocked_s * 1000:.0f} ms"
    )
    assert refused_s >= 0.3 > accepted_s and blocked_s >= 0.3


async def test_publish_reaches_every_node_and_is_measured_against_spublish(
    acl_cluster: ClusterTopology,
) -> None:
    """Why events use PUBLISH on a Cluster: one PUBLISH reaches a subscriber on any node (primary or
    replica), where SPUBLISH reaches only the shard of its channel, which the activation script could use
    only with one channel per flow (its keys' slot), so replicas would have to SSUBSCRIBE per flow and
    still miss flows created later. Both are measured here: delivery to 6 subscribers, and to 1."""
    client = connect(acl_cluster.url("admin"), retries=1)  # shard channels are outside the ACL grants
    channel = Keys().channel()
    pubsubs = [await open_pubsub(client, n) for n in range(len(acl_cluster.nodes))]
    shard_channel = f"{Keys().flow_prefix('latency')}events"
    sharded = client.pubsub()
    try:
        for p in pubsubs:
            await p.subscribe(channel)
            assert (await p.get_message(timeout=2))["type"] == "subscribe"
        await sharded.ssubscribe(shard_channel)
        assert (await sharded.get_sharded_message(timeout=2))["type"] == "ssubscribe"
        plain, shard = [], []
        for _ in range(100):
            started = time.perf_counter()
            await client.publish(channel, b"x")
            for p in pubsubs:
                while (m := await p.get_message(timeout=2)) is None or m["type"] != "message":
                    assert m is not None, "a node's subscriber got nothing"
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            await client.spublish(shard_channel, b"x")
            while (m := await sharded.get_sharded_message(timeout=2)) is None or m["type"] != "smessage":
                assert m is not None
            shard.append(time.perf_counter() - started)
    finally:
        for p in [*pubsubs, sharded]:
            await p.aclose()
        await client.aclose()
    plain.sort()
    shard.sort()
    print(
        f"PUBLISH to subscribers on all 6 nodes: p50 {plain[50] * 1000:.2f} ms, p99 {plain[98] * 1000:.2f} "
        f"ms; SPUBLISH to 1 subscriber of its shard: p50 {shard[50] * 1000:.2f} ms, p99 "
        f"{shard[98] * 1000:.2f} ms"
    )


@pytest.fixture
def sentinel() -> Iterator[SentinelTopology]:
    topo = SentinelTopology(replicas=1, passwords=ha_passwords()).start()
    yield topo
    topo.stop()


def test_up_runs_the_local_fleet_on_a_sentinel_topology(sentinel: SentinelTopology, tmp_path: Path) -> None:
    """`flowfleet up --redis-url redis+sentinel://...` starts no Redis, runs the control plane and a
    replica on the sentinels' primary (companion settings pass through), and `flowfleet redis-cli` opens
    the primary the sentinels name."""
    state_dir, port = tmp_path / ".flowfleet", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFLEET_")} | sentinel.sentinel_env
    flowfleet = [sys.executable, "-c", "from control.cli import entry; entry()"]
    argv = [*flowfleet, "up", "--replicas", "1", "--port", str(port), "--control-port", str(free_port()),
            "--redis-url", sentinel.url("control"), "--flows", str(ROOT / "flows"),
            "--state-dir", str(state_dir)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = read_until_ready(proc, timeout=90)
        assert any("redis           Sentinel service flowfleet" in line for line in output), output
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2  # the control plane and one replica: no redis-server
        flows = httpx.get(f"http://127.0.0.1:{port}/v1/flows", timeout=5).json()["flows"]
        assert {f["flow"] for f in flows} >= {"support_qa"}
        member = [Keys().flows(), "support_qa"]
        cli = subprocess.run(
            [*flowfleet, "redis-cli", "--state-dir", str(state_dir), "SISMEMBER", *member],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert cli.stdout.strip() == "1", cli
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0


def read_until_ready(proc: subprocess.Popen[bytes], timeout: float) -> list[str]:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    lines: list[str] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not any(line.startswith(READY_LINE) for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(lines)
            if selector.select(timeout=1.0):
                buffer += proc.stdout.read() or b""
                *done, buffer = buffer.split(b"\n")
                lines += [line.decode() for line in done]
    return lines


def test_sentinel_and_cluster_urls_build_redis_pys_own_clients() -> None:
    sentinel_client = connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/flowfleet/2", socket_timeout=3.0)
    pool = sentinel_client.connection_pool
    assert type(pool).__name__ == "SentinelConnectionPool" and pool.service_name == "flowfleet"
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["socket_timeout"] == 3.0
    cluster_client = connect("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/")
    assert isinstance(cluster_client, aioredis.RedisCluster)
    asyncio.run(sentinel_client.aclose())
    asyncio.run(cluster_client.aclose())


async def test_an_unreachable_cluster_is_a_connection_error_like_any_unreachable_redis() -> None:
    """redis-py raises RedisClusterUnreachableError (not a RedisError) when no node answers; the factory's
    client raises ConnectionError instead, which the replica's heartbeat, session pins, memory and loader
    already survive (a heartbeat once died of the former: it stopped for good after a total outage)."""
    client = connect(f"redis+cluster://127.0.0.1:{free_port()}/", retries=1, connect_timeout=0.5)
    try:
        with pytest.raises(RedisConnectionError, match="Redis Cluster unreachable"):
            await client.get("k")
        with pytest.raises(RedisConnectionError, match="Redis Cluster unreachable"):
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("a")
                await pipe.execute()
    finally:
        await client.aclose()
