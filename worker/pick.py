"""Version selection per call: a caller asks for `flow@<hash>` (OpenAI `model`) or `"version"` (native).

Allowed only when the flow's current version opts in (`"api": {"version_selection": true}` in its
document), and only for a version in the flow's release history (full hash or a prefix of at least 8
hex characters, as `activate` takes) — the current release, its canary, or an earlier release — never
for one that was rolled back automatically (the guard's `auto-rollback` releases name it as their
`previous_hash`). Refusals: 403 `version_selection_off`, 403 `version_rolled_back`, 404
`version_not_found`, 409 `ambiguous_hash`. An explicit version wins over canary routing and session pins.

The history is read from Redis once per release generation (a new release may change it) and kept;
the chosen version is loaded like a session's pinned one (worker.sessions), once however many callers
ask.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from cluster.errors import AmbiguousHash, FlowfleetError, Forbidden, Unavailable, VersionNotFound
from cluster.flow.hashing import is_hash_prefix
from cluster.store.release import AUTO_ROLLBACK_ACTOR, Release
from cluster.traffic.canary import Pin
from worker.routing import Served
from worker.sessions import SessionPins
from worker.state import LoadedFlow

History = Callable[[str], Awaitable[list[Release]]]
REDIS_TIMEOUT_S = 2.0


def selection_allowed(compiled: Any) -> bool:
    api = getattr(compiled, "api", None)
    return bool(getattr(api, "version_selection", False))


class VersionPicker:
    def __init__(self, history: History, sessions: SessionPins) -> None:
        self._history = history
        self._sessions = sessions
        # flow -> (the release generation it was read at, its history)
        self._known: dict[str, tuple[int, list[Release]]] = {}

    async def pick(self, loaded: LoadedFlow, version: str) -> Served:
        flow = loaded.flow
        if not selection_allowed(loaded.compiled):
            raise Forbidden(
                f"flow {flow!r} does not take a version per call; its document must opt in with "
                '"api": {"version_selection": true}',
                flow=flow,
                reason="version_selection_off",
            )
        prefix = version.lower()
        if not is_hash_prefix(prefix):
            raise VersionNotFound(flow, version)
        if loaded.hash.startswith(prefix):
            return Served(loaded.compiled, loaded.hash, loaded.generation, "stable")
        canary = loaded.canary
        if canary is not None and canary.hash.startswith(prefix):
            return Served(canary.compiled, canary.hash, loaded.generation, "canary")
        releases = await self._releases(loaded)
        rolled_back = {r.previous_hash for r in releases if r.activated_by == AUTO_ROLLBACK_ACTOR}
        generations: dict[str, int] = {}
        for release in releases:
            generations.setdefault(release.hash, release.generation)
        matches = sorted(h for h in generations if h.startswith(prefix))
        if not matches:
            raise VersionNotFound(flow, version)
        if len(matches) > 1:
            raise AmbiguousHash(flow, prefix, matches)
        digest = matches[0]
        if digest in rolled_back:
            raise Forbidden(
                f"version {digest[:12]} of flow {flow!r} was rolled back automatically and is not served",
                flow=flow,
                hash=digest,
                reason="version_rolled_back",
            )
        served = await self._sessions.load(loaded, Pin(digest, generations[digest], 0.0))
        if served is None:
            raise VersionUnavailable(flow, digest)
        return Served(served.compiled, served.hash, served.generation, "pinned", False)

    async def _releases(self, loaded: LoadedFlow) -> list[Release]:
        known = self._known.get(loaded.flow)
        if known is not None and known[0] == loaded.generation:
            return known[1]
        try:
            releases = await asyncio.wait_for(self._history(loaded.flow), REDIS_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as e:
            raise Unavailable(
                "history_unavailable", f"the release history of flow {loaded.flow!r} cannot be read now: {e}"
            ) from e
        self._known[loaded.flow] = (loaded.generation, releases)
        return releases


class VersionUnavailable(FlowfleetError):
    """The version exists in the history but this replica cannot load it now (blob gone, Redis away)."""

    code = "version_unavailable"
    http_status = 503

    def __init__(self, flow: str, digest: str) -> None:
        message = f"version {digest[:12]} of flow {flow!r} cannot be loaded on this replica now"
        super().__init__(message, flow=flow, hash=digest)
