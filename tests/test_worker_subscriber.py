"""The subscriber against a real redis-server: events, reconcile, lost connections, silence, outages."""

from __future__ import annotations

import asyncio
import random
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from cluster.store.events import ReleaseChanged, encode
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.worker_support import ToyCompiler, publish_activate, toy_doc, wait_for
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.replica import redis_client
from worker.state import WorkerState
from worker.subscriber import Subscriber, Timing, backoff_with_jitter


@asynccontextmanager
async def running_subscriber(url: str, namespace: str, timing: Timing, replica_id: str = "r1"):
    keys = Keys(namespace)
    redis = redis_client(url, retries=1)
    sub_redis = redis_client(url, retries=0)
    store = Store(redis, keys)
    state, metrics = WorkerState(replica_id), WorkerMetrics()
    loader = Loader(store, state, ToyCompiler(), metrics)
    sub = Subscriber(sub_redis, keys.channel(), store, loader, state, metrics, timing)
    task = asyncio.create_task(sub.run())
    try:
        yield sub, state, metrics
    finally:
        sub.stop()
        await asyncio.wait_for(task, timeout=10)
        await redis.aclose()
        await sub_redis.aclose()


def served(state: WorkerState, flow: str):
    loaded = state.snapshot.get(flow)
    return loaded.hash if loaded else None


SLOW = Timing(reconcile_s=60.0, watchdog_s=30.0, ping_s=10.0)


async def test_startup_reads_existing_releases_after_subscribing(redis_server, namespace, redis_client):
    store = Store(redis_client, Keys(namespace))
    d1, _ = await publish_activate(store, "qa", "v1")
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, metrics):
        await wait_for(lambda: state.synced and served(state, "qa") == d1, what="initial load")
        assert state.is_ready()
        assert metrics.registry.get_sample_value("flowfleet_subscriber_connected") == 1


async def test_the_first_read_happens_only_once_subscribed(redis_server, namespace, redis_client):
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _):
        seen: list[bool] = []
        original = sub.store.list_releases

        async def recording():
            seen.append(sub.connected.is_set())
            return await original()

        sub.store.list_releases = recording
        await wait_for(lambda: state.synced, what="first reconcile")
        assert seen and all(seen)


async def test_activation_event_is_applied(redis_server, namespace, redis_client):
    store = Store(redis_client, Keys(namespace))
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _):
        await wait_for(lambda: state.synced, what="first reconcile")
        d1, _ = await publish_activate(store, "qa", "v1")
        await wait_for(lambda: served(state, "qa") == d1, what="event-driven load")
        d2, _ = await publish_activate(store, "qa", "v2")
        await wait_for(lambda: served(state, "qa") == d2, what="second version")


async def test_release_changed_without_an_event_converges_by_periodic_reconcile(
    redis_server, namespace, redis_client
):
    keys = Keys(namespace)
    store = Store(redis_client, keys)
    timing = Timing(reconcile_s=0.5, watchdog_s=30.0, ping_s=10.0)
    async with running_subscriber(redis_server.url, namespace, timing) as (sub, state, _):
        await wait_for(lambda: state.synced, what="first reconcile")
        data, digest = toy_doc("silent")
        await store.publish("qa", data, digest, author="t", message="m", node_count=1)
        # As if the PUBLISH had been lost: write the release record with no event.
        await redis_client.hset(keys.release("qa"), mapping={"hash": digest, "generation": 1})
        await wait_for(lambda: served(state, "qa") == digest, timeout=5, what="reconcile")


async def test_killed_pubsub_connection_resubscribes_and_the_next_activation_arrives(
    redis_server, namespace, redis_client
):
    store = Store(redis_client, Keys(namespace))
    timing = Timing(reconcile_s=60.0, watchdog_s=30.0, ping_s=10.0, backoff_base_s=0.05)
    async with running_subscriber(redis_server.url, namespace, timing) as (sub, state, _):
        await wait_for(lambda: sub.connected.is_set() and state.synced, what="subscribed")
        reconciles = sub.reconciles
        killed = await redis_client.client_kill_filter(_type="pubsub")
        assert killed >= 1
        # The resubscribe triggers a reconcile (a full re-read) before anything else.
        await wait_for(lambda: sub.reconciles > reconciles and sub.connected.is_set(), what="resubscribe")
        d1, _ = await publish_activate(store, "qa", "v1")
        await wait_for(lambda: served(state, "qa") == d1, what="activation after the kill")


async def test_activation_lost_during_the_disconnect_is_caught_by_the_resubscribe_reconcile(
    redis_server, namespace, redis_client
):
    store = Store(redis_client, Keys(namespace))
    keys = Keys(namespace)
    timing = Timing(reconcile_s=60.0, watchdog_s=30.0, ping_s=10.0, backoff_base_s=4.0, backoff_cap_s=4.0)
    async with running_subscriber(redis_server.url, namespace, timing) as (sub, state, _):
        await wait_for(lambda: sub.connected.is_set() and state.synced, what="subscribed")
        await redis_client.client_kill_filter(_type="pubsub")
        await wait_for(lambda: not sub.connected.is_set(), what="disconnect noticed")
        # Nobody is subscribed during the backoff (2-4 s): the activation's event reaches no one.
        assert (await redis_client.pubsub_numsub(keys.channel()))[0][1] == 0
        d1, _ = await publish_activate(store, "qa", "v1")
        await wait_for(lambda: served(state, "qa") == d1, what="convergence after resubscribe")


async def test_malformed_and_unknown_events_do_not_kill_the_subscriber(
    redis_server, namespace, redis_client, caplog
):
    keys = Keys(namespace)
    store = Store(redis_client, keys)
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _):
        await wait_for(lambda: sub.connected.is_set(), what="subscribed")
        bad_name = ReleaseChanged(flow="../etc", hash="a" * 64, generation=9, by="x", at=0.0)
        for junk in (
            b"not json",
            b"[]",
            b'{"v": 1, "type": "teleport"}',
            b'{"v": 99, "type": "release"}',
            encode(bad_name),
        ):
            await redis_client.publish(keys.channel(), junk)
        d1, _ = await publish_activate(store, "qa", "v1")
        await wait_for(lambda: served(state, "qa") == d1, what="event after junk")
        assert sub.connected.is_set()
        assert "invalid flow name" in caplog.text
        assert not [r for r in caplog.records if r.levelname == "ERROR"], "junk is dropped, not an error"


async def test_silent_connection_trips_the_watchdog_and_reconnects(make_redis_server, namespace):
    server = make_redis_server()
    timing = Timing(reconcile_s=60.0, watchdog_s=0.6, ping_s=0.2, backoff_base_s=0.05, backoff_cap_s=0.2)
    async with running_subscriber(server.url, namespace, timing) as (sub, state, metrics):
        await wait_for(lambda: sub.connected.is_set() and state.synced, what="subscribed")
        # Pings keep a healthy connection alive well past the watchdog interval.
        await wait_for(lambda: metrics.last_event_at is not None, what="first pong")
        connected_since = sub.connected.is_set()
        server.pause()  # frozen: TCP stays up, nothing comes back
        try:
            await wait_for(lambda: not sub.connected.is_set(), timeout=10, what="watchdog")
        finally:
            server.resume()
        assert connected_since
        await wait_for(lambda: sub.connected.is_set(), timeout=15, what="reconnect after resume")
        client = aioredis.Redis.from_url(server.url)
        try:
            d1, _ = await publish_activate(Store(client, Keys(namespace)), "qa", "v1")
            await wait_for(lambda: served(state, "qa") == d1, what="activation after the freeze")
        finally:
            await client.aclose()


async def test_redis_down_at_startup_retries_until_it_appears(make_redis_server, namespace):
    server = make_redis_server()
    server.kill()
    timing = Timing(reconcile_s=0.3, watchdog_s=30.0, ping_s=10.0, backoff_base_s=0.05, backoff_cap_s=0.2)
    async with running_subscriber(server.url, namespace, timing) as (sub, state, _):
        await wait_for(lambda: sub._failures >= 2, what="failed attempts")
        assert not state.synced and not state.is_ready()
        server.start()
        await wait_for(lambda: sub.connected.is_set() and state.synced, timeout=15, what="recovery")
        assert state.is_ready()


def test_backoff_is_jittered_and_capped():
    timing = Timing(backoff_base_s=0.2, backoff_cap_s=5.0)
    rng = random.Random(7)
    delays = [backoff_with_jitter(n, timing, rng) for n in range(1, 40)]
    assert all(0.1 <= d <= 5.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 30, "jitter spreads retries"
    late = [backoff_with_jitter(20, timing, random.Random(i)) for i in range(200)]
    assert max(late) <= 5.0 and min(late) < 2.5


@pytest.mark.parametrize("reason", ["subscribe", "reconcile"])
async def test_request_reconcile_runs_a_pass(redis_server, namespace, reason):
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _):
        await wait_for(lambda: sub.reconciles >= 1, what="startup reconcile")
        before = sub.reconciles
        sub.request_reconcile(reason)
        await wait_for(lambda: sub.reconciles > before, what="requested reconcile")


async def test_half_open_connection_is_detected_by_the_watchdog(redis_server, namespace, redis_client):
    """Injected: every proxied connection silently stops carrying bytes (sockets stay open).
    Checked: the PING watchdog notices, the subscriber reconnects, and an activation converges."""
    from tests.blackhole_proxy import BlackholeProxy

    proxy = await BlackholeProxy(redis_server.port).start()
    timing = Timing(reconcile_s=60.0, watchdog_s=0.8, ping_s=0.2, backoff_base_s=0.05, backoff_cap_s=0.2)
    try:
        async with running_subscriber(proxy.url, namespace, timing) as (sub, state, metrics):
            await wait_for(lambda: sub.connected.is_set() and state.synced, what="subscribed via the proxy")
            assert proxy.blackhole() >= 1
            await wait_for(lambda: not sub.connected.is_set(), timeout=10, what="watchdog firing")
            await wait_for(
                lambda: sub.connected.is_set(), timeout=10, what="resubscribed on a new connection"
            )
            d1, _ = await publish_activate(Store(redis_client, Keys(namespace)), "qa", "v1")
            await wait_for(lambda: served(state, "qa") == d1, timeout=20, what="activation after half-open")
    finally:
        await proxy.stop()


async def test_an_unexpected_reconcile_error_does_not_stop_later_passes(
    redis_server, namespace, redis_client
):
    timing = Timing(reconcile_s=0.2, watchdog_s=30.0, ping_s=10.0)
    async with running_subscriber(redis_server.url, namespace, timing) as (sub, state, _):
        original = sub.store.list_releases
        calls = 0

        async def flaky():
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ValueError("a bug somewhere below")
            return await original()

        sub.store.list_releases = flaky
        d1, _ = await publish_activate(Store(redis_client, Keys(namespace)), "qa", "v1")
        await wait_for(lambda: served(state, "qa") == d1 and calls >= 2, what="a later pass")


async def test_backoff_keeps_growing_when_every_connection_dies_right_after_its_subscribe(
    redis_server, namespace, redis_client
):
    """Injected: the pubsub connection is killed as soon as it has subscribed, five times over.
    Checked: the failures add up (the backoff grows), and only a subscription that then stays up for
    `healthy_s` brings the backoff back to its floor."""
    timing = Timing(
        reconcile_s=60.0, watchdog_s=30.0, ping_s=10.0, backoff_base_s=0.01, backoff_cap_s=0.05, healthy_s=1.0
    )
    async with running_subscriber(redis_server.url, namespace, timing) as (sub, _, _):
        for kill in range(1, 6):
            await wait_for(lambda: sub.connected.is_set(), what=f"subscribe #{kill}")
            assert await redis_client.client_kill_filter(_type="pubsub") >= 1
            await wait_for(lambda k=kill: sub._failures >= k, what=f"failure #{kill} counted")
        assert sub._failures == 5, "a subscribe that did not last is not a recovery"
        await wait_for(lambda: sub.connected.is_set(), what="subscribed again")
        await wait_for(lambda: sub._failures == 0, timeout=5, what="reset after a healthy spell")


async def test_a_failed_reconcile_is_tried_again_long_before_the_next_period(
    redis_server, namespace, redis_client
):
    """The reconcile a subscribe asks for fails once (a Redis read timing out on a half-open connection):
    it is tried again within seconds, not after the 60 s period."""
    store = Store(redis_client, Keys(namespace))
    d1, _ = await publish_activate(store, "qa", "v1")
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _):
        real = sub.store.list_releases
        failures = []

        async def flaky():  # type: ignore[no-untyped-def]
            if not failures:
                failures.append(1)
                raise TimeoutError("Timeout reading from redis")
            return await real()

        sub.store.list_releases = flaky  # type: ignore[method-assign]
        await wait_for(
            lambda: state.synced and served(state, "qa") == d1, timeout=5, what="load after a retry"
        )
        assert failures == [1]
