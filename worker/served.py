"""The version that serves a run (`Served`), and the response headers that name it."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.ports import Runnable


def version_header_pairs(digest: str, variant: str) -> tuple[tuple[bytes, bytes], ...]:
    """The X-Flowfleet-Version / -Variant headers of a run response, encoded for ASGI."""
    return ((b"x-flowfleet-version", digest.encode()), (b"x-flowfleet-variant", variant.encode()))


@dataclass(frozen=True)
class Served:
    """The version a run uses. `variant`: "stable", "canary", or "pinned" (an older version a session
    still runs); `pinned` is True when the session's pin chose it.

    Routing hands out the ones a loaded release made once (worker.state.LoadedFlow): immutable, so runs
    share them."""

    compiled: Runnable
    hash: str
    generation: int
    variant: str
    pinned: bool = False
    # The response headers naming hash and variant, when precomputed for the version (worker.state).
    headers: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False, compare=False)
