"""Conversations on a replica against a real redis-server: turns stored atomically, trimmed, with a sliding
TTL; a Redis that goes away degrades to an empty history and a bounded buffer, written when it returns."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cluster.components.conversation import ChatMessage
from cluster.store.conversations import ConversationRef, ConversationStore
from cluster.store.keys import Keys
from tests.redis_server import RedisServer
from worker.memory import Conversations
from worker.metrics import WorkerMetrics


def client(server: RedisServer) -> aioredis.Redis:
    redis = aioredis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    redis.set_retry(Retry(NoBackoff(), 0))
    return redis


def turn(conversations: Conversations, text: str, session: str = "chat-1", user: str | None = None) -> object:
    run = conversations.open("qa", "-", session, user)
    run.remember(ChatMessage("user", text, 1.0, "User"))
    run.remember(ChatMessage("assistant", f"re: {text}", 2.0, "AI"))
    return run


async def test_turns_are_stored_trimmed_and_expire(redis_server: RedisServer, namespace: str) -> None:
    redis = client(redis_server)
    keys = Keys(namespace)
    metrics = WorkerMetrics()
    conversations = Conversations(ConversationStore(redis, keys, max_messages=3, ttl_s=30), metrics)
    for text in ("one", "two"):
        assert await conversations.finish(turn(conversations, text, user="u-1")) is None  # type: ignore[arg-type]
    key = keys.conversation("qa", "-", "chat-1")
    assert await redis.llen(key) == 3  # trimmed to the newest 3 messages
    run = conversations.open("qa", "-", "chat-1", None)
    assert [m.content for m in await run.history(10)] == ["re: one", "two", "re: two"]
    assert [m.content for m in await run.history(1)] == ["re: two"]
    assert 25_000 < await redis.pttl(key) <= 30_000
    assert 25_000 < await redis.pttl(keys.conversations("qa")) <= 30_000
    # Another conversation id starts empty.
    assert await conversations.open("qa", "-", "chat-2", None).history(10) == []
    value = metrics.registry.get_sample_value
    assert value("flowfleet_conversation_messages_stored_total", {"flow": "qa"}) == 4
    assert value("flowfleet_conversation_history_reads_total", {"flow": "qa"}) == 3
    await redis.aclose()


async def test_redis_away_degrades_then_catches_up_in_order(
    make_redis_server: Callable[..., RedisServer], namespace: str
) -> None:
    server = make_redis_server()
    redis = client(server)
    keys = Keys(namespace)
    metrics = WorkerMetrics()
    conversations = Conversations(ConversationStore(redis, keys, max_messages=100, ttl_s=60), metrics)
    assert await conversations.finish(turn(conversations, "before")) is None  # type: ignore[arg-type]
    server.kill()
    run = conversations.open("qa", "-", "chat-1", None)
    assert await run.history(10) == []  # served anyway, with an empty history
    run.remember(ChatMessage("user", "during", 3.0))
    assert await conversations.finish(run) == {"history": "unavailable", "stored": "buffered"}
    assert await conversations.finish(turn(conversations, "still down")) == {"stored": "buffered"}  # type: ignore[arg-type]
    assert len(conversations.buffer) == 2
    server.restart()
    await redis.aclose()
    redis = client(server)
    conversations.store.redis = redis
    assert await conversations.flush() == 2
    history = await conversations.open("qa", "-", "chat-1", None).history(10)
    # Redis kept nothing on disk here, so only what the buffer held came back, in order.
    assert [m.content for m in history] == ["during", "still down", "re: still down"]
    value = metrics.registry.get_sample_value
    assert value("flowfleet_conversation_failures_total", {"kind": "read"}) == 1
    assert value("flowfleet_conversation_failures_total", {"kind": "write"}) == 2
    await redis.aclose()


async def test_the_buffer_is_bounded(make_redis_server: Callable[..., RedisServer], namespace: str) -> None:
    server = make_redis_server()
    redis = client(server)
    metrics = WorkerMetrics()
    store = ConversationStore(redis, Keys(namespace), max_messages=100, ttl_s=60)
    conversations = Conversations(store, metrics, buffer_size=2)
    server.kill()
    for text in ("a", "b", "c"):
        await conversations.finish(turn(conversations, text))  # type: ignore[arg-type]
    assert [t.messages[0].content for t in conversations.buffer] == ["b", "c"]
    assert conversations.dropped == 1
    assert (
        metrics.registry.get_sample_value("flowfleet_conversation_failures_total", {"kind": "overflow"}) == 1
    )
    await redis.aclose()


async def test_a_user_is_forgotten_across_flows(redis_server: RedisServer, namespace: str) -> None:
    redis = client(redis_server)
    store = ConversationStore(redis, Keys(namespace), max_messages=100, ttl_s=60)
    for flow in ("qa", "billing"):
        await store.append(
            ConversationRef(flow, "-", "s1"), [ChatMessage("user", "hi")], user_id="ada@example.com"
        )
    await store.append(ConversationRef("qa", "-", "s2"), [ChatMessage("user", "other")], user_id="bob")
    forgotten = await store.forget_user("ada@example.com")
    assert sorted((r.flow, r.id) for r in forgotten) == [("billing", "s1"), ("qa", "s1")]
    assert await store.read(ConversationRef("qa", "-", "s1")) == []
    assert [c["id"] for c in await store.list_conversations("qa")] == ["s2"]
    # No user id is ever part of a key name.
    assert not [k async for k in redis.scan_iter(f"{namespace}:*ada*")]
    await redis.aclose()
