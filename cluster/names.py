"""The names flowfleet accepts for flows, namespaces and replicas (they end up inside Redis keys, URLs
and metric labels), shared by the flow language, the store and both servers."""

from __future__ import annotations

import re

from cluster.errors import BadRequest

FLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class InvalidName(BadRequest):
    code = "invalid_name"


def check_flow_name(name: str) -> str:
    """Flow names are 1-128 characters of letters, digits, `_`, `.`, `-` (they end up inside keys)."""
    if not FLOW_NAME.match(name):
        raise InvalidName(
            f"invalid flow name {name!r}: use 1-128 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
            flow=name,
        )
    return name
