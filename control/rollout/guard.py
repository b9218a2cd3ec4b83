"""Automatic rollback: a control-plane task that rolls a flow back when its current release fails.

Every `interval_s` it reads the live replicas' statuses and, for each flow, asks the pure policy
(`control.rollout.convergence.rollback_reason`) whether the current release must go: a replica
failed to load it `max_failures` consecutive times, or `max_replicas` replicas failed or NACKed it.
Then it rolls back to the previous release through the service, as the actor `auto-rollback`, with the
reason naming the replicas and their errors.

Safe with several control planes: the rollback is compare-and-set on the generation that was judged,
so only one of them moves the record (the others get a conflict and stand down). It never acts twice
for one generation, never rolls back a release made by `auto-rollback` itself (no ping-pong), and
leaves releases committed with `--force` alone (the operator accepted failing replicas). A flow with no
earlier release to return to is logged and audited once, and left as it is.
"""

from __future__ import annotations

import logging
from typing import Any

from cluster.errors import GenerationConflict
from cluster.store import rollouts
from cluster.store.release import NoPreviousRelease, Release
from control.rollout.convergence import (
    AUTO_ROLLBACK_ACTOR,
    convergence,
    replicas_per_generation,
    rollback_reason,
)
from control.rollout.cutover import CutoverOptions
from control.rollout.periodic import PeriodicCheck
from control.service import ControlService

log = logging.getLogger(__name__)

# Straight back, without a prepare: the replicas that fail the release must not be able to block it.
ROLLBACK_OPTIONS = CutoverOptions(prepare=False)


class RollbackGuard(PeriodicCheck):
    name = "rollback guard"

    def __init__(
        self, service: ControlService, *, interval_s: float, max_failures: int, max_replicas: int
    ) -> None:
        super().__init__(interval_s=interval_s)
        self.service = service
        self.max_failures = max_failures
        self.max_replicas = max_replicas
        self._judged: set[tuple[str, int]] = set()  # (flow, generation) already acted on

    async def check(self) -> list[Release]:
        """One pass over every flow; returns the rollbacks it made."""
        store = self.service.store
        statuses = await store.read_fleet()
        self.service.metrics.set_replicas(replicas_per_generation(statuses))
        done: list[Release] = []
        for flow, release in (await store.list_releases()).items():
            if (flow, release.generation) in self._judged:
                continue
            state = convergence(flow, release.hash, release.generation, statuses)
            reason = rollback_reason(
                state,
                activated_by=release.activated_by,
                max_failures=self.max_failures,
                max_replicas=self.max_replicas,
            )
            if reason is None or await self._forced(flow, release):
                continue
            self._judged.add((flow, release.generation))
            rolled = await self._roll_back(flow, release, reason)
            if rolled is not None:
                done.append(rolled)
        return done

    async def _forced(self, flow: str, release: Release) -> bool:
        record = await rollouts.read_record(self.service.store.redis, self.service.store.keys, flow)
        return bool(
            record and record.get("state") == "forced" and record.get("generation") == release.generation
        )

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
