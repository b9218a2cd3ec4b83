"""Two-phase cutover: every live replica prepares (fetch, verify, compile, hold) and ACKs, then commit.

    begin    the rollout record (`preparing`) is written only if no rollout of the flow is in flight and
             the version's blob still exists, in one script (cluster/store/rollouts.py): rollouts of one
             flow are serial (RolloutInProgress, 409) and a version gc removed meanwhile is a clean
             VersionRemoved (409) before any replica hears of it.
    prepare  PUBLISH prepare{flow, hash, rollout, generation}; each live replica answers in its status
             key (`prepared.<flow>`: ok, or a NACK with reason); the control plane follows the answers
             through the small replicas ZSET (control/rollout/replies.py).
    commit   when every live replica is ready: the record becomes `committing` (with the `forced` mark)
             first, then the store's atomic activation (release record + `release` event), compare-and-set
             on the generation the rollout began at; replicas swap the version they already compiled.
    abort    on a NACK or the timeout: PUBLISH abort{flow, rollout}, nothing switches, and the caller gets
             RolloutAborted listing each replica and why (`force` commits anyway, audited).

Live replicas are those whose status has not expired, that are not draining and that are subscribed to
the channel (one that is not cannot hear the prepare), read once when the rollout starts; a replica whose
status expires meanwhile (or that was restarted) stops being waited for, one that joins later converges on
the committed release record like any reconciling replica. A control plane that dies mid-rollout leaves a
record in flight, which expires after the timeout (control/rollout/stale.py). See docs/rollout.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from cluster.errors import FlowfleetError
from cluster.store import rollouts
from cluster.store.events import CARRY_MAX_BYTES, Abort, Carried, Prepare
from cluster.store.release import Release
from cluster.store.replication import RedisUnreplicated
from cluster.store.store import Store
from control.metrics import ControlMetrics
from control.rollout.acks import ReplicaFailure, Tally, assess, prepare_targets
from control.rollout.cutover import CutoverRequest, DirectCutover, with_rollout
from control.rollout.replies import ReplyWatch

log = logging.getLogger(__name__)

POLL_S = 0.01


class RolloutAborted(FlowfleetError):
    """Not every live replica could prepare the version in time: nothing switched."""

    code = "rollout_aborted"
    http_status = 409
    exit_code = 6

    def __init__(
        self,
        flow: str,
        digest: str,
        rollout: str,
        failures: Sequence[ReplicaFailure],
        why: str | None = None,
    ) -> None:
        listed = "; ".join(str(f) for f in failures)
        super().__init__(
            f"rollout of flow {flow!r} to {digest[:12]} aborted, nothing switched: "
            + (why or f"{len(failures)} replica(s) not ready ({listed})"),
            flow=flow,
            hash=digest,
            rollout=rollout,
            failures=[f.as_dict() for f in failures],
        )
        self.failures = list(failures)


class TwoPhaseCutover:
    """The default cutover of the control plane; `request.prepare=False` takes the one-phase path."""

    def __init__(
        self,
        store: Store,
        metrics: ControlMetrics,
        *,
        timeout_s: float = 15.0,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.direct = DirectCutover(store)
        self._clock = clock
        self._monotonic = monotonic

    async def __call__(self, request: CutoverRequest) -> Release:
        if not request.prepare:
            await self._check_idle(request.flow)
            release = await self.direct(request)
            self.metrics.rollouts.labels("direct").inc()
            return with_rollout(release, {"mode": "direct"})
        statuses = await self.store.read_fleet()
        live = prepare_targets(statuses)
        if not live:
            await self._check_idle(request.flow)
            release = await self.direct(request)
            self.metrics.rollouts.labels("no_replicas").inc()
            return with_rollout(
                release,
                {"mode": "two_phase", "replicas": [], "note": "no live replica: committed directly"},
            )
        return await self._two_phase(request, live, statuses)

    async def _check_idle(self, flow: str) -> None:
        """A change that does not prepare still waits its turn behind a two-phase rollout in flight."""
        await rollouts.check_idle(self.store.redis, self.store.keys, flow, now=self._clock())

    async def _two_phase(
        self, request: CutoverRequest, live: list[str], statuses: Sequence[Mapping[str, Any]]
    ) -> Release:
        flow, digest = request.flow, request.digest
        rollout_id = uuid.uuid4().hex[:12]
        timeout = self.timeout_s if request.timeout_s is None else request.timeout_s
        record: dict[str, Any] = {
            "id": rollout_id, "flow": flow, "hash": digest, "action": request.action, "by": request.by,
            "state": "preparing", "replicas": live, "timeout_s": timeout, "started_at": self._clock(),
        }  # fmt: skip
        base = await rollouts.begin(
            self.store.redis, self.store.keys, flow, digest, record, now=record["started_at"]
        )
        record["generation"] = base + 1
        # The commit is compare-and-set on the generation the replicas prepared against (or the caller's).
        expected = base if request.expected_generation is None else request.expected_generation
        started = self._monotonic()
        data = request.data
        small = data is not None and len(data) <= CARRY_MAX_BYTES  # replicas then skip the fetch
        carried = Carried(None, digest, data) if small else None
        event = Prepare(
            flow, digest, rollout_id, record["generation"], request.by, self._clock(), timeout, carried
        )
        await self.store.publish_event(event)
        log.info(
            "prepare flow=%s hash=%s rollout=%s replicas=%s", flow, digest[:12], rollout_id, ",".join(live)
        )
        try:
            tally, waited, timed_out = await self._wait(
                event, live, statuses, started + timeout, stop_on_nack=not request.force
            )
        except asyncio.CancelledError:
            # The caller went away (server shutdown): let the replicas drop what they prepared.
            await asyncio.shield(self._abort(record, [], "the activation was cancelled"))
            raise
        # After an early stop on a NACK, replicas still compiling are not failures: nobody waited for them.
        failures = tally.failures(timed_out=timed_out)
        for failure in failures:
            self.metrics.nacks.labels(failure.reason).inc()
        if tally.all_ready:
            self.metrics.ack_seconds.observe(waited)
        summary = {
            "mode": "two_phase", "rollout": rollout_id, "replicas": live, "ready": sorted(tally.ready),
            "gone": sorted(tally.gone), "failures": [f.as_dict() for f in failures],
            "forced": bool(failures) and request.force, "prepare_seconds": round(waited, 4),
        }  # fmt: skip
        if failures and not request.force:
            await self._abort(record, failures, "not every live replica is ready")
            self.metrics.rollouts.labels("aborted").inc()
            raise RolloutAborted(flow, digest, rollout_id, failures)
        # The forced mark is written before the commit: a control plane that dies between the commit and
        # the record's final write leaves `committing` + `forced`, which the rollback guard respects.
        committing = {
            **record, "state": "committing", "forced": bool(failures), "failures": summary["failures"],
        }  # fmt: skip
        store = self.store
        if not await rollouts.advance(store.redis, store.keys, flow, rollout_id, "preparing", committing):
            # Another control plane expired this rollout (it outlived its timeout): it aborted it already.
            self.metrics.rollouts.labels("aborted").inc()
            raise RolloutAborted(flow, digest, rollout_id, failures, "the rollout expired before its commit")
        state = "forced" if failures else "committed"
        try:
            release = await self.direct(replace(request, expected_generation=expected))
        except RedisUnreplicated:
            # The release record moved on the primary (and replicas heard of it); only too few Redis
            # replicas acknowledged it. The rollout committed: no abort, the caller gets the 503.
            self.metrics.rollouts.labels(state).inc()
            done = {**committing, "state": state, "unreplicated": True, "finished_at": self._clock()}
            await self._record(flow, done)
            raise
        except Exception as e:
            await self._abort(record, failures, f"commit failed: {e}")
            self.metrics.rollouts.labels("aborted").inc()
            raise
        self.metrics.rollouts.labels(state).inc()
        await self._record(
            flow,
            {**committing, "state": state, "generation": release.generation, "finished_at": self._clock()},
        )
        if failures:
            log.warning(
                "rollout flow=%s rollout=%s committed with --force despite: %s",
                flow,
                rollout_id,
                "; ".join(str(f) for f in failures),
            )
            await self._audit(flow, "rollout_forced", record, failures, request.reason)
        return with_rollout(release, summary)

    async def _wait(
        self,
        event: Prepare,
        live: list[str],
        initial: Sequence[Mapping[str, Any]],
        deadline: float,
        *,
        stop_on_nack: bool,
    ) -> tuple[Tally, float, bool]:
        """Follow the replicas' answers until all answered, one NACKs (unless forcing), or the deadline.
        Returns the tally, the seconds waited and whether the deadline ended the wait."""
        started = self._monotonic()
        watch = ReplyWatch(
            self.store.redis, self.store.keys, live, initial, event.flow, event.rollout,
            monotonic=self._monotonic,
        )  # fmt: skip
        while True:
            statuses = await watch.poll()
            tally = assess(event.flow, event.rollout, event.hash, live, statuses)
            now = self._monotonic()
            if tally.done or (stop_on_nack and tally.nacked):
                return tally, now - started, False
            if now >= deadline:
                return tally, now - started, True
            await asyncio.sleep(min(self.poll_s, max(deadline - now, 0.0)))

    async def _abort(self, record: dict[str, Any], failures: list[ReplicaFailure], why: str) -> None:
        flow = record["flow"]
        await self.store.publish_event(Abort(flow, record["id"], record["by"], self._clock(), why))
        await self._record(
            flow,
            {
                **record,
                "state": "aborted",
                "failures": [f.as_dict() for f in failures],
                "finished_at": self._clock(),
            },
        )
        await self._audit(flow, "rollout_aborted", record, failures, why)
        log.warning(
            "rollout aborted flow=%s hash=%s rollout=%s: %s: %s",
            flow,
            record["hash"][:12],
            record["id"],
            why,
            "; ".join(str(f) for f in failures),
        )

    async def _record(self, flow: str, record: dict[str, Any]) -> None:
        await rollouts.write_record(self.store.redis, self.store.keys, flow, record)

    async def _audit(
        self, flow: str, action: str, record: dict[str, Any], failures: list[ReplicaFailure], reason: str
    ) -> None:
        fields = {
            "action": action, "hash": record["hash"], "rollout": record["id"], "by": record["by"],
            "reason": reason, "failures": "; ".join(str(f) for f in failures), "at": repr(self._clock()),
        }  # fmt: skip
        await rollouts.add_audit(
            self.store.redis, self.store.keys, flow, fields, audit_keep=self.store.audit_keep
        )
