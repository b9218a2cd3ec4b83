"""The last step of an activation: move the release record and tell the fleet.

The service verifies and compiles a version before it calls a `Cutover`; the default one is the store's
single atomic script (CAS on the generation, release record, history, audit, PUBLISH). Staged rollouts
(prepare on every replica, then commit; canary) plug in here as another `Cutover` and extend
`CutoverRequest`, so the API, the CLI and the service stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from cluster.store.release import Release
from cluster.store.store import Store


@dataclass(frozen=True)
class CutoverRequest:
    flow: str
    digest: str  # full hash, already verified and compiled
    by: str
    reason: str
    action: str = "activate"  # "activate" | "rollback"
    expected_generation: int | None = None
    prepare: bool = True  # two-phase (control/rollout/twophase.py); False: one-phase, for emergencies
    force: bool = False  # commit even if replicas NACK or time out (recorded in the audit log)
    timeout_s: float | None = None  # prepare timeout; None: the configured default
    unpin: bool = False  # move every pinned session of the flow to this version
    # The version's verified bytes: a small one rides on the prepare event (docs/protocol.md).
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CutoverRelease(Release):
    """A release plus what the cutover did to reach it, rendered as `rollout` in API answers."""

    rollout: Mapping[str, Any] | None = None


def with_rollout(release: Release, rollout: Mapping[str, Any]) -> CutoverRelease:
    fields = {k: v for k, v in asdict(release).items() if k != "rollout"}
    return CutoverRelease(**fields, rollout=dict(rollout))


@dataclass(frozen=True)
class CutoverOptions:
    """How the caller wants an activation to reach the fleet (copied into the CutoverRequest)."""

    prepare: bool = True
    force: bool = False
    timeout_s: float | None = None


DEFAULT_OPTIONS = CutoverOptions()


class Cutover(Protocol):
    async def __call__(self, request: CutoverRequest) -> Release: ...


class DirectCutover:
    """One-phase cutover: every replica hears the event and swaps as soon as it has compiled."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def __call__(self, request: CutoverRequest) -> Release:
        return await self.store.activate(
            request.flow,
            request.digest,
            by=request.by,
            reason=request.reason,
            expected_generation=request.expected_generation,
            action=request.action,
            unpin=request.unpin,
        )
