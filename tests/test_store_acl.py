"""The ACL rules in docs/redis-layout.md, enforced by a real redis-server (fakeredis ignores ACLs)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from cluster.flow.hashing import content_address
from cluster.store.events import Ping
from cluster.store.keys import Keys
from cluster.store.redis_conn import connect
from cluster.store.replication import ReplicaWait
from cluster.store.store import Store
from tests import redis_topologies
from tests.redis_server import RedisServer
from tests.redis_topologies import ClusterTopology
from tests.test_store import next_messages

NS = "acltest"
# Kept verbatim in docs/redis-layout.md.
CONTROL_RULE = f"~{NS}:* &{NS}:events +@all -@dangerous"
WORKER_RULE = f"~{NS}:* &{NS}:events +@read +@pubsub +@connection +set +getex +zadd"
# On a Redis Cluster (redis+cluster://), also kept verbatim in docs/redis-layout.md.
CLUSTER_CONTROL_RULE = f"{CONTROL_RULE} -cluster +cluster|slots"
CLUSTER_WORKER_RULE = f"{WORKER_RULE} +cluster|slots"
acl_cluster = redis_topologies.acl_cluster  # the session's shared cluster (a fixture)


async def test_documented_rules_allow_the_store_and_nothing_outside_the_namespace(
    make_redis_server: Callable[..., RedisServer],
) -> None:
    server = make_redis_server()
    admin = connect(server.url)
    await admin.execute_command("ACL", "SETUSER", "control", "on", ">c-secret", *CONTROL_RULE.split())
    await admin.execute_command("ACL", "SETUSER", "worker", "on", ">w-secret", *WORKER_RULE.split())
    url = f"redis://{{}}@127.0.0.1:{server.port}/0"
    control = Store(connect(url.format("control:c-secret"), client_name="control"), Keys(NS))
    worker = Store(connect(url.format("worker:w-secret"), client_name="worker"), Keys(NS))
    try:
        data, digest = content_address({"name": "qa", "nodes": []})
        await control.publish("qa", data, digest, author="ci", message="", node_count=0)
        async with worker.redis.pubsub() as pubsub:
            await pubsub.subscribe(worker.keys.channel())
            await control.activate("qa", digest, by="ci", reason="")
            await worker.publish_event(Ping(by="worker", at=1.0))
            assert len(await next_messages(pubsub, 2)) == 2
        await control.activate("qa", digest, by="ci", reason="", action="rollback")
        assert (await control.gc()).removed_count == 0

        # What a replica does: read releases and blobs, report its status.
        release = await worker.get_release("qa")
        assert release is not None and release.generation == 2
        assert await worker.get_verified_blob("qa", release.hash) == data
        assert list(await worker.list_releases()) == ["qa"]
        assert len(await worker.history("qa")) == 2
        await worker.write_replica_status("web-1", {"flows": {}}, ttl_s=30)
        assert [s["replica_id"] for s in await control.read_fleet()] == ["web-1"]
        pin = worker.keys.session("qa", "chat-1")
        assert await worker.redis.set(pin, b"{}", px=60_000, nx=True)
        assert await worker.redis.getex(pin, px=60_000) == b"{}"

        # A replica cannot change what runs, and nobody reaches keys outside the namespace.
        with pytest.raises(NoPermissionError):
            await worker.activate("qa", digest, by="worker", reason="")
        with pytest.raises(NoPermissionError):
            await control.redis.get("other:secret")
        with pytest.raises(NoPermissionError):
            await control.redis.publish("other:events", b"x")
    finally:
        for client in (admin, control.redis, worker.redis):
            await client.aclose()


async def test_documented_rules_on_a_redis_cluster(acl_cluster: ClusterTopology) -> None:
    """The same two rules plus their Cluster grants (docs/redis-layout.md): the slot map for both, nothing
    that changes the cluster for the control plane, which still runs every script and WAIT."""
    for node in acl_cluster.nodes:
        with acl_cluster.admin(node.port) as admin:
            admin.execute_command(
                "ACL", "SETUSER", "ns-control", "on", ">c-secret", *CLUSTER_CONTROL_RULE.split()
            )
            admin.execute_command(
                "ACL", "SETUSER", "ns-worker", "on", ">w-secret", *CLUSTER_WORKER_RULE.split()
            )
    url = acl_cluster.url().replace("://", "://{}@")
    control = Store(connect(url.format("ns-control:c-secret")), Keys(NS), replica_wait=ReplicaWait(1, 1000))
    worker = Store(connect(url.format("ns-worker:w-secret")), Keys(NS))
    try:
        data, digest = content_address({"name": "qa", "nodes": [], "n": uuid.uuid4().hex})
        await control.publish("qa", data, digest, author="ci", message="", node_count=0)
        generation = (await control.activate("qa", digest, by="ci", reason="")).generation  # + WAIT 1
        await worker.write_replica_status("web-1", {"flows": {}}, ttl_s=30)
        assert (await worker.get_release("qa")).generation == generation  # type: ignore[union-attr]
        assert "web-1" in {s["replica_id"] for s in await control.read_fleet()}
        with pytest.raises(NoPermissionError):
            await worker.activate("qa", digest, by="worker", reason="")
        for command in (("CLUSTER", "MEET", "127.0.0.1", "1"), ("CLUSTER", "FAILOVER"), ("CLUSTER", "NODES")):
            with pytest.raises(NoPermissionError):
                await control.redis.execute_command(*command, target_nodes=aioredis.RedisCluster.RANDOM)
    finally:
        await control.redis.aclose()
        await worker.redis.aclose()
