"""Automatic rollback: a control-plane task that acts when replicas cannot load a flow's current release.

Every `interval_s` it reads the live replicas' statuses and, for each flow, asks the pure policy
(`control.rollout.blame.judge`) whether the release must go: a replica failed to load it `max_failures`
consecutive times, or `max_replicas` replicas failed it, counting only failures the version itself causes
(invalid, corrupt, compile error), and only once the replica retried. Then it rolls back to the previous
release through the service, as the actor `auto-rollback`, with the reason naming the replicas and their
errors. While a canary runs, the failure is the canary's: the guard aborts the canary (same actor, audited)
and the stable version keeps serving.

Safe with several control planes: one of them holds the guard's lease and acts, another takes over when
it dies; and every change is compare-and-set on the generation that was judged, so even two guards acting
at once move the record once. A release is judged once per generation, but a pass that fails part-way
(Redis reset the connection) judges it again on the next pass. It never rolls back a release made by
`auto-rollback` itself (no ping-pong), leaves releases committed with `--force` alone (the operator
accepted failing replicas), and waits behind a two-phase rollout in flight. A flow with no earlier release
to return to is logged and audited once, and left as it is. Each pass also settles rollout records a dead
control plane left in flight (control/rollout/stale.py).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from cluster.errors import GenerationConflict
from cluster.store import rollouts
from cluster.store.canary_store import CanaryConflict
from cluster.store.lease import Lease, holder_id
from cluster.store.release import NoPreviousRelease, Release
from cluster.store.rollouts import RolloutInProgress
from control.canary.service import CanaryService
from control.rollout.blame import Verdict, judge
from control.rollout.convergence import AUTO_ROLLBACK_ACTOR, replicas_per_generation
from control.rollout.cutover import CutoverOptions
from control.rollout.periodic import PeriodicCheck, lease_ttl
from control.rollout.stale import expire_stale
from control.service import ControlService

log = logging.getLogger(__name__)

# Straight back, without a prepare: the replicas that fail the release must not be able to block it.
ROLLBACK_OPTIONS = CutoverOptions(prepare=False)
LEASE = "rollback-guard"


class RollbackGuard(PeriodicCheck):
    name = "rollback guard"

    def __init__(
        self,
        service: ControlService,
        *,
        interval_s: float,
        max_failures: int,
        max_replicas: int,
        canaries: CanaryService | None = None,
        holder: str | None = None,
    ) -> None:
        store = service.store
        lease = Lease(
            store.redis, store.keys, LEASE, holder=holder or holder_id(), ttl_s=lease_ttl(interval_s)
        )
        super().__init__(interval_s=interval_s, lease=lease)
        self.service = service
        self.canaries = canaries or CanaryService(service)
        self.max_failures = max_failures
        self.max_replicas = max_replicas
        self._judged: set[tuple[str, int]] = set()  # (flow, generation) already acted on

    async def check(self) -> list[Release]:
        """One pass over every flow; returns the releases it made (rollbacks, canary aborts)."""
        store = self.service.store
        statuses = await store.read_fleet()
        self.service.metrics.set_replicas(replicas_per_generation(statuses))
        await expire_stale(store, self.service.metrics, now=store.clock())
        releases = await store.list_releases()
        self._judged &= {(flow, r.generation) for flow, r in releases.items()}
        done: list[Release] = []
        for flow, release in releases.items():
            if (flow, release.generation) in self._judged:
                continue
            verdict = judge(release, statuses, max_failures=self.max_failures, max_replicas=self.max_replicas)
            if verdict is None or (verdict.target == "stable" and await self._forced(flow, release)):
                continue
            try:
                made = await self._act(flow, release, verdict)
            except (RedisError, OSError, RolloutInProgress) as e:
                # Not marked as judged: the next pass looks at this release again.
                log.warning(
                    "auto-rollback flow=%s generation=%d not done (%s); judging again next pass",
                    flow, release.generation, e,
                )  # fmt: skip
                continue
            self._judged.add((flow, release.generation))
            if made is not None:
                done.append(made)
        return done

    async def _forced(self, flow: str, release: Release) -> bool:
        """Committed with --force: the record says `forced`, or `committing` with the forced mark (its
        control plane died before the record's final write)."""
        record = await rollouts.read_record(self.service.store.redis, self.service.store.keys, flow)
        if not record or record.get("generation") != release.generation:
            return False
        if record.get("state") == "forced":
            return True
        marked = record.get("forced") is True and record.get("hash") == release.hash
        return record.get("state") == "committing" and marked

    async def _act(self, flow: str, release: Release, verdict: Verdict) -> Release | None:
        if verdict.target == "canary":
            return await self._abort_canary(flow, release, verdict.reason)
        return await self._roll_back(flow, release, verdict.reason)

    async def _abort_canary(self, flow: str, release: Release, reason: str) -> Release | None:
        counter = self.service.metrics.auto_rollbacks
        try:
            aborted = await self.canaries.abort(
                flow, actor=AUTO_ROLLBACK_ACTOR, message=reason, expected_generation=release.generation
            )
        except (GenerationConflict, CanaryConflict) as e:
            counter.labels("conflict").inc()
            log.info("auto-rollback flow=%s: the canary changed meanwhile (%s)", flow, e)
            return None
        counter.labels("canary_aborted").inc()
        log.warning(
            "auto-rollback flow=%s aborted canary %s as generation %d; stable %s keeps serving: %s",
            flow, (release.canary_hash or "")[:12], aborted.generation, release.hash[:12], reason,
        )  # fmt: skip
        return aborted

    async def _roll_back(self, flow: str, release: Release, reason: str) -> Release | None:
        counter = self.service.metrics.auto_rollbacks
        try:
            rolled = await self.service.rollback(
                flow,
                actor=AUTO_ROLLBACK_ACTOR,
                message=reason,
                expected_generation=release.generation,
                options=ROLLBACK_OPTIONS,
            )
        except GenerationConflict:
            counter.labels("conflict").inc()
            log.info(
                "auto-rollback flow=%s generation=%d: the release moved on meanwhile",
                flow,
                release.generation,
            )
            return None
        except NoPreviousRelease:
            counter.labels("no_previous").inc()
            log.warning(
                "auto-rollback flow=%s generation=%d: no earlier release to return to: %s",
                flow,
                release.generation,
                reason,
            )
            await self._audit(flow, release, "auto_rollback_skipped", f"no earlier release; {reason}")
            return None
        except RolloutInProgress:
            raise  # not an error: the guard judges again once the rollout has ended
        except Exception:
            counter.labels("error").inc()
            raise
        counter.labels("rolled_back").inc()
        log.warning(
            "auto-rollback flow=%s from generation %d (%s) to %s as generation %d: %s",
            flow,
            release.generation,
            release.hash[:12],
            rolled.hash[:12],
            rolled.generation,
            reason,
        )
        return rolled

    async def _audit(self, flow: str, release: Release, action: str, reason: str) -> None:
        store = self.service.store
        fields: dict[str, Any] = {
            "action": action, "hash": release.hash, "generation": release.generation,
            "by": AUTO_ROLLBACK_ACTOR, "reason": reason, "at": repr(store.clock()),
        }  # fmt: skip
        await rollouts.add_audit(store.redis, store.keys, flow, fields, audit_keep=store.audit_keep)
