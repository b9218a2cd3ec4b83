"""Release records and version metadata as frozen values, and their Redis (hash / JSON) forms.

Pure: nothing here talks to Redis. Redis hashes hold only strings, so `None` is stored as "" and numbers
as their decimal text; history entries are JSON objects with the same fields as the release hash.

>>> r = Release("qa", "ab" * 32, 2, None, "ci", 10.5, "fix typo")
>>> Release.from_json("qa", r.to_json()) == r
True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from cluster.errors import FlowfleetError
from cluster.flow.hashing import is_full_hash

log = logging.getLogger(__name__)

# A HGETALL reply: bytes or str keys and values depending on the client's decode_responses.
RedisHash = Mapping[Any, Any]


# The actor of releases the rollback guard makes (control/rollout/guard.py): the version such a release
# moved away from was rolled back automatically, and callers may no longer ask for it by hash.
AUTO_ROLLBACK_ACTOR = "auto-rollback"


class CorruptRecord(FlowfleetError):
    """A release record or metadata hash in Redis is missing fields or holds unusable values."""

    code = "corrupt_record"
    http_status = 500


class NoPreviousRelease(FlowfleetError):
    """A rollback without an explicit target found no earlier release with a different version."""

    code = "no_previous_release"
    http_status = 409
    exit_code = 1


class ReleaseNotFound(FlowfleetError):
    """No release with that generation is in the flow's (capped) history."""

    code = "release_not_found"
    http_status = 404
    exit_code = 4

    def __init__(self, flow: str, generation: int) -> None:
        super().__init__(
            f"flow {flow!r} has no release with generation {generation} in its history",
            flow=flow,
            generation=generation,
        )


@dataclass(frozen=True)
class Release:
    """What runs: `hash` is current for `flow` since `activated_at` (unix seconds), at `generation`."""

    flow: str
    hash: str
    generation: int
    previous_hash: str | None
    activated_by: str
    activated_at: float
    reason: str
    action: str = "activate"
    # A canary running next to `hash` (docs/canary.md): its version, share of traffic and start.
    canary_hash: str | None = None
    canary_percent: float = 0.0
    canary_started_at: float | None = None
    canary_by: str | None = None
    # Session pins made under an earlier generation than this are ignored (`--unpin`).
    unpin_generation: int = 0
    # Versions sessions may no longer stay pinned to, newest first: an aborted canary, a version rolled
    # back automatically (docs/canary.md). A version released again (stable or canary) leaves the list.
    revoked: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps({k: v for k, v in self.as_dict().items() if k != "flow"})

    @property
    def canary_epoch(self) -> float:
        """What run counters are grouped by: the canary's start, 0 while no canary runs."""
        return (self.canary_started_at or 0.0) if self.canary_hash else 0.0

    @classmethod
    def from_hash(cls, flow: str, raw: RedisHash) -> Release | None:
        """The release in a HGETALL reply; None for an empty reply (no release yet)."""
        if not raw:
            return None
        fields = _text_mapping(raw)
        try:
            return cls(
                flow=flow,
                hash=fields["hash"],
                generation=int(fields["generation"]),
                previous_hash=previous_hash(fields.get("previous_hash")),
                activated_by=fields.get("activated_by", ""),
                activated_at=float(fields.get("activated_at") or 0.0),
                reason=fields.get("reason", ""),
                action=fields.get("action") or "activate",
                **_canary_fields(fields),
            )
        except (KeyError, ValueError) as e:
            raise CorruptRecord(f"release record of flow {flow!r} is unreadable: {e!r}", flow=flow) from e

    @classmethod
    def from_json(cls, flow: str, raw: bytes | str) -> Release | None:
        """A history entry; None (logged) when the entry is not a usable release."""
        try:
            entry = orjson.loads(raw)
            return cls(
                flow=flow,
                hash=str(entry["hash"]),
                generation=int(entry["generation"]),
                previous_hash=previous_hash(entry.get("previous_hash")),
                activated_by=str(entry.get("activated_by", "")),
                activated_at=float(entry.get("activated_at") or 0.0),
                reason=str(entry.get("reason", "")),
                action=str(entry.get("action") or "activate"),
                **_canary_fields(entry),
            )
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError):
            log.warning("skipping unreadable history entry of flow %s: %.200r", flow, raw)
            return None


@dataclass(frozen=True)
class VersionMeta:
    """Who stored a version, when and why; `parent` is the release current when it was published."""

    flow: str
    hash: str
    author: str
    message: str
    created_at: float
    size: int
    node_count: int
    parent: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_hash(self) -> dict[str, str]:
        return {
            "author": self.author,
            "message": self.message,
            "created_at": repr(self.created_at),
            "size": str(self.size),
            "node_count": str(self.node_count),
            "parent": self.parent or "",
        }

    @classmethod
    def from_hash(cls, flow: str, digest: str, raw: RedisHash) -> VersionMeta | None:
        if not raw:
            return None
        fields = _text_mapping(raw)
        try:
            return cls(
                flow=flow,
                hash=digest,
                author=fields.get("author", ""),
                message=fields.get("message", ""),
                created_at=float(fields["created_at"]),
                size=int(fields["size"]),
                node_count=int(fields["node_count"]),
                parent=fields.get("parent") or None,
            )
        except (KeyError, ValueError) as e:
            raise CorruptRecord(
                f"metadata of version {digest[:12]} of flow {flow!r} is unreadable: {e!r}",
                flow=flow,
                hash=digest,
            ) from e


@dataclass(frozen=True)
class PublishResult:
    """`created` is False when identical content was already stored (nothing new was written).

    `repaired` is True when the stored bytes under that address were corrupt and have been rewritten.
    """

    hash: str
    created: bool
    repaired: bool = False


@dataclass(frozen=True)
class GcResult:
    """Versions deleted by gc, per flow; `kept` counts versions still referenced (or too young)."""

    removed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    kept: int = 0
    bytes_freed: int = 0

    @property
    def removed_count(self) -> int:
        return sum(len(v) for v in self.removed.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "removed": {flow: list(hashes) for flow, hashes in self.removed.items()},
            "removed_count": self.removed_count,
            "kept": self.kept,
            "bytes_freed": self.bytes_freed,
        }


def rollback_target(
    flow: str, current: Release | None, history: Sequence[Release], *, to_generation: int | None = None
) -> Release:
    """The earlier release a rollback returns to, given the current release and the history newest first.

    By default the newest earlier release whose version differs from the current one, so a rollback of a
    rollback goes back again (like `kubectl rollout undo`) and re-activations of the same hash are skipped.
    """
    if current is None:
        raise NoPreviousRelease(f"flow {flow!r} has never been activated", flow=flow)
    if to_generation is not None:
        for release in history:
            if release.generation == to_generation:
                return release
        raise ReleaseNotFound(flow, to_generation)
    for release in history:
        if release.generation < current.generation and release.hash != current.hash:
            return release
    raise NoPreviousRelease(
        f"flow {flow!r} has no earlier release with a different version to roll back to",
        flow=flow,
        generation=current.generation,
    )


def _canary_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The canary and unpin fields of a release hash or history entry (absent in older records)."""
    canary = fields.get("canary_hash") or None
    return {
        "canary_hash": str(canary) if canary else None,
        "canary_percent": float(fields.get("canary_percent") or 0.0) if canary else 0.0,
        "canary_started_at": float(fields.get("canary_started_at") or 0.0) if canary else None,
        "canary_by": str(fields.get("canary_by") or "") if canary else None,
        "unpin_generation": int(fields.get("unpin_generation") or 0),
        "revoked": parse_revoked(fields.get("revoked")),
    }


def previous_hash(value: Any) -> str | None:
    """The `previous_hash` field of a record or history entry: "" (how the scripts write "none", as a
    Redis hash has no null), a JSON null (entries written before) and a missing field all mean None.

    >>> [previous_hash(v) for v in ("", None, "ab12")]
    [None, None, 'ab12']
    """
    return value if isinstance(value, str) and value else None


def parse_revoked(value: Any) -> tuple[str, ...]:
    """The `revoked` field: comma-separated hashes in a record, a JSON list in a history entry."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(item for item in items if isinstance(item, str) and is_full_hash(item))


def _text_mapping(raw: RedisHash) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
