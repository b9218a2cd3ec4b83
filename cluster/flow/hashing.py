"""Canonical JSON and content addresses: the same content always gives the same bytes and sha256.

>>> canonical_bytes({"b": 1, "a": [1, 2]})
b'{"a":[1,2],"b":1}'
>>> content_address({"b": 1, "a": 2}) == content_address({"a": 2, "b": 1})
True
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

HASH_LENGTH = 64
MIN_PREFIX = 8


def canonical_bytes(document: Any) -> bytes:
    """Serialize with sorted keys and no whitespace; raises TypeError for values JSON cannot hold."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_address(document: Any) -> tuple[bytes, str]:
    """The canonical bytes of a document and their sha256 (hex)."""
    data = canonical_bytes(document)
    return data, sha256_hex(data)


def is_full_hash(value: str) -> bool:
    return len(value) == HASH_LENGTH and all(c in "0123456789abcdef" for c in value)


def is_hash_prefix(value: str) -> bool:
    """True for a lowercase hex string of at least MIN_PREFIX characters (a full hash included)."""
    return MIN_PREFIX <= len(value) <= HASH_LENGTH and all(c in "0123456789abcdef" for c in value)
