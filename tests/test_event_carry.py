"""What a release event carries: the record it announces and a small version's bytes, written by the
scripts in the same atomic step (against a real redis-server), decoded defensively, and used by a replica
instead of reads -- never trusted before they check out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from cluster.flow.hashing import content_address
from cluster.store.canary_store import CanaryWriter
from cluster.store.events import CARRY_MAX_BYTES, Carried, Prepare, ReleaseChanged, decode, encode
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.test_store import next_messages
from tests.test_worker_subscriber import SLOW, running_subscriber, served
from tests.worker_support import publish_activate, toy_doc, wait_for
from worker.carried import OfferedBlobs

FLOW = "qa"
HASH = "ab" * 32


def release(**carried: Any) -> ReleaseChanged:
    return ReleaseChanged(FLOW, HASH, 3, "ci", 1.5, "activate", carried=Carried(**carried))


# -- decoding ---------------------------------------------------------------------------------------
def test_a_blob_that_mentions_the_trailer_fields_is_split_at_the_real_trailer() -> None:
    blob = orjson.dumps({"label": ',"blob_hash":"' + "cd" * 32 + '","blob_size":3,"blob":{}}', "ü": "ß"})
    event = decode(encode(release(record={"hash": HASH, "generation": "3"}, blob_hash=HASH, blob=blob)))
    assert isinstance(event, ReleaseChanged) and event.carried is not None
    assert (event.carried.blob_hash, event.carried.blob) == (HASH, blob)
    assert event.carried.record == {"hash": HASH, "generation": "3"}


@given(st.binary(max_size=300), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4))
def test_any_carried_bytes_and_record_round_trip(blob: bytes, record: dict[str, str]) -> None:
    event = decode(encode(release(record=record, blob_hash=HASH, blob=blob)))
    assert isinstance(event, ReleaseChanged) and event.carried == Carried(record, HASH, blob)
    assert event == ReleaseChanged(FLOW, HASH, 3, "ci", 1.5)


def test_a_trailer_whose_size_does_not_match_is_ignored_and_the_event_still_counts() -> None:
    raw = encode(release(blob_hash=HASH, blob=b'{"a":1}'))
    event = decode(raw.replace(b'"blob_size":7', b'"blob_size":6'))
    assert event == ReleaseChanged(FLOW, HASH, 3, "ci", 1.5) and isinstance(event, ReleaseChanged)
    # The whole payload is valid JSON, so the event decodes; the bytes are not taken.
    assert event.carried is None


@pytest.mark.parametrize("record", [[1, 2], {"generation": 3}, "hash", None])
def test_a_record_that_is_not_an_object_of_text_is_ignored(record: Any) -> None:
    head = encode(ReleaseChanged(FLOW, HASH, 3, "ci", 1.5))[:-1]
    event = decode(head + b',"record":' + orjson.dumps(record) + b"}")
    assert isinstance(event, ReleaseChanged) and event.carried is None


def test_an_older_consumer_reads_a_carrying_event_as_a_plain_one() -> None:
    # What a replica without this decoder sees: one JSON object whose extra fields it ignores.
    raw = encode(release(record={"hash": HASH}, blob_hash=HASH, blob=b'{"nodes":[]}'))
    payload = orjson.loads(raw)
    assert {k: payload[k] for k in ("flow", "hash", "generation")} == {
        "flow": FLOW,
        "hash": HASH,
        "generation": 3,
    }


def test_offered_blobs_are_taken_once_verified_and_bounded() -> None:
    offered = OfferedBlobs(keep=2)
    for i in range(3):
        offered.put(FLOW, str(i), b"x")
    assert len(offered) == 2 and offered.take(FLOW, "0") is None
    # Taken only once they hash to their name; what was not needed is dropped unhashed.
    assert offered.take(FLOW, "2") is None and offered.take(FLOW, "1") is None and len(offered) == 0
    data, digest = toy_doc("v")
    offered.put(FLOW, digest, data)
    offered.put(FLOW, HASH, data)
    offered.drop(FLOW, HASH)
    assert offered.take(FLOW, digest) == data and offered.take(FLOW, digest) is None and len(offered) == 0


# -- the scripts --------------------------------------------------------------------------------------
async def one_event(store: Store, action: Any) -> ReleaseChanged:
    async with store.redis.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.channel())
        await action()
        [raw] = await next_messages(pubsub, 1)
    event = decode(raw)
    assert isinstance(event, ReleaseChanged)
    return event


async def test_a_version_above_the_limit_is_not_carried_but_the_record_is(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    store = Store(redis_client, Keys(namespace))
    data, digest = content_address({"label": "big", "pad": "x" * CARRY_MAX_BYTES})
    assert len(data) > CARRY_MAX_BYTES
    await store.publish(FLOW, data, digest, author="t", message="m", node_count=1)
    event = await one_event(store, lambda: store.activate(FLOW, digest, by="t", reason="r"))
    assert event.carried is not None and event.carried.blob is None
    assert event.carried.record is not None and event.carried.record["hash"] == digest


async def test_carrying_bytes_can_be_turned_off(redis_client: aioredis.Redis, namespace: str) -> None:
    store = Store(redis_client, Keys(namespace), carry_max_bytes=0)
    data, digest = toy_doc("v1")
    await store.publish(FLOW, data, digest, author="t", message="m", node_count=1)
    event = await one_event(store, lambda: store.activate(FLOW, digest, by="t", reason="r"))
    assert event.carried is not None and event.carried.blob is None and event.carried.record is not None


async def test_canary_changes_carry_the_record_and_only_a_start_carries_bytes(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    store = Store(redis_client, Keys(namespace))
    writer = CanaryWriter(store)
    v1, _ = await publish_activate(store, FLOW, "v1")
    data, v2 = toy_doc("v2")
    await store.publish(FLOW, data, v2, author="t", message="m", node_count=1)
    started = await one_event(
        store, lambda: writer.change(FLOW, "start", by="t", reason="r", digest=v2, percent=10.0)
    )
    assert started.carried is not None and (started.carried.blob_hash, started.carried.blob) == (v2, data)
    assert started.carried.record is not None and started.carried.record["canary_hash"] == v2
    resized = await one_event(store, lambda: writer.change(FLOW, "set", by="t", reason="r", percent=50.0))
    assert resized.carried is not None and resized.carried.blob is None
    assert resized.carried.record is not None and resized.carried.record["canary_percent"] == "50.0"


# -- a replica --------------------------------------------------------------------------------------
async def test_a_replica_swaps_on_a_carrying_event_without_reading_redis(
    redis_server: Any, namespace: str, redis_client: aioredis.Redis
) -> None:
    store = Store(redis_client, Keys(namespace))
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _):
        await wait_for(lambda: state.synced, what="first reconcile")
        reads: list[str] = []
        get_blob, get_release = sub.store.get_blob, sub.store.get_release

        async def blob(flow: str, digest: str) -> bytes | None:
            reads.append("blob")
            return await get_blob(flow, digest)

        async def record(flow: str) -> Any:
            reads.append("record")
            return await get_release(flow)

        sub.store.get_blob, sub.store.get_release = blob, record
        d1, _ = await publish_activate(store, FLOW, "v1")
        await wait_for(lambda: served(state, FLOW) == d1, what="event-driven load")
        assert reads == [] and len(sub.loader.offered) == 0
        # Without carried bytes the version is fetched, and the record still comes with the event.
        store.carry_max_bytes = 0
        d2, _ = await publish_activate(store, FLOW, "v2")
        await wait_for(lambda: served(state, FLOW) == d2, what="fetched load")
        assert reads == ["blob"]


async def test_carried_bytes_that_do_not_hash_to_their_name_are_never_loaded(
    redis_server: Any, namespace: str, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(namespace)
    store = Store(redis_client, keys, carry_max_bytes=0)
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _):
        await wait_for(lambda: state.synced, what="first reconcile")
        real, generation = await publish_activate(store, FLOW, "real")
        await wait_for(lambda: served(state, FLOW) == real, what="first version")
        # A forged event: the record of a new release, and other bytes under its hash.
        data, digest = toy_doc("next")
        await store.publish(FLOW, data, digest, author="t", message="m", node_count=1)
        record = {"hash": digest, "generation": str(generation + 1), "previous_hash": real}
        await redis_client.hset(keys.release(FLOW), mapping=record)
        forged_bytes, _ = toy_doc("forged")
        forged = ReleaseChanged(
            FLOW, digest, generation + 1, "t", 1.0, carried=Carried(record, digest, forged_bytes)
        )
        await redis_client.publish(keys.channel(), encode(forged))
        await wait_for(lambda: served(state, FLOW) == digest, what="the real bytes, fetched")
        assert state.snapshot.get(FLOW).compiled.label == "next"  # type: ignore[union-attr]
        assert "do not hash to" in caplog.text


async def test_a_carried_record_of_another_release_is_read_instead(
    redis_server: Any, namespace: str, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(namespace)
    store = Store(redis_client, keys)
    async with running_subscriber(redis_server.url, namespace, SLOW) as (sub, state, _):
        await wait_for(lambda: state.synced, what="first reconcile")
        d2, g2 = await publish_activate(store, FLOW, "v2")
        await wait_for(lambda: served(state, FLOW) == d2, what="second version")
        # An event for generation g2 + 1 that carries the record of g2: the replica reads the record.
        data3, d3 = toy_doc("v3")
        await store.publish(FLOW, data3, d3, author="t", message="m", node_count=1)
        stale = {"hash": d2, "generation": str(g2)}
        await redis_client.hset(keys.release(FLOW), mapping={"hash": d3, "generation": str(g2 + 1)})
        event = ReleaseChanged(FLOW, d3, g2 + 1, "t", 1.0, carried=Carried(stale))
        await redis_client.publish(keys.channel(), encode(event))
        await wait_for(lambda: served(state, FLOW) == d3, what="the record read")
        assert "carried another release's record" in caplog.text


def test_a_prepare_carries_bytes_the_same_way() -> None:
    blob = b'{"nodes":[],"label":"\xc3\xbc"}'
    prepare = Prepare(FLOW, HASH, "ro1", 4, "ci", 2.0, carried=Carried(None, HASH, blob))
    raw = encode(prepare)
    event = decode(raw)
    assert event == Prepare(FLOW, HASH, "ro1", 4, "ci", 2.0) and isinstance(event, Prepare)
    assert event.carried == Carried(None, HASH, blob)
    assert orjson.loads(raw)["rollout"] == "ro1"  # one JSON object for a consumer that knows no more
    assert decode(encode(Prepare(FLOW, HASH, "ro1", 4, "ci", 2.0))).carried is None  # type: ignore[union-attr]
