"""One run of a compiled flow: start every node whose inputs are settled, concurrently, until done.

A flow in which no two nodes can ever be ready at once (a chain; see `steps.sequential_order`) runs its
nodes one after another in the order computed at compile time, without tasks or ready-queue bookkeeping;
anything with fan-out goes through the concurrent scheduler. Both skip, fail and time out alike.

A node is skipped, not run, when it has incoming edges and none of them carried a value, or when a
required input's every edge stayed silent; that is how a Router's unchosen branches fall away,
transitively. Skipped nodes produce nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from typing import Any

from cluster.components.base import RunContext
from cluster.engine.budget import start as start_budget
from cluster.engine.steps import Step, checked, node_failure
from cluster.engine.trace import summarize
from cluster.errors import FlowfleetError, NodeFailed

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 2.0


class Execution:
    """Mutable state of one run; created per run, so concurrent runs share nothing but the steps.

    `order`: the steps' `sequential_order`, when it has one; the run then awaits them one by one.
    """

    # Only the concurrent scheduler keeps these (set when it starts).
    _waiting: list[int]
    _ready: deque[int]

    def __init__(
        self,
        steps: tuple[Step, ...],
        ctx: RunContext,
        *,
        trace: bool,
        order: tuple[int, ...] | None = None,
    ) -> None:
        self.steps = steps
        self.ctx = ctx
        self.results: list[Mapping[str, Any] | None] = [None] * len(steps)
        self.trace: list[dict[str, Any]] | None = [] if trace else None
        if trace:
            ctx.trace = self.trace
        self._order = order
        self._started = time.perf_counter() if trace else 0.0  # only traces show when nodes started

    async def run(self, timeout: float | None) -> None:
        """Run every step; raises NodeFailed or RunTimeout (carrying the partial trace when one is kept),
        and on any exit cancels what still runs."""
        try:
            if timeout is None:
                await self._schedule()
            else:
                # The budget inlined here (cluster.engine.budget): no frame or timer of its own per run.
                budget = start_budget(timeout)
                try:
                    await self._schedule()
                except BaseException as e:
                    budget.failed(e)
                    raise
                budget.finished()
        except FlowfleetError as e:
            if self.trace is not None:
                e.details["trace"] = self.trace
            raise

    def _schedule(self) -> Awaitable[None]:
        return self._concurrent() if self._order is None else self._sequential(self._order)

    async def _sequential(self, order: tuple[int, ...]) -> None:
        """Each step in turn, awaited here: nothing else can be ready while it runs, so no task is
        needed, and cancelling the run cancels the one step in progress."""
        steps = self.steps
        results = self.results
        ctx = self.ctx
        tracing = self.trace is not None
        for index in order:
            step = steps[index]
            edges = step.edges
            if edges is not None and not tracing and step.timeout_s is None:
                # The usual node: _skippable and _inputs in one pass, _call inlined (no coroutine of ours).
                values = gather(step, edges, results, ctx.inputs)
                if values is None:
                    continue
                try:
                    produced = await step.component.run(values, ctx)
                except Exception as e:
                    failure = node_failure(step, e, None)
                    if failure is None:
                        raise
                    raise failure from e
                fits = type(produced) is dict and step.outputs.issuperset(produced)
                results[index] = produced if fits else checked(step, produced)
            elif step.feeds and self._skippable(step):
                if tracing:
                    self._record(index, "skipped", time.perf_counter())
            elif tracing:
                await self._run_step(step)
            else:  # _run_step without the trace bookkeeping, one coroutine fewer per node
                results[index] = await self._call(step, self._inputs(step))

    async def _concurrent(self) -> None:
        self._waiting = [step.predecessor_count for step in self.steps]
        self._ready = deque(step.index for step in self.steps if step.predecessor_count == 0)
        running: dict[asyncio.Task[None], int] = {}
        try:
            while self._ready or running:
                while self._ready:
                    index = self._ready.popleft()
                    if self._skippable(self.steps[index]):
                        if self.trace is not None:
                            self._record(index, "skipped", time.perf_counter())
                        self._settle(index)
                    elif not self._ready and not running:
                        # The only runnable step: await it here, sparing a task for chains.
                        await self._run_step(self.steps[index])
                        self._settle(index)
                    else:
                        running[asyncio.create_task(self._run_step(self.steps[index]))] = index
                if running:
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in sorted(done, key=running.__getitem__):
                        index = running.pop(task)
                        task.result()
                        self._settle(index)
        finally:
            await self._cancel_all(running)

    async def _cancel_all(self, running: Mapping[asyncio.Task[None], int]) -> None:
        """Cancel and reap sibling tasks, so no node outlives its run and no exception goes unretrieved.

        A component that swallows cancellation gets CANCEL_GRACE_S, then is left behind (and logged):
        one broken plugin must not hold a run past its timeout.
        """
        if not running:
            return
        for task in running:
            task.cancel()
            task.add_done_callback(_retrieve)
        _, stuck = await asyncio.wait(running, timeout=CANCEL_GRACE_S)
        for task in stuck:
            step = self.steps[running[task]]
            logger.error(
                "node %s (%s) ignored cancellation for %ss; leaving it behind",
                step.node_id,
                step.type_name,
                CANCEL_GRACE_S,
            )

    def _settle(self, index: int) -> None:
        for successor in self.steps[index].successors:
            self._waiting[successor] -= 1
            if self._waiting[successor] == 0:
                self._ready.append(successor)

    def _produced(self, source: int, port: str) -> bool:
        result = self.results[source]
        return result is not None and port in result

    def _skippable(self, step: Step) -> bool:
        if not step.feeds:
            return False
        results = self.results
        any_value = False
        for port, sources in step.feeds.items():
            for source, source_port in sources:
                result = results[source]
                if result is not None and source_port in result:
                    any_value = True
                    break
            else:
                if port in step.required:
                    return True
        return not any_value

    def _inputs(self, step: Step) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if step.run_inputs:
            given = self.ctx.inputs
            for port, name in step.run_inputs.items():
                if name in given:
                    values[port] = given[name]
        results = self.results
        for port, sources in step.feeds.items():
            if len(sources) == 1:  # the common case: one edge into the port
                source, source_port = sources[0]
                result = results[source]
                if result is not None and source_port in result:
                    values[port] = result[source_port]
                continue
            got = [(s, p) for s, p in sources if self._produced(s, p)]
            if len(got) > 1:
                names = ", ".join(f"{self.steps[s].node_id}.{p}" for s, p in got)
                raise NodeFailed(step.node_id, f"input {port!r} got values from several edges ({names})")
            if got:
                source, source_port = got[0]
                values[port] = self.results[source][source_port]  # type: ignore[index]
        return values

    async def _run_step(self, step: Step) -> None:
        started = time.perf_counter() if self.trace is not None else 0.0
        try:
            inputs = self._inputs(step)
            produced = await self._call(step, inputs)
        except FlowfleetError as e:
            if self.trace is not None:
                self._record(step.index, "failed", started, error=str(e))
            raise
        except asyncio.CancelledError:
            if self.trace is not None:
                self._record(step.index, "cancelled", started)
            raise
        self.results[step.index] = produced
        if self.trace is not None:
            self._record(step.index, "ok", started)

    async def _call(self, step: Step, inputs: dict[str, Any]) -> Mapping[str, Any]:
        timeout = step.timeout_s
        budget: asyncio.Timeout | None = None
        try:
            if timeout is None:
                produced = await step.component.run(inputs, self.ctx)
            else:
                async with asyncio.timeout(timeout) as budget:
                    produced = await step.component.run(inputs, self.ctx)
        except Exception as e:
            failure = node_failure(step, e, budget)
            if failure is None:
                raise
            raise failure from e
        return checked(step, produced)

    def _record(self, index: int, status: str, started: float, *, error: str | None = None) -> None:
        assert self.trace is not None
        now = time.perf_counter()
        step = self.steps[index]
        entry: dict[str, Any] = {
            "node": step.node_id,
            "type": step.type_name,
            "status": status,
            "started_ms": round((started - self._started) * 1000, 3),
            "duration_ms": round((now - started) * 1000, 3),
        }
        produced = self.results[index]
        if produced is not None:
            entry["outputs"] = {port: summarize(value) for port, value in produced.items()}
        if error is not None:
            entry["error"] = error
        self.trace.append(entry)


def gather(
    step: Step,
    edges: tuple[tuple[str, int, str, bool], ...],
    results: list[Mapping[str, Any] | None],
    given: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The inputs of a step whose fed ports have one edge each (`step.edges`), or None when it is
    skipped: as `_skippable` and `_inputs` decide, in one pass."""
    values: dict[str, Any] = {}
    if step.run_inputs:
        for port, name in step.run_inputs.items():
            if name in given:
                values[port] = given[name]
    fed, silent = 0, False
    for port, source, source_port, required in edges:
        result = results[source]
        if result is not None and source_port in result:
            values[port] = result[source_port]
            fed += 1
        elif required:
            silent = True  # a required input none of whose edges carried a value
    return None if edges and (silent or not fed) else values


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # marks it retrieved; the run already failed or finished without it
