"""What a replica needs from the engine and the store, as narrow Protocols.

The worker core (state, loader, subscriber, heartbeat) is written against these so it can be exercised
without Redis or a real engine; `worker.app` wires in `cluster.engine.compile_flow` and `cluster.store.Store`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol


class RunOutcome(Protocol):
    """The engine's RunResult: what one run produced."""

    @property
    def outputs(self) -> dict[str, Any]: ...

    @property
    def trace(self) -> list[dict[str, Any]] | None: ...

    @property
    def duration_ms(self) -> float: ...


class Runnable(Protocol):
    """A compiled flow: immutable, shared by every concurrent run of one version.

    One that also has `check_inputs(inputs)` (the engine's CompiledFlow) is asked to check a run's
    inputs before it runs, and is then run with `inputs_checked=True`: it need not check them again.
    """

    async def run(
        self,
        inputs: Mapping[str, Any],
        *,
        timeout: float | None = None,
        trace: bool = False,
        conversation: Any = None,
        stream: Any = None,
        inputs_checked: bool = False,
    ) -> RunOutcome: ...


class Target(Protocol):
    """What should run for one flow: a release record, or the part of a change event that names it."""

    @property
    def flow(self) -> str: ...

    @property
    def hash(self) -> str: ...

    @property
    def generation(self) -> int: ...


class ReleaseReader(Protocol):
    """The read side of the store a replica uses (plus writing its own status)."""

    async def get_blob(self, flow: str, digest: str) -> bytes | None: ...

    async def get_release(self, flow: str) -> Target | None: ...

    async def list_releases(self) -> Mapping[str, Target]: ...

    async def write_replica_status(self, replica_id: str, status: dict[str, Any], ttl_s: float) -> None: ...


# Turns verified canonical bytes into a runnable flow; raises FlowValidationError for a bad document.
Compiler = Callable[[bytes], Runnable]
