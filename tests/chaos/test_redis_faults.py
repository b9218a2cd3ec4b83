"""Redis faults under load, with real worker processes: killed with SIGKILL, frozen with DEBUG SLEEP, and
every pub/sub connection dropped with CLIENT KILL. Serving never depends on Redis, so no run may fail;
after each fault the replicas must converge on the release records."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.chaos.support import FLOW, Load, inject_release, poll, publish, qa_doc, release, subscribed
from tests.e2e.fleet import get_json, wait_all_serve, wait_ready

OUTAGE_S = 3.0
FREEZE_S = 4


async def is_frozen(url: str) -> bool:
    """True when Redis does not answer a PING within 0.3 s."""
    probe = aioredis.Redis.from_url(url, socket_timeout=0.3)
    try:
        await probe.ping()
        return False
    except (RedisTimeoutError, RedisConnectionError, TimeoutError):
        return True
    finally:
        await probe.aclose()


async def test_redis_kill9_under_load_then_activations_reach_every_replica(
    make_redis_server, namespace, make_fleet, http, start_load
):
    """Injected: SIGKILL to redis-server while runs flow, Redis down for 3 s, then restarted on the same
    port (append-only file on, as in production). Checked: no run failed before, during or after; every
    replica noticed the outage; an activation made after Redis returned reached every replica."""
    server = make_redis_server("--appendonly", "yes", "--appendfsync", "always")
    client = aioredis.Redis.from_url(server.url)
    try:
        v1, _ = await release(Store(client, Keys(namespace)), qa_doc("v1"))
        fleet = make_fleet(server.url)
        await wait_ready(http, fleet)
        await wait_all_serve(http, fleet, FLOW, v1)
        load = start_load(fleet)
        await load.wait_for(50, "load before the outage")

        killed_at = time.time()
        server.kill()
        await client.aclose()

        async def none_subscribed() -> bool:
            states = [await get_json(http, f"{w.url}/readyz") for w in fleet]
            return all(s is None or not s["subscribed"] for s in states)

        await poll(none_subscribed, what="every replica noticing the outage")
        await asyncio.sleep(max(0.0, killed_at + OUTAGE_S - time.time()))  # the outage itself
        await load.wait_for(50, "load during the outage")
        server.start()
        restarted_at = time.time()
        client = aioredis.Redis.from_url(server.url)
        v2, _ = await release(Store(client, Keys(namespace)), qa_doc("v2"))
        took = await wait_all_serve(http, fleet, FLOW, v2, timeout=30)
        await load.wait_for(50, "load after the outage")
        records = await load.stop()
        failed = len(Load.failures(records))
        during = load.sent_between(killed_at, restarted_at)
        print(
            f"injected: Redis SIGKILL for {restarted_at - killed_at:.1f} s; checked: {len(records)} runs "
            f"({len(during)} during the outage), {failed} failed; v2 on 3 replicas {took:.2f} s after "
            "the activation"
        )
        assert not Load.failures(records), Load.failures(records)[:5]
        assert len(during) > 0
        assert {r[4] for r in records} <= {v1, v2}
    finally:
        await client.aclose()


async def test_redis_frozen_by_debug_sleep_then_replicas_converge_by_reconcile(
    make_redis_server, namespace, make_fleet, http, start_load
):
    """Injected: DEBUG SLEEP freezes Redis for 4 s (longer than the 2 s watchdog) while runs flow; during
    the freeze the release record is changed to v2 without any event (the write runs when Redis wakes).
    Checked: no run failed; every replica resubscribed and converged on v2 by reconciliation."""
    server = make_redis_server("--enable-debug-command", "yes")
    client = aioredis.Redis.from_url(server.url)
    keys = Keys(namespace)
    store = Store(client, keys)
    try:
        v1, gen1 = await release(store, qa_doc("v1"))
        v2 = await publish(store, qa_doc("v2"))
        fleet = make_fleet(server.url)
        await wait_ready(http, fleet)
        await wait_all_serve(http, fleet, FLOW, v1)
        load = start_load(fleet)
        await load.wait_for(50, "load before the freeze")

        sleeper = aioredis.Redis.from_url(server.url, socket_timeout=FREEZE_S + 10)
        frozen_at = time.time()
        freeze = asyncio.create_task(sleeper.execute_command("DEBUG", "SLEEP", FREEZE_S))
        writer = aioredis.Redis.from_url(server.url, socket_timeout=FREEZE_S + 10)
        await poll(lambda: is_frozen(server.url), what="Redis frozen")  # the change must queue behind it
        change = asyncio.create_task(inject_release(writer, keys, v2, gen1 + 1, announce=False))
        await load.wait_for(50, "load during the freeze")
        assert await freeze in (b"OK", "OK", True)
        thawed_at = time.time()
        await change
        await sleeper.aclose()
        await writer.aclose()

        took = await wait_all_serve(http, fleet, FLOW, v2, timeout=30)
        await poll(lambda: subscribed(http, fleet), what="every replica subscribed again")
        records = await load.stop()
        failed = len(Load.failures(records))
        during = load.sent_between(frozen_at, thawed_at)
        silent = sum("ChannelSilent" in w.log() for w in fleet)
        print(
            f"injected: DEBUG SLEEP {FREEZE_S} s + a release change without an event; checked: "
            f"{len(records)} runs ({len(during)} during the freeze), {failed} failed; {silent} watchdog "
            f"reconnects; v2 on 3 replicas {took:.2f} s after the thaw"
        )
        assert not Load.failures(records), Load.failures(records)[:5]
        assert len(during) > 0
        assert silent == len(fleet), "every replica's watchdog must have noticed the silence"
    finally:
        await client.aclose()


async def test_pubsub_connections_killed_replicas_converge_by_the_resubscribe_reconcile(
    redis_server, namespace, make_fleet, http, start_load, redis_client, store
):
    """Injected: the release record changed to v2 with no event, then CLIENT KILL TYPE pubsub drops every
    subscriber connection; the periodic reconcile is 10 minutes away. Checked: the replicas reconnect,
    the reconcile that follows every subscribe brings all of them to v2, and no run failed."""
    keys = Keys(namespace)
    v1, gen1 = await release(store, qa_doc("v1"))
    v2 = await publish(store, qa_doc("v2"))
    fleet = make_fleet(redis_server.url, FLOWFLEET_RECONCILE_S="600", FLOWFLEET_WATCHDOG_S="30")
    await wait_ready(http, fleet)
    await wait_all_serve(http, fleet, FLOW, v1)
    channel = keys.channel()
    await poll(
        lambda: redis_client.pubsub_numsub(channel), check=lambda r: r[0][1] == 3, what="3 subscribers"
    )
    load = start_load(fleet)
    await load.wait_for(30, "load before the kill")

    await inject_release(redis_client, keys, v2, gen1 + 1, announce=False)
    killed = await redis_client.client_kill_filter(_type="pubsub")
    took = await wait_all_serve(http, fleet, FLOW, v2, timeout=30)
    records = await load.stop()
    failed = len(Load.failures(records))
    print(
        f"injected: silent release change + CLIENT KILL TYPE pubsub ({killed} connections); checked: "
        f"v2 on 3 replicas after {took:.2f} s, {len(records)} runs, {failed} failed"
    )
    assert killed >= 3
    assert not Load.failures(records), Load.failures(records)[:5]
    # Each replica loaded v2 in the reconcile its new subscription triggered.
    assert all(f"new_hash={v2} generation={gen1 + 1} triggered_by=subscribe" in w.log() for w in fleet)
