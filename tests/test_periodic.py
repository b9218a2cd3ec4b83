"""The guards' loop: a failing pass is logged and the next one still runs; stop() ends the loop."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from control.rollout.periodic import PeriodicCheck


class Scripted(PeriodicCheck):
    name = "scripted check"

    def __init__(self, outcomes: list[BaseException | None]) -> None:
        super().__init__(interval_s=0.001)
        self.outcomes = outcomes
        self.done = asyncio.Event()

    async def check(self) -> None:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if not self.outcomes:
            self.done.set()
        if outcome is not None:
            raise outcome


async def test_failing_passes_are_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    guard = Scripted([RedisConnectionError("gone"), ValueError("bad record"), None])
    with caplog.at_level(logging.WARNING, logger="control.rollout.periodic"):
        task = asyncio.create_task(guard.run())
        await asyncio.wait_for(guard.done.wait(), timeout=5.0)
        guard.stop()
        await asyncio.wait_for(task, timeout=5.0)
    assert guard.passes >= 3
    assert "scripted check: redis unavailable (gone)" in caplog.text
    assert "scripted check pass failed" in caplog.text and "ValueError: bad record" in caplog.text
