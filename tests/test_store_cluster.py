"""The same store code on Redis Cluster: a one-node cluster still refuses any cross-slot script or
multi-key command, so every store operation passing here means the key layout is cluster-safe; on a
real 3-primary, 3-replica cluster (tests/redis_topologies.py), with the ACL users, every Lua script runs
on the node of its flow's slot, events published there reach subscribers on every node, and what spans
slots (the flow index, audit, fleet, gc's SCAN of session pins, conversation indexes) works across nodes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from cluster.components.conversation import ChatMessage
from cluster.errors import GenerationConflict
from cluster.flow.hashing import content_address
from cluster.store import rollouts
from cluster.store.canary_store import CanaryWriter
from cluster.store.conversations import ConversationRef, ConversationStore
from cluster.store.events import Ping, ReleaseChanged, decode
from cluster.store.keys import Keys
from cluster.store.lease import Lease
from cluster.store.redis_conn import connect, open_pubsub
from cluster.store.replication import ReplicaWait
from cluster.store.store import Store
from tests import redis_topologies
from tests.redis_server import RedisServer, free_port
from tests.redis_topologies import ClusterTopology
from tests.test_store import next_messages


@pytest.fixture
async def cluster_server(make_redis_server: Callable[..., RedisServer]) -> AsyncIterator[RedisServer]:
    # An explicit bus port: the default (port + 10000) overflows for ephemeral ports above 55535.
    server = make_redis_server("--cluster-enabled", "yes", "--cluster-port", str(free_port()))
    admin = aioredis.Redis.from_url(server.url)
    try:
        await admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = asyncio.get_running_loop().time() + 10
        while b"cluster_state:ok" not in await admin.execute_command("CLUSTER", "INFO"):
            assert asyncio.get_running_loop().time() < deadline, "cluster did not become ready"
            await asyncio.sleep(0.02)
        # The check this whole file relies on: the server enforces slots.
        with pytest.raises(ResponseError, match="CROSSSLOT|don't hash to the same slot"):
            await admin.eval("return 1", 2, "ns:{a}:x", "ns:{b}:y")
    finally:
        await admin.aclose()
    yield server


async def test_store_on_redis_cluster(cluster_server: RedisServer, namespace: str) -> None:
    client = aioredis.RedisCluster(host="127.0.0.1", port=cluster_server.port)
    listener = aioredis.Redis.from_url(cluster_server.url)
    store = Store(client, Keys(namespace), history_keep=3, audit_keep=100)
    try:
        async with listener.pubsub() as pubsub:
            await pubsub.subscribe(store.keys.channel())
            hashes: dict[str, list[str]] = {}
            for flow in ("alpha", "beta"):
                for n in range(3):
                    data, digest = content_address({"flow": flow, "n": n})
                    result = await store.publish(flow, data, digest, author="ci", message="", node_count=1)
                    assert result.created
                    hashes.setdefault(flow, []).append(digest)
                await store.activate(flow, hashes[flow][0][:8], by="ci", reason="")
                await store.activate(flow, hashes[flow][1], by="ci", reason="", expected_generation=1)
                with pytest.raises(GenerationConflict):
                    await store.activate(flow, hashes[flow][2], by="ci", reason="", expected_generation=1)
            back = await store.activate(
                "alpha", hashes["alpha"][0], by="ops", reason="", action="rollback", expected_generation=2
            )
            assert (back.hash, back.generation) == (hashes["alpha"][0], 3)

            events = [decode(raw) for raw in await next_messages(pubsub, 5)]
        assert all(isinstance(e, ReleaseChanged) for e in events)
        assert [(e.flow, e.generation) for e in events] == [  # type: ignore[union-attr]
            ("alpha", 1), ("alpha", 2), ("beta", 1), ("beta", 2), ("alpha", 3),
        ]  # fmt: skip

        assert set(await store.list_releases()) == {"alpha", "beta"}
        assert [r.generation for r in await store.history("alpha")] == [3, 2, 1]
        assert len(await store.audit()) == 6 + 5
        gc = await store.gc()
        assert dict(gc.removed) == {"beta": (hashes["beta"][2],), "alpha": (hashes["alpha"][2],)}
        await store.write_replica_status("r1", {"ok": True}, ttl_s=30)
        assert [s["replica_id"] for s in await store.read_fleet()] == ["r1"]
    finally:
        await client.aclose()
        await listener.aclose()


KEYS = Keys()  # the ACL users' key patterns are written for the default namespace
acl_cluster = redis_topologies.acl_cluster  # the session's shared cluster (a fixture)


def flows_on_every_primary(topo: ClusterTopology, tag: str) -> list[str]:
    """One flow name per primary, so the scripts of the test run on three different nodes."""
    by_owner: dict[int, str] = {}
    for n in range(200):
        flow = f"{tag}{n}"
        by_owner.setdefault(topo.slot_owner(KEYS.release(flow)).port, flow)
        if len(by_owner) == 3:
            return sorted(by_owner.values())
    raise AssertionError("no flow names spread over three primaries")


async def test_every_script_and_cross_slot_read_on_a_multi_node_cluster(acl_cluster: ClusterTopology) -> None:
    tag = f"ha{uuid.uuid4().hex[:6]}"
    flows = flows_on_every_primary(acl_cluster, tag)
    control = connect(acl_cluster.url("control"), retries=1)
    worker = connect(acl_cluster.url("worker"), retries=1)
    store = Store(control, KEYS, history_keep=5, audit_keep=100, replica_wait=ReplicaWait(1, 1000))
    pubsubs = [await open_pubsub(worker, session) for session in range(len(acl_cluster.nodes))]
    try:
        for pubsub in pubsubs:
            await pubsub.subscribe(KEYS.channel())
        # Each subscription sits on another node: all six, primaries and replicas.
        assert len({p.get_pubsub_node().name for p in pubsubs}) == len(acl_cluster.nodes)
        hashes: dict[str, list[str]] = {}
        for flow in flows:  # publish.lua and activate.lua (+ WAIT) on the flow's own node
            for n in range(3):
                data, digest = content_address({"flow": flow, "n": n})
                await store.publish(flow, data, digest, author="ci", message="", node_count=1)
                hashes.setdefault(flow, []).append(digest)
            await store.activate(flow, hashes[flow][0], by="ci", reason="first")
        first, second, third = flows
        with pytest.raises(GenerationConflict):
            await store.activate(first, hashes[first][1], by="ci", reason="", expected_generation=0)
        canary = CanaryWriter(store)  # canary.lua
        await canary.change(second, "start", by="ci", reason="try", digest=hashes[second][1], percent=10)
        await canary.change(second, "set", by="ci", reason="more", percent=50)
        promoted = await canary.change(second, "promote", by="ci", reason="good")
        assert (promoted.hash, promoted.generation) == (hashes[second][1], 4)
        back = await store.activate(third, hashes[third][0], by="ops", reason="", action="rollback")
        assert back.generation == 2
        await store.publish_event(Ping(by="ci", at=1.0))
        # 3 first activations, 3 canary changes, 1 rollback and a ping reach every node; in order per flow
        # (one node publishes all of a flow's events), in no particular order across flows and nodes.
        for pubsub in pubsubs:
            events = [decode(raw) for raw in await next_messages(pubsub, 8)]
            released = [(e.flow, e.generation) for e in events if isinstance(e, ReleaseChanged)]
            assert [g for f, g in released if f == second] == [1, 2, 3, 4]
            assert [g for f, g in released if f == third] == [1, 2]
            assert len(released) == 7 and sum(isinstance(e, Ping) for e in events) == 1

        assert await Lease(control, KEYS, f"{tag}-guard", holder="a", ttl_s=5).hold()  # lease.lua
        assert not await Lease(control, KEYS, f"{tag}-guard", holder="b", ttl_s=5).hold()
        record = {"id": "r1", "hash": hashes[first][2], "by": "ci", "state": "preparing", "timeout_s": 5,
                  "started_at": 1.0}  # fmt: skip
        assert (
            await rollouts.begin(control, KEYS, first, hashes[first][2], record, now=2.0) == 1
        )  # rollout.lua
        assert await rollouts.advance(control, KEYS, first, "r1", "preparing", {**record, "state": "aborted"})

        # The worker's writes across slots: statuses, a session pin, a conversation with a user index.
        worker_store = Store(worker, KEYS)
        assert set(flows) <= set(await worker_store.list_releases())
        for replica in ("w1", "w2", "w3"):
            await worker_store.write_replica_status(f"{tag}-{replica}", {"ok": True}, ttl_s=30)
        assert {f"{tag}-w1", f"{tag}-w2", f"{tag}-w3"} <= {s["replica_id"] for s in await store.read_fleet()}
        pin = b'{"hash": "%s", "generation": 1, "at": 1.0}' % hashes[third][2].encode()
        assert await worker.set(KEYS.session(third, "chat-1"), pin, px=60_000, nx=True)
        chats = ConversationStore(worker, KEYS, max_messages=10, ttl_s=60)
        for flow in flows:
            await chats.append(
                ConversationRef(flow, "-", "c1"), [ChatMessage("user", "hi", 1.0)], user_id=tag
            )
        assert [c["id"] for c in await ConversationStore(control, KEYS, max_messages=10, ttl_s=60)
                .list_conversations(third)] == ["c1"]  # fmt: skip
        forgotten = await ConversationStore(control, KEYS, max_messages=10, ttl_s=60).forget_user(tag)
        assert sorted(ref.flow for ref in forgotten) == flows

        # gc.lua on every flow's node; the pin (found by SCAN across the nodes) keeps its version.
        dry = await store.gc(dry_run=True)
        assert {f: set(v) for f, v in dry.removed.items() if f in flows} == {
            first: set(hashes[first][1:]),  # the rollout naming [first][2] ended (aborted)
            second: {hashes[second][2]},  # [0] is in the history, [1] was promoted
            third: {hashes[third][1]},  # [2] is pinned by a session
        }  # fmt: skip
        done = await store.gc()
        assert done.removed_count == dry.removed_count
        audit = await store.audit(limit=1000)  # the namespace stream and every flow's, merged
        assert {e["action"] for e in audit if e.get("flow") in flows} >= {
            "publish", "activate", "canary_start", "canary_promote", "rollback", "gc",
        }  # fmt: skip
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()
        await control.aclose()
        await worker.aclose()
