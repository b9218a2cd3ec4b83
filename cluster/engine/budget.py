"""A run's time budget: `asyncio.timeout`'s semantics, on one loop timer shared by every run of a loop.

    budget = start(timeout)          # inside the run's task
    try:
        await schedule
    except BaseException as e:
        budget.failed(e)             # raises RunTimeout when this budget's expiry cancelled the task
        raise
    budget.finished()

A timer per run costs more than the run's own bookkeeping (a loop timer is armed and cancelled each
time, about 3 µs on uvloop). Budgets of one loop share one: they wait in a heap by deadline, the timer is
armed for the earliest, and a run that ends only marks its budget done. Runs of a replica share one
timeout, so deadlines arrive in order and the timer is re-armed about once per timeout, not per run.
Done budgets are swept out once they outnumber the live ones, so the heap stays within live + SWEEP_AT.
"""

from __future__ import annotations

import asyncio
import heapq
from itertools import count

from cluster.errors import RunTimeout

# How many ended budgets may wait in the heap (beyond as many as are live) before it is swept.
SWEEP_AT = 64


class Budget:
    """One run's budget: when it ends, the task it cancels, and what became of it."""

    __slots__ = ("deadline", "timeout", "task", "cancelling", "expired", "done", "budgets")

    def __init__(self, budgets: Budgets, task: asyncio.Task[object], timeout: float) -> None:
        self.budgets = budgets
        self.task: asyncio.Task[object] | None = task
        self.timeout = timeout
        self.deadline = budgets.loop.time() + timeout
        self.cancelling = task.cancelling()
        self.expired = False
        self.done = False

    def failed(self, error: BaseException) -> None:
        """The run raised `error`: raise RunTimeout from it instead when this budget's expiry is what
        cancelled the task (another cancellation arriving as well wins, as with `asyncio.timeout`)."""
        task = self.task
        self._end()
        if not self.expired or task is None:
            return
        if task.uncancel() <= self.cancelling and isinstance(error, asyncio.CancelledError):
            timeout = self.timeout
            raise RunTimeout(f"run exceeded its timeout of {timeout:g}s", timeout_s=timeout) from error

    def finished(self) -> None:
        """The run finished; if the budget ran out but the cancellation was swallowed, take it back."""
        task = self.task
        self._end()
        if self.expired and task is not None:
            task.uncancel()

    def _end(self) -> None:
        if self.done:
            return
        self.done = True
        self.task = None
        if not self.expired:  # an expired budget already left the heap
            self.budgets.ended()


class Budgets:
    """The budgets of one event loop and the one timer that expires them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, Budget]] = []
        self.order = count()  # equal deadlines expire in start order
        self.timer: asyncio.TimerHandle | None = None
        self.armed_at = float("inf")
        self.ended_in_heap = 0

    def start(self, task: asyncio.Task[object], timeout: float) -> Budget:
        budget = Budget(self, task, timeout)
        heapq.heappush(self.heap, (budget.deadline, next(self.order), budget))
        if budget.deadline < self.armed_at:
            self._arm(budget.deadline)
        return budget

    def ended(self) -> None:
        self.ended_in_heap += 1
        heap = self.heap
        if self.ended_in_heap > SWEEP_AT and 2 * self.ended_in_heap > len(heap):
            # The timer stays armed where it is: firing early only re-arms it for the earliest left.
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)
            self.ended_in_heap = 0

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._fire)
        self.armed_at = when

    def _fire(self) -> None:
        # The loop fired the timer for `due`: every budget with a deadline up to it is over, as a timer
        # of its own would have been by now.
        due = self.armed_at
        self.timer, self.armed_at = None, float("inf")
        heap = self.heap
        while heap and (heap[0][0] <= due or heap[0][2].done):
            budget = heapq.heappop(heap)[2]
            if budget.done:
                self.ended_in_heap -= 1
            elif budget.task is not None:
                budget.expired = True
                budget.task.cancel()
        if heap:
            self._arm(heap[0][0])


_budgets: Budgets | None = None


def start(timeout: float) -> Budget:
    """Start the current task's budget of `timeout` seconds (see the module's docstring)."""
    global _budgets
    loop = asyncio.get_running_loop()
    task = asyncio.current_task(loop)
    if task is None:
        raise RuntimeError("a run with a timeout must run inside a task")
    budgets = _budgets
    if budgets is None or budgets.loop is not loop:
        # One loop per process in a replica; tests start a loop per test and drop the previous one's.
        budgets = _budgets = Budgets(loop)
    return budgets.start(task, timeout)
