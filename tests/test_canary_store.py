"""The canary store script against a real redis-server: records, history, audit, events, refusals,
and how activations, rollbacks, gc and `unpin` interact with a canary."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from cluster.errors import GenerationConflict, VersionNotFound
from cluster.flow.hashing import content_address
from cluster.store.canary_store import CanaryConflict, CanaryWriter
from cluster.store.events import ReleaseChanged, decode, encode
from cluster.store.keys import Keys
from cluster.store.release import Release, rollback_target
from cluster.store.store import Store

FLOW = "support_qa"


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace), history_keep=100, audit_keep=1000)


@pytest.fixture
def writer(store: Store) -> CanaryWriter:
    return CanaryWriter(store)


async def put(store: Store, n: int) -> str:
    data, digest = content_address({"name": FLOW, "nodes": [{"id": "x", "type": "LLM", "params": {"n": n}}]})
    await store.publish(FLOW, data, digest, author="alice", message=f"v{n}", node_count=1)
    return digest


async def roll_back(store: Store, *, reason: str, unpin: bool = False) -> Release:
    """A default rollback as the control plane makes it: the previous release's version, activated again."""
    current = await store.get_release(FLOW)
    target = rollback_target(FLOW, current, await store.history(FLOW))
    return await store.activate(FLOW, target.hash, by="ci", reason=reason, action="rollback", unpin=unpin)


async def events_during(redis: aioredis.Redis, channel: str, action: Any) -> list[bytes]:
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=2.0)  # the subscribe confirmation
    await action()
    out = []
    while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
        out.append(message["data"])
    await pubsub.aclose()
    return out


async def test_start_set_promote_write_record_history_audit_and_events(
    store: Store, writer: CanaryWriter, redis_client: aioredis.Redis
) -> None:
    v1, v2 = await put(store, 1), await put(store, 2)
    await store.activate(FLOW, v1, by="ci", reason="first")
    started: list[Release] = []

    async def start() -> None:
        started.append(await writer.change(FLOW, "start", by="ci", reason="try v2", digest=v2, percent=10.0))

    raw_events = await events_during(redis_client, store.keys.channel(), start)
    release = started[0]
    assert (release.hash, release.generation, release.canary_hash, release.canary_percent) == (
        v1,
        2,
        v2,
        10.0,
    )
    assert release.action == "canary_start" and release.canary_by == "ci" and release.previous_hash == v1
    assert await store.get_release(FLOW) == release
    # The event is what events.encode gives for the release it announces, then what it carries: the
    # record as written and the canary version's bytes.
    announced = ReleaseChanged(FLOW, v1, 2, "ci", release.activated_at, "canary_start")
    [raw] = raw_events
    assert raw.startswith(encode(announced)[:-1] + b',"record":{')
    event = decode(raw)
    assert event == announced and isinstance(event, ReleaseChanged) and event.carried is not None
    record = await redis_client.hgetall(store.keys.release(FLOW))
    assert event.carried.record == {k.decode(): v.decode() for k, v in record.items()}
    assert (event.carried.blob_hash, event.carried.blob) == (v2, await store.get_blob(FLOW, v2))

    resized = await writer.change(FLOW, "set", by="bob", reason="more", percent=50)
    assert (resized.generation, resized.canary_percent, resized.canary_hash) == (3, 50.0, v2)
    # The canary keeps who started it and when.
    assert (resized.canary_by, resized.canary_started_at) == ("ci", release.canary_started_at)
    assert resized.canary_epoch == release.canary_epoch > 0

    promoted = await writer.change(FLOW, "promote", by="bob", reason="good")
    assert (promoted.hash, promoted.previous_hash, promoted.canary_hash, promoted.generation) == (
        v2,
        v1,
        None,
        4,
    )
    assert promoted.canary_epoch == 0.0
    assert await store.get_release(FLOW) == promoted

    history = await store.history(FLOW)
    assert [(h.generation, h.action, h.hash, h.canary_hash) for h in history] == [
        (4, "canary_promote", v2, None), (3, "canary_set", v1, v2), (2, "canary_start", v1, v2),
        (1, "activate", v1, None),
    ]  # fmt: skip
    assert history[1] == resized
    audit = await store.audit(FLOW)
    assert [(e["action"], e["by"], e.get("canary_hash")) for e in audit[:3]] == [
        ("canary_promote", "bob", v2), ("canary_set", "bob", v2), ("canary_start", "ci", v2),
    ]  # fmt: skip
    assert audit[0]["reason"] == "good" and audit[0]["generation"] == 4


async def test_abort_keeps_the_stable_version(store: Store, writer: CanaryWriter) -> None:
    v1, v2 = await put(store, 1), await put(store, 2)
    await store.activate(FLOW, v1, by="ci", reason="first")
    await writer.change(FLOW, "start", by="ci", reason="", digest=v2, percent=5)
    aborted = await writer.change(FLOW, "abort", by="auto-rollback", reason="errors")
    assert (aborted.hash, aborted.canary_hash, aborted.action, aborted.generation) == (
        v1,
        None,
        "canary_abort",
        3,
    )
    entry = (await store.audit(FLOW))[0]
    assert (entry["action"], entry["by"], entry["reason"], entry["canary_hash"]) == (
        "canary_abort", "auto-rollback", "errors", v2,
    )  # fmt: skip


async def test_refusals(store: Store, writer: CanaryWriter) -> None:
    v1, v2, v3 = await put(store, 1), await put(store, 2), await put(store, 3)
    refusals: list[tuple[str, Any]] = [
        ("no_release", writer.change(FLOW, "start", by="c", reason="", digest=v2, percent=5)),
    ]
    for code, call in refusals:
        with pytest.raises(CanaryConflict) as caught:
            await call
        assert caught.value.code == code and caught.value.http_status == 409
    await store.activate(FLOW, v1, by="ci", reason="first")
    for op in ("set", "promote", "abort"):
        with pytest.raises(CanaryConflict) as caught:
            await writer.change(FLOW, op, by="c", reason="", percent=5)
        assert caught.value.code == "no_canary"
    with pytest.raises(CanaryConflict) as caught:
        await writer.change(FLOW, "start", by="c", reason="", digest=v1, percent=5)
    assert caught.value.code == "canary_is_stable"
    with pytest.raises(VersionNotFound):
        await writer.change(FLOW, "start", by="c", reason="", digest="f" * 64, percent=5)
    await writer.change(FLOW, "start", by="c", reason="", digest=v2, percent=5)
    with pytest.raises(CanaryConflict) as caught:
        await writer.change(FLOW, "start", by="c", reason="", digest=v3, percent=5)
    assert caught.value.code == "canary_running" and caught.value.details["canary_hash"] == v2
    with pytest.raises(GenerationConflict) as conflict:
        await writer.change(FLOW, "abort", by="c", reason="", expected_generation=1)
    assert conflict.value.actual == 2
    # Nothing refused changed the record.
    release = await store.get_release(FLOW)
    assert release is not None and (release.generation, release.canary_hash) == (2, v2)


async def test_concurrent_aborts_with_cas_abort_once(store: Store, writer: CanaryWriter) -> None:
    v1, v2 = await put(store, 1), await put(store, 2)
    await store.activate(FLOW, v1, by="ci", reason="first")
    await writer.change(FLOW, "start", by="ci", reason="", digest=v2, percent=5)
    results = await asyncio.gather(
        *(writer.change(FLOW, "abort", by=f"g{i}", reason="", expected_generation=2) for i in range(5)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Release) for r in results) == 1
    assert all(isinstance(r, GenerationConflict | Release) for r in results)
    assert [e["action"] for e in await store.audit(FLOW)].count("canary_abort") == 1


async def test_activation_ends_a_canary_and_gc_keeps_the_canary_version(
    store: Store, writer: CanaryWriter
) -> None:
    v1, v2 = await put(store, 1), await put(store, 2)
    await store.activate(FLOW, v1, by="ci", reason="first")
    await writer.change(FLOW, "start", by="ci", reason="", digest=v2, percent=5)
    result = await store.gc(by="admin")
    assert result.removed_count == 0  # the canary's version is referenced by canary_hash
    v3 = await put(store, 3)
    await store.activate(FLOW, v3, by="ci", reason="hotfix")
    release = await store.get_release(FLOW)
    assert release is not None and release.hash == v3 and release.canary_hash is None


async def test_unpin_generation_is_set_by_unpin_and_outlives_later_releases(
    store: Store, writer: CanaryWriter, redis_client: aioredis.Redis
) -> None:
    v1, v2, v3 = await put(store, 1), await put(store, 2), await put(store, 3)
    first = await store.activate(FLOW, v1, by="ci", reason="first")
    assert first.unpin_generation == 0
    fixed = await store.activate(FLOW, v2, by="ci", reason="emergency", unpin=True)
    assert fixed.unpin_generation == 2 == (await store.get_release(FLOW)).unpin_generation  # type: ignore[union-attr]
    later = await store.activate(FLOW, v3, by="ci", reason="next")
    assert later.unpin_generation == 2
    canary = await writer.change(FLOW, "start", by="ci", reason="", digest=v1, percent=5)
    assert canary.unpin_generation == 2 == (await store.get_release(FLOW)).unpin_generation  # type: ignore[union-attr]
    rolled = await roll_back(store, reason="back", unpin=True)
    assert rolled.unpin_generation == rolled.generation == 5
    entry = (await store.audit(FLOW))[0]
    assert entry["action"] == "rollback" and entry["unpin"] == "1"
    raw = await redis_client.hget(store.keys.release(FLOW), "unpin_generation")
    assert raw == b"5"
    assert (
        orjson.loads((await redis_client.lrange(store.keys.history(FLOW), 1, 1))[0])["unpin_generation"] == 2
    )


async def test_rollback_after_promote_returns_to_the_old_stable(store: Store, writer: CanaryWriter) -> None:
    v1, v2 = await put(store, 1), await put(store, 2)
    await store.activate(FLOW, v1, by="ci", reason="first")
    await writer.change(FLOW, "start", by="ci", reason="", digest=v2, percent=5)
    await writer.change(FLOW, "promote", by="ci", reason="")
    rolled = await roll_back(store, reason="worse")
    assert rolled.hash == v1 and rolled.previous_hash == v2
    assert decode(encode(ReleaseChanged(FLOW, v1, 1, "x", 1.0, "canary_abort"))) is not None
