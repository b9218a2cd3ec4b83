"""Conversations in Redis: the chat memory every replica shares (docs/redis-layout.md, "Conversations").

A conversation is a LIST of JSON messages under `Keys.conversation(flow, principal, id)`, oldest first.
A turn appends its messages in one MULTI/EXEC with the trim, the sliding TTL and the flow's index entry
(all in the flow's hash slot); the user index (another slot) follows. Users are indexed by the sha256 of
their user_id, so no user id is ever part of a key name.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from cluster.components.conversation import ChatMessage
from cluster.store.keys import Keys

ANONYMOUS = "-"


def user_digest(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ConversationRef:
    flow: str
    principal: str
    id: str

    @property
    def member(self) -> str:
        return f"{self.principal}:{self.id}"

    @classmethod
    def from_member(cls, flow: str, member: str) -> ConversationRef:
        principal, _, conversation_id = member.partition(":")
        return cls(flow, principal, conversation_id)


def encode(message: ChatMessage) -> bytes:
    return orjson.dumps(
        {"role": message.role, "content": message.content, "at": message.at, "sender": message.sender}
    )


def decode(raw: bytes | str) -> ChatMessage | None:
    """A stored message, or None for an entry that is not one (written by hand, say): it is skipped."""
    try:
        data = orjson.loads(raw)
        return ChatMessage(
            str(data["role"]), str(data["content"]), float(data.get("at", 0.0)), str(data.get("sender", ""))
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class ConversationStore:
    def __init__(
        self, redis: aioredis.Redis | aioredis.RedisCluster, keys: Keys, *, max_messages: int, ttl_s: float
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.max_messages = max_messages
        self.ttl_ms = max(1000, int(ttl_s * 1000))

    def _key(self, ref: ConversationRef) -> str:
        return self.keys.conversation(ref.flow, ref.principal, ref.id)

    async def history(self, ref: ConversationRef, limit: int) -> list[ChatMessage]:
        """The last `limit` messages, oldest first."""
        if limit <= 0:
            return []
        raw = await self.redis.lrange(self._key(ref), -limit, -1)
        return [m for m in map(decode, raw) if m is not None]

    async def append(
        self, ref: ConversationRef, messages: Sequence[ChatMessage], user_id: str | None = None
    ) -> None:
        """Append a turn's messages atomically, trim to the newest `max_messages`, slide the TTL."""
        if not messages:
            return
        key, now = self._key(ref), time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *(encode(m) for m in messages))
            pipe.ltrim(key, -self.max_messages, -1)
            pipe.pexpire(key, self.ttl_ms)
            pipe.zadd(self.keys.conversations(ref.flow), {ref.member: now})
            pipe.pexpire(self.keys.conversations(ref.flow), self.ttl_ms)
            await pipe.execute()
        if user_id is not None:
            users = self.keys.user_conversations(user_digest(user_id))
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.sadd(users, f"{ref.flow} {ref.member}")
                pipe.pexpire(users, self.ttl_ms)
                await pipe.execute()

    async def list_conversations(self, flow: str, limit: int = 100) -> list[dict[str, Any]]:
        """The flow's live conversations, most recent first (index entries of expired ones are pruned)."""
        index = self.keys.conversations(flow)
        await self.redis.zremrangebyscore(index, 0, time.time() - self.ttl_ms / 1000)
        rows: Any = await self.redis.zrevrange(index, 0, limit - 1, withscores=True)
        out = []
        for member, score in rows:
            ref = ConversationRef.from_member(flow, member.decode() if isinstance(member, bytes) else member)
            out.append({"principal": ref.principal, "id": ref.id, "last_active": score})
        return out

    async def read(self, ref: ConversationRef) -> list[ChatMessage]:
        raw = await self.redis.lrange(self._key(ref), 0, -1)
        return [m for m in map(decode, raw) if m is not None]

    async def delete(self, ref: ConversationRef) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(ref))
            pipe.zrem(self.keys.conversations(ref.flow), ref.member)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def forget_user(self, user_id: str) -> list[ConversationRef]:
        """Delete every conversation indexed for `user_id`, across flows; returns what was deleted."""
        users = self.keys.user_conversations(user_digest(user_id))
        deleted = []
        for raw in await self.redis.smembers(users):
            flow, _, member = (raw.decode() if isinstance(raw, bytes) else raw).partition(" ")
            ref = ConversationRef.from_member(flow, member)
            if await self.delete(ref):
                deleted.append(ref)
        await self.redis.delete(users)
        return deleted
