"""Rollouts a control plane left behind: a record still `preparing` or `committing` after its timeout.

A control plane that dies mid-rollout cannot finish its record. Once the record has outlived its timeout
(plus `rollouts.STALE_GRACE_S`) it no longer holds the flow's rollout lock, reads show how it really
ended (`present`), and the rollback guard's lease holder settles it for good (`expire_stale`):

    preparing                     -> aborted: an `abort` event (replicas drop what they prepared) and a
                                     `rollout_aborted` audit entry
    committing, release moved     -> committed (or forced, as marked before the commit)
    committing, release did not   -> aborted, as above

The rewrite is compare-and-set on the rollout id and state, so a rollout that ends meanwhile (or a new one)
is never overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cluster.store import rollouts
from cluster.store.events import Abort
from cluster.store.release import AUTO_ROLLBACK_ACTOR, Release
from cluster.store.store import Store
from control.metrics import ControlMetrics

log = logging.getLogger(__name__)

EXPIRED = "its control plane stopped before finishing it; expired after its timeout"


def committed(record: Mapping[str, Any], history: Sequence[Release]) -> bool:
    """Pure: did the commit of `record` happen? Its generation was released with its hash."""
    return any(r.generation == record.get("generation") and r.hash == record.get("hash") for r in history)


def settled(record: Mapping[str, Any], history: Sequence[Release], now: float) -> dict[str, Any]:
    """Pure: how a stale record ended (see the module docstring)."""
    if record.get("state") == "committing" and committed(record, history):
        state = "forced" if record.get("forced") is True else "committed"
        return {**record, "state": state, "finished_at": now, "expired": True}
    return {**record, "state": "aborted", "finished_at": now, "expired": True, "reason": EXPIRED}


def present(record: dict[str, Any] | None, release: Release | None, now: float) -> dict[str, Any] | None:
    """The record as reads should show it: a stale one as it ended (read-only; the guard writes it)."""
    if record is None or not rollouts.stale(record, now):
        return record
    return settled(record, [release] if release is not None else [], now)


async def expire_stale(store: Store, metrics: ControlMetrics, *, now: float) -> list[dict[str, Any]]:
    """Settle every stale rollout record of the namespace; returns the records written."""
    flows = await store.list_flows()
    async with store.redis.pipeline(transaction=False) as pipe:
        for flow in flows:
            pipe.hget(store.keys.rollout(flow), "state")
        states = await pipe.execute()
    done = []
    for flow, state in zip(flows, states, strict=True):
        if state is None or _text(state) not in rollouts.IN_FLIGHT:
            continue
        record = await rollouts.read_record(store.redis, store.keys, flow)
        if record is None or not rollouts.stale(record, now):
            continue
        history = await store.history(flow, store.history_keep)
        ended = settled(record, history, now)
        keys, rid = store.keys, str(record.get("id"))
        if not await rollouts.advance(store.redis, keys, flow, rid, str(record["state"]), ended):
            continue  # it ended, or another control plane settled it, meanwhile
        if ended["state"] == "aborted":
            await store.publish_event(Abort(flow, rid, AUTO_ROLLBACK_ACTOR, now, EXPIRED))
            fields = {
                "action": "rollout_aborted", "hash": record.get("hash", ""), "rollout": rid,
                "by": AUTO_ROLLBACK_ACTOR, "reason": f"rollout by {record.get('by')}: {EXPIRED}",
                "failures": "", "at": repr(now),
            }  # fmt: skip
            await rollouts.add_audit(store.redis, keys, flow, fields, audit_keep=store.audit_keep)
            metrics.rollouts.labels("aborted").inc()
        log.warning(
            "rollout flow=%s hash=%s rollout=%s left %s by its control plane: now %s",
            flow, str(record.get("hash"))[:12], rid, record["state"], ended["state"],
        )  # fmt: skip
        done.append(ended)
    return done


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
