"""The version store against a real redis-server: publish, activate (CAS + events), rollback, resolve."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from cluster.errors import (
    AmbiguousHash,
    BadRequest,
    CorruptBlob,
    FlowNotFound,
    GenerationConflict,
    VersionNotFound,
)
from cluster.flow.hashing import content_address
from cluster.store.events import ReleaseChanged, decode, encode
from cluster.store.keys import Keys
from cluster.store.release import NoPreviousRelease, Release, ReleaseNotFound, rollback_target
from cluster.store.store import Store

FLOW = "support_qa"


def doc(n: int, flow: str = FLOW) -> tuple[bytes, str]:
    return content_address(
        {"name": flow, "nodes": [{"id": "llm_1", "type": "LLM", "params": {"n": n}}], "edges": []}
    )


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace), history_keep=100, audit_keep=1000)


async def put(store: Store, n: int, flow: str = FLOW, author: str = "alice") -> str:
    data, digest = doc(n, flow)
    await store.publish(flow, data, digest, author=author, message=f"v{n}", node_count=1)
    return digest


async def test_publish_is_idempotent(store: Store, redis_client: aioredis.Redis) -> None:
    data, digest = doc(1)
    first = await store.publish(FLOW, data, digest, author="alice", message="first", node_count=1)
    assert first.created and first.hash == digest
    meta_before = await store.get_meta(FLOW, digest)
    audit_before = await store.audit(FLOW)

    again = await store.publish(FLOW, data, digest, author="bob", message="again", node_count=1)

    assert not again.created and not again.repaired and again.hash == digest
    assert await store.get_meta(FLOW, digest) == meta_before  # author/message of the first publish kept
    assert await store.audit(FLOW) == audit_before  # no audit entry for a no-op
    assert await redis_client.zcard(store.keys.versions(FLOW)) == 1
    assert await store.get_blob(FLOW, digest) == data
    assert await store.list_flows() == [FLOW]


async def test_publish_records_metadata_with_the_current_release_as_parent(store: Store) -> None:
    v1 = await put(store, 1)
    meta1 = await store.get_meta(FLOW, v1)
    assert meta1 is not None
    assert (meta1.author, meta1.message, meta1.node_count, meta1.parent) == ("alice", "v1", 1, None)
    assert meta1.size == len(doc(1)[0])
    await store.activate(FLOW, v1, by="alice", reason="first")

    v2 = await put(store, 2, author="bob")
    meta2 = await store.get_meta(FLOW, v2)
    assert meta2 is not None and meta2.parent == v1 and meta2.author == "bob"
    assert [m.hash for m in await store.list_versions(FLOW)] == [v2, v1]
    assert [m.hash for m in await store.list_versions(FLOW, limit=1)] == [v2]
    assert await store.list_versions(FLOW, limit=0) == []
    entry = (await store.audit(FLOW))[0]
    assert (entry["action"], entry["hash"], entry["by"], entry["parent"]) == ("publish", v2, "bob", v1)


async def test_publish_refuses_bytes_that_do_not_match_the_hash(store: Store) -> None:
    data, digest = doc(1)
    with pytest.raises(BadRequest):
        await store.publish(FLOW, data + b" ", digest, author="a", message="", node_count=1)
    assert await store.get_blob(FLOW, digest) is None


async def test_republishing_repairs_a_corrupt_blob(store: Store, redis_client: aioredis.Redis) -> None:
    digest = await put(store, 1)
    await redis_client.set(store.keys.blob(FLOW, digest), b'{"tampered":true}')
    with pytest.raises(CorruptBlob):
        await store.get_verified_blob(FLOW, digest)

    result = await store.publish(FLOW, doc(1)[0], digest, author="alice", message="again", node_count=1)

    assert result.repaired and not result.created
    assert await store.get_verified_blob(FLOW, digest) == doc(1)[0]
    assert (await store.audit(FLOW))[0]["action"] == "repair"


async def test_activate_writes_release_history_and_audit(store: Store) -> None:
    v1, v2 = await put(store, 1), await put(store, 2)
    r1 = await store.activate(FLOW, v1, by="alice", reason="launch")
    r2 = await store.activate(FLOW, v2[:10], by="bob", reason="better prompt", expected_generation=1)

    assert (r1.generation, r1.previous_hash) == (1, None)
    assert (r2.hash, r2.generation, r2.previous_hash, r2.activated_by) == (v2, 2, v1, "bob")
    assert await store.get_release(FLOW) == r2
    assert await store.history(FLOW) == [r2, r1]
    assert await store.list_releases() == {FLOW: r2}
    entry = (await store.audit(FLOW))[0]
    assert (entry["action"], entry["hash"], entry["generation"], entry["by"]) == ("activate", v2, 2, "bob")
    assert entry["previous_hash"] == v1 and entry["reason"] == "better prompt"


async def test_expected_generation_zero_means_never_activated(store: Store) -> None:
    v1, v2 = await put(store, 1), await put(store, 2)
    first = await store.activate(FLOW, v1, by="a", reason="", expected_generation=0)
    assert first.generation == 1
    with pytest.raises(GenerationConflict) as caught:
        await store.activate(FLOW, v2, by="b", reason="", expected_generation=0)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert caught.value.details == {"flow": FLOW, "expected_generation": 0, "actual_generation": 1}


async def test_activate_refuses_a_missing_blob(store: Store, redis_client: aioredis.Redis) -> None:
    v1 = await put(store, 1)
    await store.activate(FLOW, v1, by="a", reason="")
    _, never_stored = doc(99)
    with pytest.raises(VersionNotFound):
        await store.activate(FLOW, never_stored, by="a", reason="")
    # Stored once, then deleted behind the store's back.
    v2 = await put(store, 2)
    await redis_client.delete(store.keys.blob(FLOW, v2))
    with pytest.raises(VersionNotFound):
        await store.activate(FLOW, v2, by="a", reason="")
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.generation) == (v1, 1)
    assert len(await store.history(FLOW)) == 1


async def test_activate_refuses_a_corrupt_blob_without_announcing_it(
    store: Store, redis_client: aioredis.Redis
) -> None:
    v1 = await put(store, 1)
    await redis_client.set(store.keys.blob(FLOW, v1), doc(1)[0].replace(b'"n":1', b'"n":7'))
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.channel())
        with pytest.raises(CorruptBlob) as caught:
            await store.activate(FLOW, v1, by="a", reason="")
        assert caught.value.details["hash"] == v1
        # The ping is published after the refused activation: if the refusal had announced anything,
        # that message would arrive first.
        await store.redis.publish(store.keys.channel(), b"marker")
        messages = await next_messages(pubsub, 1)
    assert messages == [b"marker"]
    assert await store.get_release(FLOW) is None


async def test_concurrent_activations_with_the_same_expectation_only_one_wins(
    store: Store, redis_client: aioredis.Redis
) -> None:
    digests = [await put(store, n) for n in range(51)]
    await store.activate(FLOW, digests[0], by="setup", reason="")

    async def attempt(n: int) -> Release | GenerationConflict:
        try:
            return await store.activate(FLOW, digests[n], by=f"user{n}", reason="", expected_generation=1)
        except GenerationConflict as e:
            return e

    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.channel())
        outcomes = await asyncio.gather(*(attempt(n) for n in range(1, 51)))
        await redis_client.publish(store.keys.channel(), b"marker")
        # Everything published before the marker arrives before it: only the winner announced anything.
        announced = await next_messages(pubsub, 2)
    assert announced[1] == b"marker"
    event = decode(announced[0])
    assert isinstance(event, ReleaseChanged) and event.generation == 2

    winners = [o for o in outcomes if isinstance(o, Release)]
    conflicts = [o for o in outcomes if isinstance(o, GenerationConflict)]
    assert len(winners) == 1 and len(conflicts) == 49
    assert all(c.expected == 1 and c.actual == 2 for c in conflicts)
    current = await store.get_release(FLOW)
    assert current == winners[0] and current.generation == 2 and current.previous_hash == digests[0]
    assert event.hash == current.hash and event.by == current.activated_by
    history = await store.history(FLOW)
    assert [r.generation for r in history] == [2, 1] and history[0] == current
    assert await redis_client.llen(store.keys.history(FLOW)) == 2


async def test_subscriber_sees_every_activation_after_its_release_record(store: Store) -> None:
    digests = [await put(store, n) for n in range(5)]
    count = 40
    reader = Store(aioredis.Redis.from_url(_url(store)), store.keys)
    seen: list[ReleaseChanged] = []
    try:
        async with store.redis.pubsub() as pubsub:
            await pubsub.subscribe(store.keys.channel())

            async def activate_all() -> None:
                # Concurrent activations without expectation: every one must still get its own event.
                await asyncio.gather(
                    *(store.activate(FLOW, digests[i % 5], by=f"u{i}", reason="") for i in range(count))
                )

            task = asyncio.create_task(activate_all())
            for raw in await next_messages(pubsub, count):
                event = decode(raw)
                assert isinstance(event, ReleaseChanged)
                # Read in the handler: the record must already reflect this event (or a later one).
                release = await reader.get_release(FLOW)
                assert release is not None and release.generation >= event.generation
                entry = next(r for r in await reader.history(FLOW) if r.generation == event.generation)
                assert (entry.hash, entry.activated_by) == (event.hash, event.by)
                assert entry.activated_at == event.at
                seen.append(event)
            await task
    finally:
        await reader.redis.aclose()
    assert [e.generation for e in seen] == list(range(1, count + 1))


async def test_the_published_payload_is_what_encode_produces_then_what_it_carries(store: Store) -> None:
    v1 = await put(store, 1)
    async with store.redis.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.channel())
        release = await store.activate(FLOW, v1, by='o\'brien "ops" / ünïcode', reason="r")
        [raw] = await next_messages(pubsub, 1)
    expected = ReleaseChanged(FLOW, v1, release.generation, 'o\'brien "ops" / ünïcode', release.activated_at)
    event = decode(raw)
    assert event == expected and isinstance(event, ReleaseChanged)
    # The fields exactly as encode writes them, then the record and the version's bytes.
    assert raw.startswith(encode(expected)[:-1] + b',"record":{')
    assert event.carried is not None
    record = await store.redis.hgetall(store.keys.release(FLOW))
    assert event.carried.record == {k.decode(): v.decode() for k, v in record.items()}
    assert (event.carried.blob_hash, event.carried.blob) == (v1, await store.get_blob(FLOW, v1))
    assert raw.endswith(b',"blob":' + doc(1)[0] + b"}")


async def roll_back(store: Store, *, to_generation: int | None = None) -> Release:
    """What the control plane's rollback asks of the store: the earlier release's version, activated again
    as a rollback, compare-and-set on the generation it was chosen from (control.service)."""
    current = await store.get_release(FLOW)
    target = rollback_target(FLOW, current, await store.history(FLOW), to_generation=to_generation)
    expected = current.generation if current is not None else None
    return await store.activate(
        FLOW, target.hash, by="ops", reason="", action="rollback", expected_generation=expected
    )


async def test_rollback_chains_like_rollout_undo(store: Store) -> None:
    v1, v2, v3 = await put(store, 1), await put(store, 2), await put(store, 3)
    for digest in (v1, v2, v3):
        await store.activate(FLOW, digest, by="dev", reason="")

    back = await roll_back(store)
    assert (back.hash, back.generation, back.previous_hash, back.action) == (v2, 4, v3, "rollback")
    again = await roll_back(store)
    assert (again.hash, again.generation, again.previous_hash) == (v3, 5, v2)
    to_gen = await roll_back(store, to_generation=1)
    assert (to_gen.hash, to_gen.generation) == (v1, 6)
    to_hash = await store.activate(FLOW, v2[:8], by="ops", reason="", action="rollback")
    assert (to_hash.hash, to_hash.generation) == (v2, 7)
    assert [r.action for r in await store.history(FLOW)] == ["rollback"] * 4 + ["activate"] * 3
    assert (await store.audit(FLOW))[0]["action"] == "rollback"


async def test_rollback_skips_reactivations_of_the_current_version(store: Store) -> None:
    v1, v2 = await put(store, 1), await put(store, 2)
    for digest in (v1, v2, v2):
        await store.activate(FLOW, digest, by="dev", reason="")
    back = await roll_back(store)
    assert (back.hash, back.generation) == (v1, 4)


async def test_rollback_errors(store: Store) -> None:
    v1 = await put(store, 1)
    with pytest.raises(NoPreviousRelease):  # published, never activated
        await roll_back(store)
    await store.activate(FLOW, v1, by="dev", reason="")
    with pytest.raises(NoPreviousRelease):  # only one release
        await roll_back(store)
    with pytest.raises(ReleaseNotFound):
        await roll_back(store, to_generation=9)
    with pytest.raises(VersionNotFound):
        await store.activate(FLOW, doc(9)[1], by="ops", reason="", action="rollback")
    v2 = await put(store, 2)
    await store.activate(FLOW, v2, by="dev", reason="")
    with pytest.raises(GenerationConflict):
        await store.activate(FLOW, v1, by="ops", reason="", action="rollback", expected_generation=1)
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.generation) == (v2, 2)


async def test_history_keeps_only_the_newest_entries(redis_client: aioredis.Redis, namespace: str) -> None:
    store = Store(redis_client, Keys(namespace), history_keep=5)
    digests = [await put(store, n) for n in range(3)]
    for i in range(12):
        await store.activate(FLOW, digests[i % 3], by="dev", reason=str(i))
    history = await store.history(FLOW, limit=50)
    assert [r.generation for r in history] == [12, 11, 10, 9, 8]
    assert await redis_client.llen(store.keys.history(FLOW)) == 5
    assert [r.generation for r in await store.history(FLOW, limit=2)] == [12, 11]
    with pytest.raises(ReleaseNotFound):  # trimmed away
        rollback_target(FLOW, history[0], await store.history(FLOW), to_generation=3)


async def test_audit_stream_is_capped(redis_client: aioredis.Redis, namespace: str) -> None:
    keep = 10
    store = Store(redis_client, Keys(namespace), audit_keep=keep)
    v1 = await put(store, 1)
    for _ in range(400):
        await store.activate(FLOW, v1, by="dev", reason="")
    # MAXLEN ~ trims whole stream nodes: the length stays below keep + one node's worth of entries.
    node_entries = int((await redis_client.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    length = await redis_client.xlen(store.keys.flow_audit(FLOW))
    assert keep <= length < keep + node_entries < 401
    assert len(await store.audit(FLOW, limit=5)) == 5


async def test_audit_merges_every_flow_newest_first(store: Store) -> None:
    a = await put(store, 1, flow="alpha")
    b = await put(store, 1, flow="beta")
    await store.activate("alpha", a, by="x", reason="")
    await store.activate("beta", b, by="y", reason="")
    entries = await store.audit()
    assert [(e["action"], e["flow"]) for e in entries] == [
        ("activate", "beta"), ("activate", "alpha"), ("publish", "beta"), ("publish", "alpha"),
    ]  # fmt: skip
    assert [e["flow"] for e in await store.audit(limit=1)] == ["beta"]


async def test_resolve_short_hashes(store: Store, redis_client: aioredis.Redis) -> None:
    digest = await put(store, 1)
    assert await store.resolve(FLOW, digest) == digest
    assert await store.resolve(FLOW, digest[:8]) == digest
    assert await store.resolve(FLOW, digest[:12].upper()) == digest
    with pytest.raises(BadRequest):
        await store.resolve(FLOW, digest[:7])
    with pytest.raises(BadRequest):
        await store.resolve(FLOW, "zzzzzzzzzz")
    missing = "0" * 64 if not digest.startswith("0") else "1" * 64
    with pytest.raises(VersionNotFound):
        await store.resolve(FLOW, missing[:10])
    with pytest.raises(VersionNotFound):
        await store.resolve(FLOW, missing)
    with pytest.raises(FlowNotFound):
        await store.resolve("elsewhere", digest[:8])
    # Two versions sharing an 8-character prefix: index entries are enough for resolution.
    twin = digest[:8] + ("0" if digest[8] != "0" else "1") * 56
    await redis_client.zadd(store.keys.versions(FLOW), {twin: 1.0})
    with pytest.raises(AmbiguousHash) as caught:
        await store.resolve(FLOW, digest[:8])
    assert sorted(caught.value.details["matches"]) == sorted([digest, twin])
    assert await store.resolve(FLOW, digest[:9]) == digest


async def test_gc_removes_only_unreferenced_versions(store: Store, redis_client: aioredis.Redis) -> None:
    v = [await put(store, n) for n in range(4)]
    other = await put(store, 1, flow="other")  # never activated: nothing references it
    for digest in (v[0], v[1]):
        await store.activate(FLOW, digest, by="dev", reason="")

    result = await store.gc(by="admin")

    assert set(result.removed) == {FLOW, "other"}
    assert sorted(result.removed[FLOW]) == sorted((v[2], v[3])) and result.removed["other"] == (other,)
    assert result.kept == 2 and result.bytes_freed == 2 * len(doc(2)[0]) + len(doc(1, "other")[0])
    for gone in (v[2], v[3]):
        assert await store.get_blob(FLOW, gone) is None and await store.get_meta(FLOW, gone) is None
        with pytest.raises(VersionNotFound):
            await store.resolve(FLOW, gone)
    for kept in (v[0], v[1]):
        assert await store.get_verified_blob(FLOW, kept) and await store.get_meta(FLOW, kept)
    assert (await store.audit())[0]["action"] == "gc"
    # Rolling back to the previous release still works: its blob was referenced by history.
    assert (await roll_back(store)).hash == v[0]
    assert (await store.gc()).removed_count == 0


async def test_gc_keeps_versions_referenced_only_by_history(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    store = Store(redis_client, Keys(namespace), history_keep=2)
    v = [await put(store, n) for n in range(3)]
    for digest in v:
        await store.activate(FLOW, digest, by="dev", reason="")
    # History holds generations 3 (v2, previous v1) and 2 (v1, previous v0): v0 survives as a previous_hash.
    result = await store.gc()
    assert result.removed_count == 0
    await store.activate(FLOW, v[2], by="dev", reason="")
    result = await store.gc()
    assert dict(result.removed) == {FLOW: (v[0],)}


async def test_gc_spares_young_versions(store: Store) -> None:
    digest = await put(store, 1)
    result = await store.gc(min_age_s=3600)
    assert result.removed_count == 0 and result.kept == 1
    assert await store.get_blob(FLOW, digest) is not None


async def next_messages(pubsub: Any, count: int, timeout: float = 10.0) -> list[bytes]:
    """The data of the next `count` channel messages, waiting at most `timeout` seconds in total."""
    messages: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(messages) < count:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"got {len(messages)} of {count} messages within {timeout}s")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
        if message is not None and message["type"] == "message":
            messages.append(message["data"])
    return messages


def _url(store: Store) -> str:
    kwargs = store.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


async def test_one_bad_index_entry_or_record_does_not_hide_the_other_releases(
    store: Store, redis_client: aioredis.Redis
) -> None:
    data, digest = doc(1)
    await store.publish(FLOW, data, digest, author="a", message="m", node_count=1)
    await store.activate(FLOW, digest, by="a", reason="r")
    # Written by hand, as an operator or a foreign tool might: a name no flow can have, and a flow
    # whose release record lost its generation.
    await redis_client.sadd(store.keys.flows(), "not a {valid} name", "broken")
    await redis_client.hset(store.keys.release("broken"), mapping={"hash": digest})
    releases = await store.list_releases()
    assert list(releases) == [FLOW]
    assert releases[FLOW].hash == digest
    assert "broken" in await store.list_flows()


async def test_the_first_release_writes_previous_hash_the_same_in_record_history_and_audit(
    store: Store, redis_client: aioredis.Redis
) -> None:
    """A Redis hash has no null: the record says "" for "no previous release", and so do the first history
    entry (it said null) and the audit entry; the reader takes all of them as None."""
    v1 = await put(store, 1)
    await store.activate(FLOW, v1, by="alice", reason="first")
    record = await redis_client.hgetall(store.keys.release(FLOW))
    [entry] = await redis_client.lrange(store.keys.history(FLOW), 0, -1)
    entries = await redis_client.xrange(store.keys.flow_audit(FLOW))
    [audit] = [fields for _, fields in entries if fields[b"action"] == b"activate"]
    assert record[b"previous_hash"] == b"" and audit[b"previous_hash"] == b""
    assert orjson.loads(entry)["previous_hash"] == ""
    current, [first] = await store.get_release(FLOW), await store.history(FLOW)
    assert current is not None and current.previous_hash is None and first.previous_hash is None
    assert current == first
    # An entry written before (null) reads the same.
    older = orjson.loads(entry) | {"previous_hash": None}
    assert Release.from_json(FLOW, orjson.dumps(older)) == first
