"""The Lua scripts the store runs inside Redis, shipped as package data (`*.lua` next to this file).

Each script touches only keys of one flow (one hash tag), so it runs unchanged on Redis Cluster.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    """Source of `<name>.lua`; raises FileNotFoundError for an unknown script."""
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def load_with_prelude(name: str, *preludes: str) -> str:
    """`<name>.lua` with the shared functions of `preludes` (e.g. carry.lua) defined before it."""
    return "".join(load(prelude) for prelude in preludes) + load(name)
