"""Run budgets on one shared loop timer (cluster.engine.budget): `asyncio.timeout`'s semantics per run,
budgets of any length in any order, and a heap that never holds more than the live budgets and a sweep's
worth of ended ones. (How a run uses its budget: tests/test_scheduler_sequential.py.)"""

from __future__ import annotations

import asyncio

from cluster.engine import budget
from cluster.errors import RunTimeout


async def within(timeout: float, work: float) -> str:
    """Sleep `work` seconds under a budget of `timeout`: "ok" or "timeout"."""
    b = budget.start(timeout)
    try:
        await asyncio.sleep(work)
    except BaseException as e:
        try:
            b.failed(e)
        except RunTimeout:
            return "timeout"
        raise
    b.finished()
    return "ok"


async def test_each_budget_expires_on_its_own_deadline_whatever_the_order_they_started_in() -> None:
    # A long budget first, then shorter ones: the shared timer is re-armed for the earliest deadline.
    runs = [asyncio.create_task(within(t, w)) for t, w in ((5.0, 0.3), (0.05, 1.0), (0.02, 1.0), (1.0, 0.01))]
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.gather(*runs) == ["ok", "timeout", "timeout", "ok"]
    assert loop.time() - started < 1.0  # the expired ones did not wait for their sleep


async def test_an_expired_budget_raises_run_timeout_and_leaves_the_task_uncancelled() -> None:
    task = asyncio.current_task()
    assert task is not None
    assert await within(0.01, 5.0) == "timeout"
    assert task.cancelling() == 0
    assert await within(5.0, 0.0) == "ok"


async def test_a_budget_that_ends_in_time_never_cancels_its_task_later() -> None:
    assert await within(0.05, 0.0) == "ok"
    await asyncio.sleep(0.1)  # past the deadline: the timer fires, finds the budget ended
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_ended_budgets_are_swept_so_the_heap_stays_small() -> None:
    for _ in range(20 * budget.SWEEP_AT):
        assert await within(60.0, 0.0) == "ok"
    budgets = budget._budgets
    assert budgets is not None and budgets.loop is asyncio.get_running_loop()
    assert len(budgets.heap) <= 2 * budget.SWEEP_AT + 2
    live = [asyncio.create_task(within(60.0, 0.05)) for _ in range(3 * budget.SWEEP_AT)]
    assert set(await asyncio.gather(*live)) == {"ok"}
    for _ in range(4 * budget.SWEEP_AT):
        await within(60.0, 0.0)
    assert len(budgets.heap) <= 2 * budget.SWEEP_AT + 2


async def test_a_budget_outside_a_task_is_refused() -> None:
    loop = asyncio.get_running_loop()
    refused: asyncio.Future[Exception] = loop.create_future()

    def outside() -> None:  # a loop callback: no task is running
        try:
            budget.start(1.0)
        except RuntimeError as e:
            refused.set_result(e)

    loop.call_soon(outside)
    assert "inside a task" in str(await refused)
