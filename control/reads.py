"""The read side of the control-plane service: flows, versions, history, diffs, fleet and audit.

`ControlService` (control.service) adds publishing, activation and rollback on top of these reads.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from cluster.errors import BadRequest, CorruptBlob, FlowNotFound
from cluster.flow.hashing import is_hash_prefix
from cluster.names import check_flow_name
from cluster.store import fleet, rollouts
from cluster.store.release import Release
from cluster.store.store import Store
from control.diff import diff_documents
from control.fleetview import fleet_rows, gone, presence, with_presence
from control.metrics import ControlMetrics
from control.rollout.convergence import convergence, replicas_per_generation
from control.rollout.stale import present

log = logging.getLogger(__name__)

RECENT_VERSIONS = 20


def release_dict(release: Release | None) -> dict[str, Any] | None:
    return None if release is None else release.as_dict()


class ReadService:
    """Every read the HTTP API offers, and the lookups (flow, version ref, verified document) writes share."""

    def __init__(self, store: Store, metrics: ControlMetrics) -> None:
        self.store = store
        self.metrics = metrics

    # -- reads --------------------------------------------------------------------------------------
    async def list_flows(self) -> list[dict[str, Any]]:
        names = await self.store.list_flows()
        releases = await self.store.list_releases()
        return [{"name": n, "release": release_dict(releases.get(n))} for n in sorted(names)]

    async def get_flow(self, flow: str, versions: int = RECENT_VERSIONS) -> dict[str, Any]:
        """The release record and the newest stored versions' metadata."""
        release = await self.store.get_release(flow)
        if release is None:
            await self.require_flow(flow)
        metas = await self.store.list_versions(flow, versions)
        return {"flow": flow, "release": release_dict(release), "versions": [m.as_dict() for m in metas]}

    async def history(self, flow: str, limit: int = 100) -> list[Release]:
        releases = await self.store.history(flow, limit)
        if not releases:
            await self.require_flow(flow)
        return releases

    async def version(self, flow: str, ref: str) -> dict[str, Any]:
        digest = await self.resolve(flow, ref)
        document = await self.load(flow, digest)
        meta = await self.store.get_meta(flow, digest)
        return {
            "flow": flow,
            "hash": digest,
            "meta": None if meta is None else meta.as_dict(),
            "document": document,
        }

    async def diff(self, flow: str, old_ref: str, new_ref: str) -> dict[str, Any]:
        old_hash = await self.resolve(flow, old_ref)
        new_hash = await self.resolve(flow, new_ref)
        old, new = await self.load(flow, old_hash), await self.load(flow, new_hash)
        return {"flow": flow, "from": old_hash, "to": new_hash, "diff": diff_documents(old, new).as_dict()}

    async def fleet(self) -> dict[str, Any]:
        """Every listed replica's status and presence (live, draining, stale, gone; control.fleetview)
        and one row per replica and flow. `replicas` holds the statuses still in Redis."""
        now = self.store.clock()
        roster = await fleet.read_roster(self.store.redis, self.store.keys, now=now)
        releases = await self.store.list_releases()
        rows = fleet_rows(roster.statuses, releases, now=now, expired=roster.gone)
        presences = [presence(s, now) for s in roster.statuses]
        presences += [gone(r, last, now) for r, last in roster.gone.items()]
        return {
            "replicas": roster.statuses,
            "presence": [p.as_dict() for p in sorted(presences, key=lambda p: p.replica)],
            "releases": {f: release_dict(r) for f, r in releases.items()},
            "rows": [r.as_dict() for r in rows],
        }

    async def rollout_status(self, flow: str) -> dict[str, Any]:
        """How far the live replicas are on the flow's current release, and its latest rollout."""
        release = await self.store.get_release(flow)
        if release is None:
            await self.require_flow(flow)
        now = self.store.clock()
        roster = await fleet.read_roster(self.store.redis, self.store.keys, now=now)
        statuses = roster.statuses
        state = convergence(
            flow,
            release.hash if release else None,
            release.generation if release else None,
            statuses,
            stamp=release.activated_at if release else None,
        )
        # A replica whose heartbeat is late is not current whatever it last said (control.fleetview).
        seen = {p.replica: p for p in (presence(s, now) for s in statuses)}
        state = with_presence(state, seen)
        self.metrics.set_replicas(replicas_per_generation(statuses))
        record = await rollouts.read_record(self.store.redis, self.store.keys, flow)
        # A record its control plane left in flight shows as it ended (control/rollout/stale.py).
        record = present(record, release, now)
        body = state.as_dict()
        for row in body["replicas"]:
            row["age_s"] = seen[row["replica"]].age_s if row["replica"] in seen else None
        departed = [p for p in seen.values() if p.state == "gone"]
        departed += [gone(r, last, now) for r, last in roster.gone.items()]
        body["gone"] = [p.as_dict() for p in sorted(departed, key=lambda p: p.replica)]
        return {"release": release_dict(release), "rollout": record, **body}

    async def refresh_metrics(self) -> None:
        """Update the gauges that describe the fleet (replicas per flow generation)."""
        self.metrics.set_replicas(replicas_per_generation(await self.store.read_fleet()))

    async def audit(self, flow: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if flow is not None:
            check_flow_name(flow)
        return await self.store.audit(flow, limit)

    # -- lookups ------------------------------------------------------------------------------------
    async def require_flow(self, flow: str) -> None:
        check_flow_name(flow)
        if flow not in await self.store.list_flows():
            raise FlowNotFound(flow)

    async def resolve(self, flow: str, ref: str) -> str:
        check_flow_name(flow)
        ref = ref.strip().lower()
        if not is_hash_prefix(ref):
            raise BadRequest(f"{ref!r} is not a version hash: use 8 to 64 hex characters", hash=ref)
        return await self.store.resolve(flow, ref)

    async def load(self, flow: str, digest: str) -> Any:
        """The stored document, after checking its bytes still hash to their address."""
        return orjson.loads(await self.load_bytes(flow, digest))

    async def load_bytes(self, flow: str, digest: str) -> bytes:
        """The stored bytes, after checking they still hash to their address."""
        try:
            return await self.store.get_verified_blob(flow, digest)
        except CorruptBlob as e:
            log.error("corrupt stored version flow=%s version=%s: %s", flow, digest[:12], e)
            raise
