"""The version store: immutable content-addressed blobs, release records, history, audit and fleet status.

Redis is the source of truth; every key comes from `cluster.keys.Keys`. Writes that must be atomic
(publish, activate, gc) are Lua scripts touching one flow's keys only, so they also run on Redis Cluster.

    store = Store(await connect(settings.redis_url), Keys(settings.namespace))
    result = await store.publish("support_qa", data, digest, author="ci", message="fix", node_count=3)
    release = await store.activate("support_qa", result.hash, by="ci", reason="fix")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from cluster import audit, fleet, gc
from cluster.errors import (
    AmbiguousHash,
    BadRequest,
    CorruptBlob,
    FlowNotFound,
    GenerationConflict,
    VersionNotFound,
)
from cluster.events import Event, encode, release_payload_parts
from cluster.hashing import is_full_hash, is_hash_prefix, sha256_hex
from cluster.keys import FLOW_NAME, Keys, check_flow_name
from cluster.release import (
    CorruptRecord,
    GcResult,
    NoPreviousRelease,
    PublishResult,
    Release,
    ReleaseNotFound,
    VersionMeta,
    rollback_target,
)
from cluster.scripts import load

# The value types are re-exported so callers can import the whole store API from this module.
__all__ = [
    "GcResult", "NoPreviousRelease", "PublishResult", "Release", "ReleaseNotFound", "Store", "VersionMeta",
]  # fmt: skip

log = logging.getLogger(__name__)

# Every command the store sends touches one slot or is a non-transactional pipeline, so a cluster client
# works as well as a single-node one.
RedisClient = aioredis.Redis | aioredis.RedisCluster

# Prefix matches reported in an AmbiguousHash error.
MAX_AMBIGUOUS = 10


class Store:
    """Async access to one namespace through a Redis or RedisCluster client without `decode_responses`."""

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
        self._activate = redis.register_script(load("activate"))
        self._gc = redis.register_script(load("gc"))

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
        status = _text(reply[0])
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
        digests = [_text(d) for d in await self.redis.zrevrange(self.keys.versions(flow), 0, limit - 1)]
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
                matches.append(_text(member))
                if len(matches) > MAX_AMBIGUOUS:
                    break
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise AmbiguousHash(flow, candidate, sorted(matches)[:MAX_AMBIGUOUS])
        if not await self.redis.sismember(self.keys.flows(), flow):
            raise FlowNotFound(flow)
        raise VersionNotFound(flow, hash_or_prefix)

    # -- releases ---------------------------------------------------------------------------------
    async def get_release(self, flow: str) -> Release | None:
        return Release.from_hash(flow, await self.redis.hgetall(self.keys.release(flow)))

    async def list_flows(self) -> list[str]:
        """Every flow name in the index; a name that is not a valid flow name is logged and skipped, so
        one bad entry written by hand cannot stop every replica from reading the others."""
        names = sorted(_text(f) for f in await self.redis.smembers(self.keys.flows()))
        valid = [name for name in names if FLOW_NAME.match(name)]
        for name in set(names) - set(valid):
            log.warning("skipping invalid flow name %r in %s", name, self.keys.flows())
        return valid

    async def list_releases(self) -> dict[str, Release]:
        """Every flow that has a release record, by name."""
        flows = await self.list_flows()
        async with self.redis.pipeline(transaction=False) as pipe:
            for flow in flows:
                pipe.hgetall(self.keys.release(flow))
            replies = await pipe.execute()
        releases: dict[str, Release] = {}
        for flow, raw in zip(flows, replies, strict=True):
            try:
                release = Release.from_hash(flow, raw)
            except CorruptRecord as e:
                # One unreadable record must not hide every other flow's release.
                log.warning("%s", e)
                continue
            if release is not None:
                releases[flow] = release
        return releases

    async def activate(
        self,
        flow: str,
        digest: str,
        *,
        by: str,
        reason: str,
        expected_generation: int | None = None,
        action: str = "activate",
        unpin: bool = False,
    ) -> Release:
        """Make `digest` (a hash or unambiguous prefix) current as the next generation, and announce it.

        The blob is read back and verified first, so a corrupt version is refused (CorruptBlob) before
        anything is announced. With `expected_generation`, a release made meanwhile by someone else
        makes this fail with GenerationConflict instead of silently overriding it. `unpin` makes every
        session of the flow leave its pinned version for this one (docs/canary.md).
        """
        digest = digest if is_full_hash(digest) else await self.resolve(flow, digest)
        await self.get_verified_blob(flow, digest)
        now = self.clock()
        head, tail = release_payload_parts(flow=flow, hash=digest, by=by, at=now, action=action)
        body = orjson.dumps(
            {"hash": digest, "activated_by": by, "activated_at": now, "reason": reason, "action": action}
        )
        k = self.keys
        reply = await self._activate(
            keys=[k.release(flow), k.history(flow), k.blob(flow, digest), k.flow_audit(flow)],
            args=[flow, digest, "" if expected_generation is None else expected_generation, by, reason,
                  action, repr(now), self.history_keep, self.audit_keep, k.channel(), head, tail, body,
                  "1" if unpin else "0"],
        )  # fmt: skip
        status, generation = _text(reply[0]), int(reply[1])
        if status == "conflict":
            assert expected_generation is not None
            raise GenerationConflict(flow, expected_generation, generation)
        if status == "missing":
            # The blob vanished between the check and the script (a concurrent gc).
            raise VersionNotFound(flow, digest)
        previous = _text(reply[2]) or None
        log.info(
            "%s flow=%s hash=%s generation=%d previous=%s by=%s",
            action, flow, digest[:12], generation, (previous or "-")[:12], by,
        )  # fmt: skip
        unpin_generation = int(reply[3]) if len(reply) > 3 else 0
        return Release(flow, digest, generation, previous, by, now, reason, action,
                       unpin_generation=unpin_generation)  # fmt: skip

    async def rollback(
        self,
        flow: str,
        *,
        by: str,
        reason: str,
        to_generation: int | None = None,
        to_hash: str | None = None,
        expected_generation: int | None = None,
        unpin: bool = False,
    ) -> Release:
        """Activate an earlier version as a new generation (default: the release before the current one).

        Without an explicit target, the target depends on what is current, so the activation is
        compare-and-set against the generation it was computed from even if the caller gave none.
        """
        if to_generation is not None and to_hash is not None:
            raise BadRequest("give either a generation or a hash to roll back to, not both", flow=flow)
        if to_hash is not None:
            digest = await self.resolve(flow, to_hash)
        else:
            current = await self.get_release(flow)
            if current is None and not await self.redis.sismember(self.keys.flows(), flow):
                raise FlowNotFound(flow)
            target = rollback_target(
                flow, current, await self.history(flow, self.history_keep), to_generation=to_generation
            )
            digest = target.hash
            if expected_generation is None and to_generation is None and current is not None:
                expected_generation = current.generation
        return await self.activate(
            flow,
            digest,
            by=by,
            reason=reason,
            expected_generation=expected_generation,
            action="rollback",
            unpin=unpin,
        )

    async def history(self, flow: str, limit: int = 100) -> list[Release]:
        """Releases of a flow, newest first (the first one is the current release)."""
        if limit < 1:
            return []
        raw = await self.redis.lrange(self.keys.history(flow), 0, limit - 1)
        entries = (Release.from_json(flow, item) for item in raw)
        return [e for e in entries if e is not None]

    async def publish_event(self, event: Event) -> int:
        """PUBLISH an event that changes no record (ping); returns how many subscribers received it."""
        receivers: int = await self.redis.publish(self.keys.channel(), encode(event))
        return receivers

    # -- audit, gc, fleet -------------------------------------------------------------------------
    async def audit(self, flow: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries newest first: one flow's, or the namespace's and every flow's merged."""
        if flow is not None:
            return await audit.read_audit(self.redis, [self.keys.flow_audit(flow)], limit)
        streams = [self.keys.audit()] + [self.keys.flow_audit(f) for f in await self.list_flows()]
        return await audit.read_audit(self.redis, streams, limit)

    async def gc(self, *, by: str = "gc", min_age_s: float = 0.0) -> GcResult:
        """Delete versions no release record or history entry references, in every flow.

        `min_age_s` spares versions published less than that long ago (a publish whose activation is
        still on its way); references are re-checked inside Redis, atomically with each delete.
        """
        flows = await self.list_flows()
        return await gc.collect(
            self.redis, self.keys, self._gc, flows, by=by, now=self.clock(), min_age_s=min_age_s,
            audit_keep=self.audit_keep,
        )  # fmt: skip

    async def write_replica_status(self, replica_id: str, status: dict[str, Any], ttl_s: float) -> None:
        """Heartbeat: the replica's status as JSON, expiring after `ttl_s` unless written again."""
        await fleet.write_status(self.redis, self.keys, replica_id, status, ttl_s, self.clock())

    async def read_fleet(self) -> list[dict[str, Any]]:
        """Status of every live replica (sorted by id); forgets replicas whose status expired."""
        return await fleet.read_statuses(self.redis, self.keys)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
