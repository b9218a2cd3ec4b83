"""Canary routing and session pins as pure functions: deterministic buckets, percent checks, pin values.

A request key lands in one of 10,000 buckets by sha256 of the flow name and the key, so every replica
routes the same user the same way without talking to anyone; the canary gets buckets below
`percent * 100`.

>>> bucket("support_qa", "user-42") == bucket("support_qa", "user-42")
True
>>> is_canary(bucket("support_qa", "user-42"), 100.0), is_canary(bucket("support_qa", "user-42"), 0.0)
(True, False)
>>> Pin.decode(Pin("ab" * 32, 7, 1.5).encode())
Pin(hash='abababababababababababababababababababababababababababababababab', generation=7, at=1.5)
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from cluster.errors import BadRequest, FlowfleetError
from cluster.flow.hashing import is_full_hash

BUCKETS = 10_000
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
MAX_KEY_CHARS = 256


class InvalidPercent(BadRequest):
    code = "invalid_percent"


class InvalidSessionId(FlowfleetError):
    """A run's session_id cannot name a Redis key (length or characters)."""

    code = "invalid_session_id"
    http_status = 422


class InvalidRequestKey(FlowfleetError):
    """A run's routing key (X-Flowfleet-Key or user_id) is empty, too long or not text."""

    code = "invalid_request_key"
    http_status = 422


def bucket(flow: str, key: str) -> int:
    """The key's bucket in 0..9999 for this flow (independent per flow, identical on every replica)."""
    digest = hashlib.sha256(flow.encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def threshold(percent: float) -> int:
    """Buckets below this number go to the canary: 10 % -> 1000, 0.25 % -> 25."""
    return round(percent * BUCKETS / 100)


def is_canary(key_bucket: int, percent: float) -> bool:
    return key_bucket < threshold(percent)


def check_percent(value: Any) -> float:
    """A canary percentage: a number from 0 to 100, with at most 0.01 resolution (400 otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidPercent(f"percent must be a number from 0 to 100, not {value!r}", percent=value)
    if not 0 <= value <= 100:
        raise InvalidPercent(f"percent must be from 0 to 100, not {value}", percent=value)
    return round(float(value), 2)


def check_session_id(value: Any) -> str:
    """Session ids become part of a Redis key: 1-128 letters, digits, `_ . : @ -` (422 otherwise)."""
    if not isinstance(value, str) or not SESSION_ID.match(value):
        raise InvalidSessionId(
            "session_id must be 1-128 characters: letters, digits, '_', '.', ':', '@' or '-', starting "
            "with a letter or digit",
            field="session_id",
        )
    return value


def check_request_key(value: Any, field: str) -> str:
    """A routing key (header or user_id): any non-empty text up to 256 characters (422 otherwise)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS:
        raise InvalidRequestKey(
            f"{field} must be a non-empty string of at most {MAX_KEY_CHARS} characters", field=field
        )
    return value


@dataclass(frozen=True)
class Pin:
    """A session's version: `hash`, chosen under release `generation`, at unix seconds `at`."""

    hash: str
    generation: int
    at: float

    def encode(self) -> bytes:
        return orjson.dumps({"hash": self.hash, "generation": self.generation, "at": self.at})

    @classmethod
    def decode(cls, raw: bytes | str | None) -> Pin | None:
        """The pin in a stored value; None for anything unusable (it is then replaced)."""
        if raw is None:
            return None
        try:
            value = orjson.loads(raw)
            pin = cls(str(value["hash"]), int(value["generation"]), float(value.get("at") or 0.0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
        return pin if is_full_hash(pin.hash) and pin.generation >= 0 else None

    def honoured(self, unpin_generation: int) -> bool:
        """A pin made before the newest `--unpin` activation no longer binds its session."""
        return self.generation >= unpin_generation
