"""Flows and their versions: immutable content-addressed blobs, their metadata and the flow index.

`VersionStore` is the part of the store that publishing and reading versions needs; `cluster.store.Store`
adds releases, history, audit, gc and fleet status on top of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from cluster.errors import AmbiguousHash, BadRequest, CorruptBlob, FlowNotFound, VersionNotFound
from cluster.flow.hashing import is_full_hash, is_hash_prefix, sha256_hex
from cluster.names import FLOW_NAME, check_flow_name
from cluster.store.keys import Keys
from cluster.store.release import PublishResult, VersionMeta
from cluster.store.scripts import load

log = logging.getLogger(__name__)

# Every command the store sends touches one slot or is a non-transactional pipeline, so a cluster client
# works as well as a single-node one.
RedisClient = aioredis.Redis | aioredis.RedisCluster

# Prefix matches reported in an AmbiguousHash error.
MAX_AMBIGUOUS = 10


class VersionStore:
    """Async access to one namespace's versions through a Redis or RedisCluster client without
    `decode_responses`."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        history_keep: int = 100,
        audit_keep: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if history_keep < 1 or audit_keep < 1:
            raise ValueError("history_keep and audit_keep must be at least 1")
        self.redis = redis
        self.keys = keys
        self.history_keep = history_keep
        self.audit_keep = audit_keep
        self.clock = clock
        self._publish = redis.register_script(load("publish"))

    # -- flows ------------------------------------------------------------------------------------
    async def list_flows(self) -> list[str]:
        """Every flow name in the index; a name that is not a valid flow name is logged and skipped, so
        one bad entry written by hand cannot stop every replica from reading the others."""
        names = sorted(as_text(f) for f in await self.redis.smembers(self.keys.flows()))
        valid = [name for name in names if FLOW_NAME.match(name)]
        for name in set(names) - set(valid):
            log.warning("skipping invalid flow name %r in %s", name, self.keys.flows())
        return valid

    # -- versions ---------------------------------------------------------------------------------
    async def publish(
        self, flow: str, data: bytes, digest: str, *, author: str, message: str, node_count: int
    ) -> PublishResult:
        """Store `data` (canonical bytes whose sha256 is `digest`) once; identical content writes nothing."""
        check_flow_name(flow)
        actual = sha256_hex(data)
        if actual != digest:
            raise BadRequest(
                f"content of flow {flow!r} hashes to {actual[:12]}, not {digest[:12]}", flow=flow, hash=digest
            )
        # Before the script (Redis Cluster puts this key in another slot): a listed flow without versions
        # is harmless, a stored version of an unlisted flow would be invisible.
        await self.redis.sadd(self.keys.flows(), flow)
        now = self.clock()
        k = self.keys
        reply = await self._publish(
            keys=[k.blob(flow, digest), k.meta(flow, digest), k.versions(flow), k.release(flow),
                  k.flow_audit(flow)],
            args=[data, digest, author, message, repr(now), len(data), node_count, self.audit_keep, flow],
        )  # fmt: skip
        status = as_text(reply[0])
        if status == "created":
            log.info("published flow=%s hash=%s by=%s size=%d", flow, digest[:12], author, len(data))
        elif status == "repaired":
            log.warning("rewrote corrupt stored bytes of flow=%s hash=%s by=%s", flow, digest[:12], author)
        return PublishResult(hash=digest, created=status == "created", repaired=status == "repaired")

    async def get_blob(self, flow: str, digest: str) -> bytes | None:
        """The stored bytes, unverified (see `get_verified_blob`); None if absent."""
        value = await self.redis.get(self.keys.blob(flow, digest))
        return value.encode() if isinstance(value, str) else value

    async def get_verified_blob(self, flow: str, digest: str) -> bytes:
        """The stored bytes after checking they still hash to `digest` (VersionNotFound / CorruptBlob)."""
        data = await self.get_blob(flow, digest)
        if data is None:
            raise VersionNotFound(flow, digest)
        actual = sha256_hex(data)
        if actual != digest:
            raise CorruptBlob(flow, digest, actual)
        return data

    async def get_meta(self, flow: str, digest: str) -> VersionMeta | None:
        return VersionMeta.from_hash(flow, digest, await self.redis.hgetall(self.keys.meta(flow, digest)))

    async def list_versions(self, flow: str, limit: int = 100) -> list[VersionMeta]:
        """Stored versions of a flow, newest first."""
        if limit < 1:
            return []
        digests = [as_text(d) for d in await self.redis.zrevrange(self.keys.versions(flow), 0, limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.hgetall(self.keys.meta(flow, digest))
            replies = await pipe.execute()
        metas = (VersionMeta.from_hash(flow, d, raw) for d, raw in zip(digests, replies, strict=True))
        return [m for m in metas if m is not None]

    async def resolve(self, flow: str, hash_or_prefix: str) -> str:
        """The full hash of a stored version from its hash or an unambiguous prefix of 8+ hex characters."""
        check_flow_name(flow)
        candidate = hash_or_prefix.strip().lower()
        if not is_hash_prefix(candidate):
            raise BadRequest(
                f"{hash_or_prefix!r} is not a version hash: give 8 to 64 hex characters",
                flow=flow,
                hash=hash_or_prefix,
            )
        versions = self.keys.versions(flow)
        if is_full_hash(candidate):
            if await self.redis.zscore(versions, candidate) is not None:
                return candidate
            matches: list[str] = []
        else:
            matches = []
            # Hex prefixes hold no glob metacharacters, so MATCH is exact prefix matching.
            async for member, _score in self.redis.zscan_iter(versions, match=f"{candidate}*"):
                matches.append(as_text(member))
                if len(matches) > MAX_AMBIGUOUS:
                    break
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise AmbiguousHash(flow, candidate, sorted(matches)[:MAX_AMBIGUOUS])
        if not await self.redis.sismember(self.keys.flows(), flow):
            raise FlowNotFound(flow)
        raise VersionNotFound(flow, hash_or_prefix)


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
