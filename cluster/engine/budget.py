"""A run's time budget: one loop timer that cancels the run's task, with `asyncio.timeout`'s semantics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cluster.errors import RunTimeout


async def within(schedule: Callable[[], Awaitable[None]], timeout: float) -> None:
    """`schedule()` under a run's time budget: what `asyncio.timeout` does (one timer that cancels
    this task, told apart from any other cancellation by `Task.uncancel`), without its per-use
    objects and checks, as every run of a worker has a budget. Raises RunTimeout when it expires."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a run with a timeout must run inside a task")
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = loop.call_at(loop.time() + timeout, expire)
    try:
        await schedule()
    except asyncio.CancelledError as e:
        timer.cancel()
        if expired and task.uncancel() <= cancelling:
            raise RunTimeout(f"run exceeded its timeout of {timeout:g}s", timeout_s=timeout) from e
        raise
    except BaseException:
        timer.cancel()
        if expired:
            task.uncancel()
        raise
    timer.cancel()
    if expired:  # the budget ran out, but the cancellation was swallowed and the run finished
        task.uncancel()
