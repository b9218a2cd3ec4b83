"""Canary changes in Redis: one atomic script per start / set / promote / abort (scripts/canary.lua).

Each change is compare-and-set on the release generation, bumps it, and writes history, audit and a
`release` event (action `canary_start`, `canary_set`, `canary_promote` or `canary_abort`) exactly like
an activation, so replicas follow canaries through the release record they already watch.

    writer = CanaryWriter(store)
    release = await writer.change("support_qa", "start", by="ci", reason="try v2", digest=h, percent=10)
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from cluster.errors import FlowfleetError, GenerationConflict, VersionNotFound
from cluster.store.events import release_payload_parts
from cluster.store.release import Release, parse_revoked
from cluster.store.replication import run_script
from cluster.store.scripts import load_with_prelude
from cluster.store.store import Store

log = logging.getLogger(__name__)

OPERATIONS = ("start", "set", "promote", "abort")
_SENTINEL = "0" * 64


class CanaryConflict(FlowfleetError):
    """The canary change does not fit the flow's current release (none, already running, same version)."""

    http_status = 409
    exit_code = 3

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code


class CanaryWriter:
    """Runs the canary script against the store's client, namespace and history / audit caps."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._script = store.redis.register_script(load_with_prelude("canary", "carry"))

    async def change(
        self,
        flow: str,
        op: str,
        *,
        by: str,
        reason: str,
        digest: str = "",
        percent: float | None = None,
        expected_generation: int | None = None,
    ) -> Release:
        """Apply one canary operation; raises CanaryConflict, GenerationConflict or VersionNotFound."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown canary operation {op!r}")
        store, k = self.store, self.store.keys
        now = store.clock()
        action = f"canary_{op}"
        head, tail = release_payload_parts(flow=flow, hash=_SENTINEL, by=by, at=now, action=action)
        before, after = head.split(_SENTINEL.encode(), 1)
        at_text = orjson.dumps(now).decode()
        reply, acknowledged = await run_script(
            store.redis, self._script,
            [k.release(flow), k.history(flow), k.blob(flow, digest), k.flow_audit(flow)],
            [op, flow, digest, "" if percent is None else repr(float(percent)),
             "" if expected_generation is None else expected_generation, by, reason, at_text,
             store.history_keep, store.audit_keep, k.channel(), before, after, tail,
             orjson.dumps(by), orjson.dumps(reason), store.carry_max_bytes],
            store.replica_wait,
        )  # fmt: skip
        status, generation = _text(reply[0]), int(reply[1])
        if status != "ok":
            raise _refusal(flow, op, status, generation, reply, digest, expected_generation)
        previous, current, canary = _text(reply[2]), _text(reply[3]), _text(reply[4])
        release = Release(
            flow, current, generation, previous or None, by, float(at_text), reason, action,
            canary_hash=canary or None,
            canary_percent=float(_text(reply[5]) or 0.0) if canary else 0.0,
            canary_started_at=float(_text(reply[6])) if canary else None,
            canary_by=_text(reply[7]) if canary else None,
            unpin_generation=int(reply[8]),
            revoked=parse_revoked(_text(reply[9])) if len(reply) > 9 else (),
        )  # fmt: skip
        log.info(
            "%s flow=%s hash=%s canary=%s percent=%s generation=%d by=%s revoked=%s",
            action, flow, current[:12], (canary or "-")[:12], release.canary_percent, generation, by,
            ",".join(h[:12] for h in release.revoked) or "-",
        )  # fmt: skip
        store.replica_wait.check(acknowledged, flow=flow, generation=generation)
        return release


def _refusal(
    flow: str, op: str, status: str, generation: int, reply: Any, digest: str, expected: int | None
) -> FlowfleetError:
    if status == "conflict":
        return GenerationConflict(flow, expected if expected is not None else -1, generation)
    if status == "missing":
        return VersionNotFound(flow, digest)
    if status == "no_release":
        return CanaryConflict(
            "no_release", f"flow {flow!r} has no current release to run a canary next to", flow=flow
        )
    if status == "no_canary":
        return CanaryConflict(
            "no_canary", f"flow {flow!r} has no canary running to {op}", flow=flow, generation=generation
        )
    if status == "canary_running":
        running = _text(reply[2])
        return CanaryConflict(
            "canary_running",
            f"flow {flow!r} already runs canary {running[:12]}; set its percent, promote or abort it first",
            flow=flow, generation=generation, canary_hash=running,
        )  # fmt: skip
    if status == "is_stable":
        return CanaryConflict(
            "canary_is_stable",
            f"version {digest[:12]} is already the current release of flow {flow!r}",
            flow=flow, generation=generation, hash=digest,
        )  # fmt: skip
    return FlowfleetError(f"unexpected canary script reply {status!r}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
