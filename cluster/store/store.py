"""The version store: immutable content-addressed blobs, release records, history, audit and fleet status.

Redis is the source of truth; every key comes from `cluster.store.keys.Keys`. Writes that must be atomic
(publish, activate, gc) are Lua scripts touching one flow's keys only, so they also run on Redis Cluster.
Flows, versions and blobs are `cluster.store.versions.VersionStore`; this module adds releases and what
depends on them.

    store = Store(await connect(settings.redis_url), Keys(settings.namespace))
    result = await store.publish("support_qa", data, digest, author="ci", message="fix", node_count=3)
    release = await store.activate("support_qa", result.hash, by="ci", reason="fix")

A rollback is an activation of an earlier version (`action="rollback"`); which one is the control plane's
decision (control.service.ControlService.rollback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from cluster.errors import GenerationConflict, VersionNotFound
from cluster.flow.hashing import is_full_hash
from cluster.store import audit, fleet, gc
from cluster.store.events import CARRY_MAX_BYTES, Event, encode, release_payload_parts
from cluster.store.keys import Keys
from cluster.store.release import (
    CorruptRecord,
    GcResult,
    NoPreviousRelease,
    PublishResult,
    Release,
    ReleaseNotFound,
    VersionMeta,
)
from cluster.store.replication import NO_WAIT, ReplicaWait, run_script
from cluster.store.scripts import load, load_with_prelude
from cluster.store.versions import RedisClient, VersionStore, as_text

# The value types are re-exported so callers can import the whole store API from this module.
__all__ = [
    "GcResult", "NoPreviousRelease", "PublishResult", "Release", "ReleaseNotFound", "Store", "VersionMeta",
]  # fmt: skip

log = logging.getLogger(__name__)


class Store(VersionStore):
    """Async access to one namespace through a Redis or RedisCluster client without `decode_responses`."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        history_keep: int = 100,
        audit_keep: int = 10_000,
        clock: Callable[[], float] = time.time,
        replica_wait: ReplicaWait = NO_WAIT,
        carry_max_bytes: int = CARRY_MAX_BYTES,
    ) -> None:
        super().__init__(redis, keys, history_keep=history_keep, audit_keep=audit_keep, clock=clock)
        # A release event carries its record, and the version's bytes up to this size (0: never).
        self.carry_max_bytes = carry_max_bytes
        # Release changes wait for this many Redis replicas (cluster.store.replication).
        self.replica_wait = replica_wait
        self._activate = redis.register_script(load_with_prelude("activate", "carry"))
        self._gc = redis.register_script(load("gc"))

    # -- releases ---------------------------------------------------------------------------------
    async def get_release(self, flow: str) -> Release | None:
        return Release.from_hash(flow, await self.redis.hgetall(self.keys.release(flow)))

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
        reply, acknowledged = await run_script(
            self.redis, self._activate,
            [k.release(flow), k.history(flow), k.blob(flow, digest), k.flow_audit(flow)],
            [flow, digest, "" if expected_generation is None else expected_generation, by, reason,
             action, repr(now), self.history_keep, self.audit_keep, k.channel(), head, tail, body,
             "1" if unpin else "0", self.carry_max_bytes],
            self.replica_wait,
        )  # fmt: skip
        status, generation = as_text(reply[0]), int(reply[1])
        if status == "conflict":
            assert expected_generation is not None
            raise GenerationConflict(flow, expected_generation, generation)
        if status == "missing":
            # The blob vanished between the check and the script (a concurrent gc).
            raise VersionNotFound(flow, digest)
        previous = as_text(reply[2]) or None
        log.info(
            "%s flow=%s hash=%s generation=%d previous=%s by=%s",
            action, flow, digest[:12], generation, (previous or "-")[:12], by,
        )  # fmt: skip
        self.replica_wait.check(acknowledged, flow=flow, hash=digest, generation=generation)
        unpin_generation = int(reply[3]) if len(reply) > 3 else 0
        return Release(flow, digest, generation, previous, by, now, reason, action,
                       unpin_generation=unpin_generation)  # fmt: skip

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

    async def gc(self, *, by: str = "gc", min_age_s: float = 0.0, dry_run: bool = False) -> GcResult:
        """Delete versions nothing may still need, in every flow (see cluster.store.gc): not referenced by
        a release record or history entry, by a rollout in flight or by a live session pin.

        `min_age_s` spares versions published less than that long ago (the control plane passes
        FLOWFLEET_GC_MIN_AGE_S); references are re-checked inside Redis, atomically with each delete.
        `dry_run` reports what would go and deletes nothing.
        """
        flows = await self.list_flows()
        return await gc.collect(
            self.redis, self.keys, self._gc, flows, by=by, now=self.clock(), min_age_s=min_age_s,
            audit_keep=self.audit_keep, dry_run=dry_run,
        )  # fmt: skip

    async def write_replica_status(self, replica_id: str, status: dict[str, Any], ttl_s: float) -> None:
        """Heartbeat: the replica's status as JSON, expiring after `ttl_s` unless written again."""
        await fleet.write_status(self.redis, self.keys, replica_id, status, ttl_s, self.clock())

    async def read_fleet(self) -> list[dict[str, Any]]:
        """Status of every live replica (sorted by id); forgets replicas whose status expired."""
        return await fleet.read_statuses(self.redis, self.keys)
