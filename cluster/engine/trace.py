"""How a run's trace shows the values a node produced: small stand-ins, never the whole value."""

from __future__ import annotations

from typing import Any

import orjson

SUMMARY_CHARS = 200


def summarize(value: Any) -> Any:
    """A small stand-in for a value in a trace: short values as they are, long ones cut with a note."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            text = repr(value)
        if len(text) <= SUMMARY_CHARS:
            return value if isinstance(value, dict | list) else text
    if len(text) <= SUMMARY_CHARS:
        return text
    return f"{text[:SUMMARY_CHARS]}... ({len(text)} chars)"
