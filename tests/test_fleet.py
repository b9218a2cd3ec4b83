"""Replica heartbeats against a real redis-server: TTL expiry, pruning, and unreadable statuses."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from cluster.names import InvalidName
from cluster.store import fleet as fleet_store
from cluster.store.keys import Keys
from cluster.store.store import Store


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


async def test_status_round_trip(store: Store, redis_client: aioredis.Redis) -> None:
    status = {"host": "web-1", "pid": 42, "flows": {"qa": {"hash": "ab" * 32, "generation": 3}}}
    await store.write_replica_status("web-1-42", status, ttl_s=30)
    await store.write_replica_status("web-2-7", {"host": "web-2"}, ttl_s=30)

    fleet = await store.read_fleet()

    assert [s["replica_id"] for s in fleet] == ["web-1-42", "web-2-7"]
    assert fleet[0]["flows"] == status["flows"] and fleet[0]["pid"] == 42
    assert isinstance(fleet[0]["reported_at"], float)
    ttl_ms = await redis_client.pttl(store.keys.replica("web-1-42"))
    assert 0 < ttl_ms <= 30_000


async def test_expired_status_disappears_and_is_pruned(store: Store, redis_client: aioredis.Redis) -> None:
    await store.write_replica_status("stays", {}, ttl_s=60)
    await store.write_replica_status("leaves", {}, ttl_s=0.05)
    # Redis expires the key on its own clock; wait for that (bounded), not for a fixed time.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await redis_client.exists(store.keys.replica("leaves")):
        assert loop.time() < deadline, "status key did not expire"
        await asyncio.sleep(0.01)

    fleet = await store.read_fleet()

    assert [s["replica_id"] for s in fleet] == ["stays"]
    # Still listed (shown as gone, cluster.store.fleet.GONE_KEPT_S) until its last heartbeat is old.
    members = await redis_client.zrange(store.keys.replicas(), 0, -1)
    assert sorted(members) == [b"leaves", b"stays"]
    roster = await fleet_store.read_roster(redis_client, store.keys, now=time.time())
    assert list(roster.gone) == ["leaves"]
    later = time.time() + fleet_store.GONE_KEPT_S + 1
    roster = await fleet_store.read_roster(redis_client, store.keys, now=later)
    assert roster.gone == {} and [s["replica_id"] for s in roster.statuses] == ["stays"]
    assert await redis_client.zrange(store.keys.replicas(), 0, -1) == [b"stays"]


async def test_a_heartbeat_renews_the_ttl(store: Store, redis_client: aioredis.Redis) -> None:
    await store.write_replica_status("r1", {"n": 1}, ttl_s=1)
    await store.write_replica_status("r1", {"n": 2}, ttl_s=60)
    assert await redis_client.pttl(store.keys.replica("r1")) > 1000
    assert [s["n"] for s in await store.read_fleet()] == [2]


async def test_unreadable_status_is_skipped_not_fatal(store: Store, redis_client: aioredis.Redis) -> None:
    await store.write_replica_status("good", {}, ttl_s=60)
    await store.write_replica_status("bad", {}, ttl_s=60)
    await redis_client.set(store.keys.replica("bad"), b"{not json", px=60_000)
    assert [s["replica_id"] for s in await store.read_fleet()] == ["good"]


async def test_bad_replica_ids_and_ttls_are_refused(store: Store) -> None:
    with pytest.raises(InvalidName):
        await store.write_replica_status("has space", {}, ttl_s=5)
    with pytest.raises(ValueError):
        await store.write_replica_status("r1", {}, ttl_s=0)
    assert await store.read_fleet() == []
