"""The same store code on Redis Cluster: a one-node cluster still refuses any cross-slot script or
multi-key command, so every store operation passing here means the key layout is cluster-safe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from cluster.errors import GenerationConflict
from cluster.flow.hashing import content_address
from cluster.store.events import ReleaseChanged, decode
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.redis_server import RedisServer, free_port
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
