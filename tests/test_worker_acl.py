"""A replica runs under the least-privilege ACL user documented in docs/worker.md (real redis-server)."""

from __future__ import annotations

import uuid

import pytest
from redis.exceptions import NoPermissionError

from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.redis_conn import connect
from cluster.store.replication import ReplicaWait
from cluster.store.store import Store
from tests import redis_topologies
from tests.redis_topologies import ClusterTopology, acl_refusals
from tests.worker_support import ToyCompiler, publish_activate, wait_for
from worker.replica import Replica

NS = "aclworker"
# Kept verbatim (with the namespace `flowfleet`) in docs/worker.md.
MINIMAL_WORKER_RULE = (
    f"resetkeys resetchannels %R~{NS}:* %W~{NS}:replica:* %W~{NS}:replicas %RW~{NS}:{{*}}:session:* "
    f"&{NS}:events -@all +smembers +hgetall +get +set +getex +zadd +zrem +pexpire +subscribe +unsubscribe "
    "+ping +hello +auth +client|setname"
)
# redis-py also sends CLIENT SETINFO (Redis >= 7.2 knows it; grant it there) and ignores a refusal.
IGNORED_REFUSALS = {"client|setinfo"}
acl_cluster = redis_topologies.acl_cluster  # the session's shared cluster (a fixture)


async def test_replica_loads_follows_and_reports_with_only_the_minimal_rule(make_redis_server):
    server = make_redis_server()
    admin = connect(server.url)
    await admin.execute_command("ACL", "SETUSER", "worker", "on", ">w-secret", *MINIMAL_WORKER_RULE.split())
    store = Store(admin, Keys(NS))
    url = f"redis://worker:w-secret@127.0.0.1:{server.port}/0"
    replica = Replica(
        Settings.from_env({}, redis_url=url, namespace=NS, replica_id="acl-1", ping_s=0.1, heartbeat_s=0.1),
        compiler=ToyCompiler(),
    )
    try:
        d1, _ = await publish_activate(store, "qa", "v1")
        await replica.start()
        await wait_for(lambda: replica.state.is_ready(), what="ready under the ACL")
        pings = replica.metrics.last_event_at
        await wait_for(lambda: replica.metrics.last_event_at != pings, what="PONG under the ACL")
        d2, _ = await publish_activate(store, "qa", "v2")
        await wait_for(lambda: replica.state.snapshot.get("qa").hash == d2, what="event under the ACL")
        await wait_for(lambda: replica.heartbeat.beats >= 2, what="status writes under the ACL")
        assert [s["id"] for s in await store.read_fleet()] == ["acl-1"]
        # Session pins: created on a session's first run, read and refreshed on the next.
        loaded = replica.state.snapshot.get("qa")
        first = await replica.sessions.serve(loaded, "chat-1", None)
        again = await replica.sessions.serve(loaded, "chat-1", None)
        assert first.pinned and again.pinned and again.hash == d2
        assert await admin.pttl(Keys(NS).session("qa", "chat-1")) > 0
        assert replica.subscriber._failures == 0 and not replica.heartbeat._failing
        # The same credentials cannot change what runs, nor announce anything.
        with pytest.raises(NoPermissionError):
            await replica.store.redis.hset(Keys(NS).release("qa"), "hash", d1)  # type: ignore[attr-defined]
        with pytest.raises(NoPermissionError):
            await replica.store.redis.publish(Keys(NS).channel(), b"x")  # type: ignore[attr-defined]
    finally:
        await replica.stop()
        await admin.aclose()

    admin = connect(server.url)
    try:
        # Stopping deregistered it under the same rule: status key and list member are gone.
        assert not await admin.exists(Keys(NS).replica("acl-1"))
        assert await admin.zrange(Keys(NS).replicas(), 0, -1) == []
        log = await admin.acl_log()
    finally:
        await admin.aclose()
    denied = {entry["object"] for entry in log} - IGNORED_REFUSALS
    assert denied == {"hset", "publish"}, log  # only the two refusals above


async def test_replica_on_a_redis_cluster_with_the_worker_user_of_users_acl(
    acl_cluster: ClusterTopology,
) -> None:
    """The `worker` user of compose/redis/users.acl on a 3+3 cluster: a replica loads, follows events
    (subscribed at one node, published by the flow's primary), writes its status and session pins; the
    cluster's nodes refused it nothing but what redis-py shrugs off and the two attempts below."""
    flow = f"acl{uuid.uuid4().hex[:8]}"
    admin = connect(acl_cluster.url("control"))
    store = Store(admin, Keys(), replica_wait=ReplicaWait(1, 1000))
    settings = Settings.from_env(
        {}, redis_url=acl_cluster.url("worker"), replica_id=f"{flow}-1", ping_s=0.1, heartbeat_s=0.1
    )
    replica = Replica(settings, compiler=ToyCompiler())
    try:
        await publish_activate(store, flow, "v1")
        await replica.start()
        await wait_for(lambda: replica.state.is_ready(), what="ready on the cluster")
        d2, _ = await publish_activate(store, flow, "v2")
        await wait_for(
            lambda: replica.state.snapshot.get(flow).hash == d2, what="the event from another node"
        )
        await wait_for(lambda: replica.heartbeat.beats >= 2, what="status writes on the cluster")
        served = await replica.sessions.serve(replica.state.snapshot.get(flow), "chat-1", None)
        assert served.pinned and served.hash == d2
        with pytest.raises(NoPermissionError):
            await replica.store.redis.hset(Keys().release(flow), "hash", d2)  # type: ignore[attr-defined]
        with pytest.raises(NoPermissionError):
            await replica.store.redis.publish(Keys().channel(), b"x")  # type: ignore[attr-defined]
    finally:
        await replica.stop()
        await admin.aclose()
    refused = [r for r in acl_refusals(acl_cluster) if " worker: " in r]
    assert {r.rsplit(" ", 1)[1] for r in refused} <= {"hset", "publish"}, refused
