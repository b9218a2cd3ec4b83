"""compose/redis/users.acl enforced by a real redis-server >= 7: what a replica and the control plane may do.

fakeredis ignores ACLs, so only a real server can prove these rules.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store import fleet
from cluster.store.events import ReleaseChanged, decode
from cluster.store.keys import Keys
from cluster.store.store import Store
from control.localcluster import acl
from tests.acl_support import require_redis_7
from tests.redis_server import RedisServer
from tests.redis_topologies import SERVICE, SentinelProcess, acl_file, ha_passwords
from worker.replica import Replica

KEYS = Keys()  # the template is written for the default namespace
FLOW = "support_qa"
DOC = {"name": FLOW, "nodes": [], "edges": []}
FLOWS = Path(__file__).resolve().parents[1] / "flows"


@dataclass
class AclServer:
    server: RedisServer
    passwords: dict[str, str]

    def client(self, user: str, password: str | None = None) -> aioredis.Redis:
        return aioredis.Redis(
            host="127.0.0.1",
            port=self.server.port,
            username=user,
            password=self.passwords[user] if password is None else password,
        )


@pytest.fixture
def acl_server(make_redis_server: Callable[..., RedisServer], tmp_path: Path) -> AclServer:
    require_redis_7()
    passwords = {user: secrets.token_urlsafe(24) for user in acl.USERS}
    aclfile = acl.render_file(acl.DEFAULT_TEMPLATE, tmp_path / "users.acl", passwords, selectors=True)
    return AclServer(make_redis_server("--aclfile", str(aclfile)), passwords)


@pytest.fixture
async def clients(acl_server: AclServer) -> AsyncIterator[dict[str, aioredis.Redis]]:
    made = {user: acl_server.client(user) for user in acl.USERS}
    made["default"] = aioredis.Redis(host="127.0.0.1", port=acl_server.server.port)
    yield made
    for client in made.values():
        await client.aclose()


async def published(control: aioredis.Redis) -> tuple[Store, str]:
    store = Store(control, KEYS)
    data, digest = content_address(DOC)
    await store.publish(FLOW, data, digest, author="ci", message="v1", node_count=0)
    await store.activate(FLOW, digest, by="ci", reason="first")
    return store, digest


async def test_worker_reads_releases_and_blobs_and_writes_only_its_status(
    clients: dict[str, aioredis.Redis],
) -> None:
    control_store, digest = await published(clients["control"])
    worker = Store(clients["worker"], KEYS)

    release = await worker.get_release(FLOW)
    assert release is not None and release.hash == digest and release.generation == 1
    assert await worker.get_verified_blob(FLOW, digest) == content_address(DOC)[0]
    assert list(await worker.list_releases()) == [FLOW]
    assert [r.generation for r in await worker.history(FLOW)] == [1]
    await worker.write_replica_status("web-1", {"flows": {FLOW: {"hash": digest}}}, ttl_s=30)
    assert [s["replica_id"] for s in await control_store.read_fleet()] == ["web-1"]
    # A replica that stops deregisters: ZREM from the list, PEXPIRE 0 of its status (it has no DEL).
    await fleet.deregister(clients["worker"], KEYS, "web-1")
    assert await control_store.read_fleet() == []
    assert await clients["control"].zrange(KEYS.replicas(), 0, -1) == []
    # Session pins: SET NX with a TTL, then GETEX to read and refresh it.
    pin = KEYS.session(FLOW, "chat-1")
    assert await clients["worker"].set(pin, b"{}", px=60_000, nx=True)
    assert await clients["worker"].getex(pin, px=60_000) == b"{}"
    assert await clients["worker"].ping()


async def test_worker_cannot_change_what_runs(clients: dict[str, aioredis.Redis]) -> None:
    _, digest = await published(clients["control"])
    w = clients["worker"]
    refused: dict[str, Callable[[], Awaitable[object]]] = {
        "set a release record": lambda: w.hset(KEYS.release(FLOW), "hash", "0" * 64),
        "overwrite a release key": lambda: w.set(KEYS.release(FLOW), b"x"),
        "write a blob": lambda: w.set(KEYS.blob(FLOW, digest), b"{}"),
        "add a version": lambda: w.zadd(KEYS.versions(FLOW), {"f" * 64: 1.0}),
        "write a flow named like the status keys": lambda: w.set(KEYS.release("replica"), b"x"),
        "write a flow key through the session grant": lambda: w.set(KEYS.release("session"), b"x"),
        "refresh a release key with GETEX": lambda: w.getex(KEYS.release(FLOW), px=1000),
        "delete a key": lambda: w.delete(KEYS.blob(FLOW, digest)),
        "delete its own status": lambda: w.delete(KEYS.replica("web-1")),
        "remove a version with ZREM": lambda: w.zrem(KEYS.versions(FLOW), digest),
        "expire a release key": lambda: w.pexpire(KEYS.release(FLOW), 0),
        "expire a blob": lambda: w.pexpire(KEYS.blob(FLOW, digest), 0),
        "publish a release event": lambda: w.publish(KEYS.channel(), b'{"v": 1, "type": "release"}'),
        "publish anywhere": lambda: w.publish("other:events", b"x"),
        "flushall": lambda: w.flushall(),
        "config": lambda: w.config_get("aclfile"),
        "keys": lambda: w.keys("*"),
        "eval": lambda: w.eval("return 1", 0),
        "run the store's activation script": lambda: Store(w, KEYS).activate(
            FLOW, digest, by="w", reason="r"
        ),
        "read outside the namespace": lambda: w.get("other:secret"),
        "acl": lambda: w.acl_list(),
    }
    for what, call in refused.items():
        with pytest.raises(NoPermissionError):
            await call()
            pytest.fail(f"the worker may {what}")
    # Nothing above changed the release.
    release = await Store(clients["control"], KEYS).get_release(FLOW)
    assert release is not None and release.hash == digest and release.generation == 1


async def test_worker_writes_conversations_and_nothing_else_new(clients: dict[str, aioredis.Redis]) -> None:
    """The conversation grants: a replica appends turns (MULTI: RPUSH, LTRIM, PEXPIRE, ZADD) and indexes
    users (SADD); the control plane reads, lists and deletes; the rest stays NOPERM."""
    from cluster.components.conversation import ChatMessage
    from cluster.store.conversations import ConversationRef, ConversationStore

    _, digest = await published(clients["control"])
    ref = ConversationRef(FLOW, "-", "chat-9")
    worker = ConversationStore(clients["worker"], KEYS, max_messages=3, ttl_s=60)
    turn = [ChatMessage("user", "hi", 1.0, "User"), ChatMessage("assistant", "hello", 2.0, "AI")]
    await worker.append(ref, turn, user_id="alice@example.com")
    await worker.append(ref, [ChatMessage("user", "again", 3.0)])
    assert [m.content for m in await worker.history(ref, 10)] == ["hi", "hello", "again"]
    control = ConversationStore(clients["control"], KEYS, max_messages=3, ttl_s=60)
    assert [c["id"] for c in await control.list_conversations(FLOW)] == ["chat-9"]
    w = clients["worker"]
    refused: dict[str, Callable[[], Awaitable[object]]] = {
        "delete a conversation": lambda: w.delete(KEYS.conversation(FLOW, "-", "chat-9")),
        "rpush onto a release": lambda: w.rpush(KEYS.history(FLOW), b"x"),
        "sadd onto the flows set": lambda: w.sadd(KEYS.flows(), "evil"),
        "ltrim the history": lambda: w.ltrim(KEYS.history(FLOW), 0, 0),
        "write a blob through MULTI": lambda: (
            w.pipeline(transaction=True).set(KEYS.blob(FLOW, digest), b"{}").execute()
        ),
    }
    for what, call in refused.items():
        with pytest.raises(NoPermissionError):
            await call()
            pytest.fail(f"the worker may {what}")
    assert [r.id for r in await control.forget_user("alice@example.com")] == ["chat-9"]
    assert await control.read(ref) == []


async def test_worker_subscribes_only_to_the_flowfleet_channel(clients: dict[str, aioredis.Redis]) -> None:
    control_store = Store(clients["control"], KEYS)
    data, digest = content_address(DOC)
    await control_store.publish(FLOW, data, digest, author="ci", message="v1", node_count=0)
    async with clients["worker"].pubsub() as pubsub:
        await pubsub.subscribe(KEYS.channel())
        await control_store.activate(FLOW, digest, by="ci", reason="first")
        events = await next_events(pubsub, 1)
    assert [(e.flow, e.hash, e.generation) for e in events] == [(FLOW, digest, 1)]
    async with clients["worker"].pubsub() as other:
        with pytest.raises(NoPermissionError):
            await other.subscribe("other:events")
            await other.get_message(timeout=2.0)


async def next_events(
    pubsub: aioredis.client.PubSub, count: int, timeout: float = 10.0
) -> list[ReleaseChanged]:
    events: list[ReleaseChanged] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            event = decode(message["data"])
            assert isinstance(event, ReleaseChanged)
            events.append(event)
    return events


async def test_control_runs_the_store_but_nothing_dangerous(clients: dict[str, aioredis.Redis]) -> None:
    store, first = await published(clients["control"])
    data2, second = content_address({**DOC, "description": "v2"})
    assert (await store.publish(FLOW, data2, second, author="ci", message="v2", node_count=0)).created
    assert (await store.activate(FLOW, second, by="ci", reason="v2", expected_generation=1)).generation == 2
    rolled = await store.activate(
        FLOW, first, by="ci", reason="undo", action="rollback", expected_generation=2
    )
    assert (rolled.hash, rolled.generation) == (first, 3)
    assert [r.generation for r in await store.history(FLOW)] == [3, 2, 1]
    assert len(await store.audit(FLOW)) >= 4
    assert (await store.gc()).removed_count == 0
    c = clients["control"]
    dangerous: list[Callable[[], Awaitable[object]]] = [
        lambda: c.flushall(),
        lambda: c.keys("*"),
        lambda: c.config_get("*"),
        lambda: c.get("other:secret"),
        lambda: c.publish("other", b"x"),
    ]
    for call in dangerous:
        with pytest.raises(NoPermissionError):
            await call()


async def test_guard_lease_rollout_lock_and_gc_pin_scan_use_the_control_grants_only(
    clients: dict[str, aioredis.Redis],
) -> None:
    """The guard lease (`flowfleet:lease:*`), the rollout lock script and gc's SCAN of session pins run with
    the control user's existing rights (no new key pattern or command); the worker gets NOPERM for each."""
    from cluster.store import rollouts
    from cluster.store.lease import Lease

    store, digest = await published(clients["control"])
    c, w = clients["control"], clients["worker"]
    assert await Lease(c, KEYS, "rollback-guard", holder="control-a", ttl_s=5).hold()
    assert not await Lease(c, KEYS, "rollback-guard", holder="control-b", ttl_s=5).hold()
    record = {"id": "r1", "hash": digest, "by": "ci", "state": "preparing", "timeout_s": 5, "started_at": 1.0}
    assert await rollouts.begin(c, KEYS, FLOW, digest, record, now=2.0) == 1
    assert await w.set(KEYS.session(FLOW, "chat-1"), b'{"hash": "%s"}' % digest.encode(), px=60_000, nx=True)
    assert (await store.gc(dry_run=True)).removed_count == 0
    refused: dict[str, Callable[[], Awaitable[object]]] = {
        "take the guard lease": lambda: w.set(KEYS.lease("rollback-guard"), b"worker"),
        "run the lease script": lambda: Lease(w, KEYS, "rollback-guard", holder="w", ttl_s=5).hold(),
        "write the rollout record": lambda: w.hset(KEYS.rollout(FLOW), "state", "aborted"),
        "run the rollout script": lambda: rollouts.begin(w, KEYS, FLOW, digest, record, now=99.0),
        "scan the keyspace": lambda: w.scan(match=KEYS.session_pattern()),
    }
    for what, call in refused.items():
        with pytest.raises(NoPermissionError):
            await call()
            pytest.fail(f"the worker may {what}")
    assert await c.get(KEYS.lease("rollback-guard")) == b"control-a"


async def test_unauthenticated_clients_can_do_nothing(
    acl_server: AclServer, clients: dict[str, aioredis.Redis]
) -> None:
    # No retries: redis-py's default policy retries a refused login with backoff (3.3 s each).
    anonymous = aioredis.Redis(host="127.0.0.1", port=acl_server.server.port, retry=Retry(NoBackoff(), 0))
    for call in (anonymous.ping, lambda: anonymous.get(KEYS.release(FLOW))):
        with pytest.raises(AuthenticationError):
            await call()
    await anonymous.aclose()
    for user, password in (("default", ""), ("default", "anything"), ("worker", "not-the-password")):
        client = aioredis.Redis(
            host="127.0.0.1", port=acl_server.server.port, username=user, password=password,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        try:
            with pytest.raises(AuthenticationError):
                await client.ping()
        finally:
            await client.aclose()


async def test_activations_survive_a_redis_restart_with_the_acl_file(
    make_redis_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """Redis 7.0 replays the activation script's MULTI/EXEC from the AOF with the default user's rights:
    the ACL file must keep them, or every release record vanishes on restart."""
    require_redis_7()
    passwords = {user: secrets.token_urlsafe(24) for user in acl.USERS}
    aclfile = acl.render_file(acl.DEFAULT_TEMPLATE, tmp_path / "users.acl", passwords, selectors=True)
    server = make_redis_server("--aclfile", str(aclfile), "--appendonly", "yes", "--appendfsync", "always")
    acl_server = AclServer(server, passwords)
    control = acl_server.client("control")
    try:
        _, digest = await published(control)
    finally:
        await control.aclose()
    server.restart()
    control = acl_server.client("control")
    try:
        release = await Store(control, KEYS).get_release(FLOW)
        assert release is not None and (release.hash, release.generation) == (digest, 1)
        assert [r.generation for r in await Store(control, KEYS).history(FLOW)] == [1]
    finally:
        await control.aclose()
    assert "CRITICAL" not in (server.dir / "redis.log").read_text()


def test_the_rendered_file_holds_hashes_only(tmp_path: Path) -> None:
    passwords = {"worker": "w-" + secrets.token_hex(8), "control": "c-" + secrets.token_hex(8)}
    text = acl.render_file(
        acl.DEFAULT_TEMPLATE, tmp_path / "users.acl", passwords, selectors=True
    ).read_text()
    for password in passwords.values():
        assert password not in text
        assert f"#{acl.password_sha256(password)}" in text
    assert (tmp_path / "users.acl").stat().st_mode & 0o777 == 0o600


async def test_a_real_replica_runs_with_the_worker_credentials(
    acl_server: AclServer, clients: dict[str, aioredis.Redis]
) -> None:
    store = Store(clients["control"], KEYS)
    versions = []
    for name in ("support_qa.json", "support_qa_v2.json"):
        data, digest = content_address(json.loads((FLOWS / name).read_text()))
        await store.publish(FLOW, data, digest, author="ci", message=name, node_count=0)
        versions.append(digest)
    await store.activate(FLOW, versions[0], by="ci", reason="v1")
    url = acl.redis_url("127.0.0.1", acl_server.server.port, "worker", acl_server.passwords["worker"])
    replica = Replica(Settings(redis_url=url, replica_id="acl-1", reconcile_s=0.5, heartbeat_s=0.2))
    await replica.start()
    try:
        await wait_for(lambda: replica.state.is_ready() and _loaded(replica) == (versions[0], 1))
        await store.activate(FLOW, versions[1], by="ci", reason="v2")
        await wait_for(lambda: _loaded(replica) == (versions[1], 2))
        loaded = replica.state.snapshot.get(FLOW)
        assert loaded is not None
        result = await loaded.compiled.run({"question": "where is my parcel?"})
        assert result.outputs
        await wait_for_fleet(store, "acl-1", versions[1])
    finally:
        await replica.stop()


def _loaded(replica: Replica) -> tuple[str, int] | None:
    loaded = replica.state.snapshot.get(FLOW)
    return None if loaded is None else (loaded.hash, loaded.generation)


async def wait_for_fleet(store: Store, replica_id: str, digest: str, timeout: float = 20.0) -> None:
    """The replica's heartbeat, written with the worker credentials, shows the new version."""
    deadline = time.monotonic() + timeout
    while True:
        fleet = {s["replica_id"]: s for s in await store.read_fleet()}
        status = fleet.get(replica_id)
        if status is not None and status["flows"].get(FLOW, {}).get("hash") == digest:
            assert status["last_error"] is None
            return
        assert time.monotonic() < deadline, f"the fleet status never showed {digest[:12]}: {fleet}"
        await asyncio.sleep(0.05)


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- high availability: Cluster, Sentinel, replication -------------------------------------------------
async def test_failover_grants_are_the_few_commands_it_needs(clients: dict[str, aioredis.Redis]) -> None:
    """The worker reads the slot map (CLUSTER SLOTS) and the command table (COMMAND) redis-py's cluster
    client loads; the control plane reads the slot map and runs WAIT after an activation. Nothing that
    changes a cluster or a replication topology, no shard channel, no server introspection."""
    w, c = clients["worker"], clients["control"]
    for client in (w, c):  # allowed: this single node answers that it is no cluster, not NOPERM
        with pytest.raises(ResponseError, match="cluster support disabled"):
            await client.execute_command("CLUSTER", "SLOTS")
    assert await w.command_count() > 100
    assert await c.execute_command("WAIT", 0, 0) == 0
    topology_changes = [
        ("CLUSTER", "MEET", "127.0.0.1", "1"), ("CLUSTER", "SETSLOT", "1", "STABLE"), ("CLUSTER", "FAILOVER"),
        ("CLUSTER", "RESET"), ("CLUSTER", "FORGET", "x"), ("CLUSTER", "ADDSLOTS", "1"),
        ("CLUSTER", "REPLICATE", "x"), ("CLUSTER", "NODES"), ("CLUSTER", "INFO"), ("REPLICAOF", "NO", "ONE"),
        ("FAILOVER",), ("INFO",), ("ROLE",), ("SPUBLISH", KEYS.flow_prefix(FLOW) + "events", "x"),
    ]  # fmt: skip
    refused = {"worker": [("WAIT", 0, 0), ("CLUSTER", "SHARDS"), ("READONLY",), *topology_changes]}
    refused["control"] = topology_changes
    for user, commands in refused.items():
        for command in commands:
            with pytest.raises(NoPermissionError):
                await clients[user].execute_command(*command)
                pytest.fail(f"{user} may run {' '.join(command)}")


@pytest.fixture
def ha_acl_server(make_redis_server: Callable[..., RedisServer], tmp_path: Path) -> tuple[RedisServer, dict]:
    require_redis_7()
    passwords = ha_passwords()
    return make_redis_server("--aclfile", str(acl_file(tmp_path, passwords))), passwords


async def test_replication_and_sentinel_users_read_no_flowfleet_key(
    ha_acl_server: tuple[RedisServer, dict[str, str]],
) -> None:
    """compose/redis/ha-users.acl: replicas replicate (PSYNC, REPLCONF) and sentinels monitor and
    reconfigure (INFO, SLAVEOF, CONFIG REWRITE, their hello channel); neither may touch a key."""
    server, passwords = ha_acl_server
    users = {u: aioredis.Redis(port=server.port, username=u, password=passwords[u]) for u in acl.HA_USERS}
    control = aioredis.Redis(port=server.port, username="control", password=passwords["control"])
    try:
        await published(control)
        sentinel = users["sentinel"]
        assert "redis_version" in await sentinel.info("server")
        assert await sentinel.publish("__sentinel__:hello", b"x") == 0
        assert await users["replication"].ping()
        for user, client in users.items():
            for command in [("GET", KEYS.release(FLOW)), ("HGETALL", KEYS.release(FLOW)), ("SET", "k", "v"),
                            ("DEL", KEYS.blob(FLOW, "0" * 64)), ("KEYS", "*"), ("EVAL", "return 1", "0"),
                            ("CONFIG", "GET", "*"), ("CONFIG", "SET", "maxmemory", "1"), ("ACL", "LIST"),
                            ("FLUSHALL",), ("PUBLISH", KEYS.channel(), "x"), ("SHUTDOWN",)]:  # fmt: skip
                with pytest.raises(NoPermissionError):
                    await client.execute_command(*command)
                    pytest.fail(f"{user} may run {command[0]}")
        with pytest.raises(NoPermissionError):
            await users["replication"].info()
    finally:
        for client in [*users.values(), control]:
            await client.aclose()


async def test_sentinels_let_flowfleet_find_the_primary_and_nothing_else(
    make_redis_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """compose/redis/sentinel-auth.conf: the sentinels' `flowfleet` user asks where the primary is (what
    redis-py's Sentinel client does); it cannot reconfigure, fail over or stop the sentinel."""
    require_redis_7()
    passwords = ha_passwords()
    primary = make_redis_server("--aclfile", str(acl_file(tmp_path, passwords)))
    sentinel = SentinelProcess(tmp_path, primary.port, passwords).start()
    client = aioredis.Redis(port=sentinel.port, username="flowfleet", password=passwords["client"])
    try:
        assert SERVICE in await client.sentinel_masters()
        assert await client.sentinel_get_master_addr_by_name(SERVICE) == (b"127.0.0.1", primary.port)
        for command in [("SENTINEL", "SET", SERVICE, "quorum", "1"), ("SENTINEL", "FAILOVER", SERVICE),
                        ("SENTINEL", "RESET", "*"), ("SENTINEL", "REMOVE", SERVICE),
                        ("SENTINEL", "MONITOR", "x", "127.0.0.1", "1", "1"), ("SENTINEL", "FLUSHCONFIG"),
                        ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"), ("ACL", "LIST"),
                        ("SHUTDOWN",), ("INFO",), ("SUBSCRIBE", "+switch-master")]:  # fmt: skip
            with pytest.raises(NoPermissionError):
                await client.execute_command(*command)
                pytest.fail(f"the flowfleet user may run {' '.join(command)} on a sentinel")
        anonymous = aioredis.Redis(port=sentinel.port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(AuthenticationError):
            await anonymous.ping()
        await anonymous.aclose()
    finally:
        await client.aclose()
        sentinel.stop()
