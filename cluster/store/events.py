"""Change events on the namespace channel: pure encode/decode of versioned JSON payloads.

Events are hints; the release record in Redis is the truth (docs/protocol.md). A payload a consumer
cannot use -- malformed JSON, an unknown type or payload version, a missing or mistyped field -- decodes
to None and is logged, never raised, so one bad message cannot kill a subscriber. Unknown fields are
ignored, which lets newer publishers add fields without breaking older replicas.

>>> ev = ReleaseChanged(flow="support_qa", hash="ab" * 32, generation=7, by="ci", at=1.5)
>>> decode(encode(ev)) == ev
True
>>> decode(b'{"v": 1, "type": "teleport"}') is None
True
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from cluster.flow.hashing import is_full_hash

log = logging.getLogger(__name__)

VERSION = 1
"""Payload version. Adding fields or event types keeps it; only an incompatible change bumps it."""

CARRY_MAX_BYTES = 64 * 1024
"""A release event carries the bytes of a version up to this size (docs/protocol.md, *What a release
event carries*); a bigger one is fetched by each consumer."""


@dataclass(frozen=True)
class Carried:
    """What a release event may carry besides its own fields, written in the same atomic step as the
    record: the record itself (its HASH fields as text) and a small version's stored bytes. Unverified:
    the bytes count only once they hash to `blob_hash`, like bytes fetched from Redis."""

    record: dict[str, str] | None = None
    blob_hash: str | None = None
    blob: bytes | None = None


@dataclass(frozen=True)
class ReleaseChanged:
    """A flow's release record now names `hash` at `generation` (activate, rollback, ...)."""

    TYPE: ClassVar[str] = "release"

    flow: str
    hash: str
    generation: int
    by: str
    at: float
    action: str = "activate"
    # Not a checked wire field: decode fills it from the payload's `record` and `blob*` fields.
    carried: Carried | None = field(default=None, compare=False, repr=False, metadata={"wire": False})


@dataclass(frozen=True)
class Ping:
    """Keeps the channel alive so a subscriber can tell a quiet channel from a dead connection."""

    TYPE: ClassVar[str] = "ping"

    by: str
    at: float


@dataclass(frozen=True)
class Prepare:
    """Two-phase cutover, phase one: fetch, verify and compile `hash`, hold it, and report ready or not.

    Nothing switches on a prepare; the commit is the `release` event of the same hash. `generation` is the
    generation the release is expected to get (a hint: the release event's generation is what counts).
    """

    TYPE: ClassVar[str] = "prepare"

    flow: str
    hash: str
    rollout: str
    generation: int
    by: str
    at: float
    timeout_s: float = 10.0
    # The version's bytes when small, like a release event's (not a checked wire field).
    carried: Carried | None = field(default=None, compare=False, repr=False, metadata={"wire": False})


@dataclass(frozen=True)
class Abort:
    """The rollout `rollout` of `flow` will not be committed: drop what was prepared for it."""

    TYPE: ClassVar[str] = "abort"

    flow: str
    rollout: str
    by: str
    at: float
    reason: str = ""


Event = ReleaseChanged | Ping | Prepare | Abort

# type name -> class. A new event type (canary ...) is one dataclass plus one entry here.
EVENT_TYPES: dict[str, type[Event]] = {cls.TYPE: cls for cls in (ReleaseChanged, Ping, Prepare, Abort)}
# The fields each type writes and reads as JSON (what it carries goes after them, see `encode`).
WIRE_FIELDS = {
    cls: tuple(f for f in dataclasses.fields(cls) if f.metadata.get("wire", True))
    for cls in EVENT_TYPES.values()
}

# Field annotation (as written above, a string under `from __future__ import annotations`) -> accepted
# JSON types, matched exactly (so a bool is never a number).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "str | None": (str, type(None)),
    "int | None": (int, type(None)),
    "float | None": (float, int, type(None)),
}


# Per event type, what `decode` checks of each wire field: (name, accepted JSON types, is a float,
# required). Worked out once: an event reaches every replica at once, so decoding one is kept lean.
_SPECS: dict[type[Event], tuple[tuple[str, tuple[type, ...], bool, bool], ...]] = {
    cls: tuple(
        (f.name, _FIELD_TYPES[str(f.type)], str(f.type).startswith("float"), f.default is dataclasses.MISSING)
        for f in fields
    )  # fmt: skip
    for cls, fields in WIRE_FIELDS.items()
}


def release_payload_parts(*, flow: str, hash: str, by: str, at: float, action: str) -> tuple[bytes, bytes]:
    """The release payload split around its generation: `head + b"%d" % generation + tail`.

    The activation script only learns the new generation inside Redis; it is given these two parts and
    inserts the number, so the bytes it publishes are exactly what `encode` produces for the same event.
    """
    body = orjson.dumps(
        {"v": VERSION, "type": ReleaseChanged.TYPE, "flow": flow, "hash": hash, "by": by, "at": at,
         "action": action}
    )  # fmt: skip
    return body[:-1] + b',"generation":', b"}"


def encode(event: Event) -> bytes:
    """The wire form of an event: compact JSON with `v` and `type` first."""
    if isinstance(event, ReleaseChanged):
        head, tail = release_payload_parts(
            flow=event.flow, hash=event.hash, by=event.by, at=event.at, action=event.action
        )
        return head + str(event.generation).encode() + _carried_bytes(event.carried) + tail
    payload: dict[str, Any] = {"v": VERSION, "type": event.TYPE}
    payload.update((f.name, getattr(event, f.name)) for f in WIRE_FIELDS[type(event)])
    carried = event.carried if isinstance(event, Prepare) else None
    body = orjson.dumps(payload)
    return body if carried is None else body[:-1] + _carried_bytes(carried) + b"}"


def _carried_bytes(carried: Carried | None) -> bytes:
    """The `record` and `blob*` fields as the activation scripts append them (the blob last, raw)."""
    if carried is None:
        return b""
    out = b"" if carried.record is None else b',"record":' + orjson.dumps(carried.record)
    if carried.blob is not None and carried.blob_hash is not None:
        out += b',"blob_hash":"%s","blob_size":%d,"blob":%s' % (
            carried.blob_hash.encode(),
            len(carried.blob),
            carried.blob,
        )
    return out


# The blob trailer: `,"blob_hash":"<hex>","blob_size":N,"blob":<N raw bytes>}`. It is the payload's last
# field and its first occurrence is structural: every `"` before it sits inside a JSON string, escaped.
_TRAILER = re.compile(rb',"blob_hash":"([0-9a-f]{64})","blob_size":([0-9]{1,9}),"blob":')


def _split_blob(raw: bytes) -> tuple[bytes, tuple[str, bytes] | None]:
    """`raw` without its blob trailer, and the blob; `raw` whole and None when there is none usable."""
    at = raw.find(b',"blob_hash":')
    match = _TRAILER.match(raw, at) if at >= 0 else None
    if match is None or not raw.endswith(b"}"):
        return raw, None
    blob = raw[match.end() : -1]
    if len(blob) != int(match.group(2)):
        return raw, None
    return raw[:at] + b"}", (match.group(1).decode(), blob)


def _carried(payload: dict[str, Any], blob: tuple[str, bytes] | None) -> Carried | None:
    record = payload.get("record")
    if not (isinstance(record, dict) and all(isinstance(v, str) for v in record.values())):
        record = None
    if record is None and blob is None:
        return None
    return Carried(record, *(blob or (None, None)))


def decode(raw: bytes | str) -> Event | None:
    """The event in `raw`, or None when it is not one this version understands (logged, never raised)."""
    raw, blob = _split_blob(raw.encode() if isinstance(raw, str) else raw)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("dropping malformed event (not JSON): %.200r", raw)
        return None
    if not isinstance(payload, dict):
        log.warning("dropping malformed event (not a JSON object): %.200r", raw)
        return None
    version = payload.get("v")
    if version != VERSION or isinstance(version, bool):
        log.warning("dropping event with unsupported payload version %r", version)
        return None
    type_name = payload.get("type")
    if not isinstance(type_name, str):
        log.warning("dropping event without a type: %.200r", raw)
        return None
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        # Newer publishers may send types this replica does not know yet: normal, not an error.
        log.debug("ignoring event of unknown type %.50r", payload.get("type"))
        return None
    carries = cls is ReleaseChanged or cls is Prepare
    return _build(cls, payload, _carried(payload, blob) if carries else None)


def _build(cls: type[Event], payload: dict[str, Any], carried: Carried | None) -> Event | None:
    values: dict[str, Any] = {}
    for name, accepted, is_float, required in _SPECS[cls]:
        if name not in payload:
            if required:
                log.warning("dropping %s event without field %r", cls.TYPE, name)
                return None
            continue
        value = payload[name]
        if type(value) not in accepted:  # JSON's exact types: a bool is no int here
            log.warning("dropping %s event: field %r has unusable value %.100r", cls.TYPE, name, value)
            return None
        # JSON has one number type: an `at` of 1700000000 arrives as int and is still a float field.
        values[name] = float(value) if is_float and value is not None else value
    if cls in (ReleaseChanged, Prepare) and not _valid_release(values):
        log.warning("dropping %s event with invalid hash or generation: %.200r", cls.TYPE, payload)
        return None
    if cls in (Prepare, Abort) and not (values["flow"] and values["rollout"]):
        log.warning("dropping %s event without flow or rollout id: %.200r", cls.TYPE, payload)
        return None
    if carried is not None:
        values["carried"] = carried
    return cls(**values)


def _valid_release(values: dict[str, Any]) -> bool:
    return is_full_hash(values["hash"]) and values["generation"] >= 1 and bool(values["flow"])
