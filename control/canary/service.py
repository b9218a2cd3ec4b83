"""Canary operations of the control plane: start, set percent, promote, abort, and the side-by-side status.

A canary version is checked like an activation (stored bytes verified, compiled) before the atomic
store script makes it run next to the current release; see docs/canary.md.
"""

from __future__ import annotations

from typing import Any

from cluster.store import rollouts
from cluster.store.canary_store import CanaryConflict, CanaryWriter
from cluster.store.release import Release
from cluster.store.rollouts import RolloutInProgress
from cluster.traffic.canary import check_percent
from cluster.traffic.runstats import aggregate, summarize
from control.canary.verdict import AUTO_ACTOR, judge
from control.service import ControlService, check_message


class CanaryService:
    """Wraps the control service (resolve, verify + compile) and the canary store script."""

    def __init__(self, service: ControlService, *, margin: float = 0.05, min_runs: int = 100) -> None:
        self.service = service
        self.writer = CanaryWriter(service.store)
        self.margin = margin
        self.min_runs = min_runs

    async def start(
        self,
        flow: str,
        ref: str,
        percent: Any,
        *,
        actor: str,
        message: str | None = None,
        expected_generation: int | None = None,
    ) -> Release:
        """Run stored version `ref` for `percent` of the flow's traffic next to the current release."""
        share = check_percent(percent)
        digest = await self.service.resolve(flow, ref)
        await self.service.check_version(flow, digest)
        return await self._change(
            flow,
            "start",
            actor,
            message,
            digest=digest,
            percent=share,
            expected_generation=expected_generation,
        )

    async def set_percent(
        self, flow: str, percent: Any, *, actor: str, message: str | None = None,
        expected_generation: int | None = None,
    ) -> Release:  # fmt: skip
        share = check_percent(percent)
        return await self._change(
            flow, "set", actor, message, percent=share, expected_generation=expected_generation
        )

    async def promote(
        self, flow: str, *, actor: str, message: str | None = None, expected_generation: int | None = None
    ) -> Release:
        """The canary becomes the current release (previous_hash = the old stable)."""
        release = await self._release(flow)
        if release.canary_hash:
            # Checked again like any activation: the registry or the bytes may have changed since start.
            await self.service.check_version(flow, release.canary_hash)
            if expected_generation is None:
                expected_generation = release.generation  # promote exactly the canary just checked
        return await self._change(flow, "promote", actor, message, expected_generation=expected_generation)

    async def abort(
        self, flow: str, *, actor: str, message: str | None = None, expected_generation: int | None = None
    ) -> Release:
        """Stop the canary: every run goes to the current release again."""
        return await self._change(flow, "abort", actor, message, expected_generation=expected_generation)

    async def status(self, flow: str) -> dict[str, Any]:
        """Stable and canary side by side: runs, errors, error rate, p50/p95 latency over live replicas."""
        release = await self._release(flow)
        statuses = await self.service.store.read_fleet()
        counts = aggregate(statuses, flow, release.canary_epoch)
        stable = summarize(release.hash, counts.get(release.hash))
        body: dict[str, Any] = {
            "flow": flow,
            "generation": release.generation,
            "epoch": release.canary_epoch,
            "replicas": sum(1 for s in statuses if _reports(s, flow, release.canary_epoch)),
            "stable": stable.as_dict(),
            "canary": None,
            "guard": {"margin": self.margin, "min_runs": self.min_runs, "abort": False, "verdict": None},
        }
        if release.canary_hash:
            canary = summarize(release.canary_hash, counts.get(release.canary_hash))
            verdict = judge(stable, canary, margin=self.margin, min_runs=self.min_runs)
            body["canary"] = {
                **canary.as_dict(),
                "percent": release.canary_percent,
                "started_at": release.canary_started_at,
                "started_by": release.canary_by,
            }
            body["guard"].update(abort=verdict.abort, verdict=verdict.reason)
        return body

    async def _release(self, flow: str) -> Release:
        release = await self.service.store.get_release(flow)
        if release is None:
            await self.service.require_flow(flow)
            raise CanaryConflict("no_release", f"flow {flow!r} has never been activated", flow=flow)
        return release

    async def _change(
        self,
        flow: str,
        op: str,
        actor: str,
        message: str | None,
        *,
        digest: str = "",
        percent: float | None = None,
        expected_generation: int | None = None,
    ) -> Release:
        counter = self.service.metrics.canary_changes
        kind = "auto" if actor == AUTO_ACTOR else "user"
        store = self.service.store
        try:
            # A canary change waits its turn behind a two-phase rollout of the flow in flight.
            await rollouts.check_idle(store.redis, store.keys, flow, now=store.clock())
            release = await self.writer.change(
                flow, op, by=actor, reason=check_message(message), digest=digest, percent=percent,
                expected_generation=expected_generation,
            )  # fmt: skip
        except (CanaryConflict, RolloutInProgress) as e:
            counter.labels(op, kind, e.code).inc()
            if isinstance(e, CanaryConflict) and e.code == "no_release":
                await self.service.require_flow(flow)  # an unknown flow is a 404, not a 409
            raise
        except Exception:
            counter.labels(op, kind, "error").inc()
            raise
        counter.labels(op, kind, "ok").inc()
        return release


def _reports(status: dict[str, Any], flow: str, epoch: float) -> bool:
    runs = status.get("runs")
    entry = runs.get(flow) if isinstance(runs, dict) else None
    return isinstance(entry, dict) and entry.get("epoch") == epoch
