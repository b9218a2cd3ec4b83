"""Runs that call out end when their client goes away: the model call and running tools are cancelled
instead of spending tokens on an answer nobody reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


async def _disconnected(receive: Receive) -> None:
    # The body was read already: the next message the server delivers is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(work: Awaitable[T], receive: Receive) -> T:
    """`await work`, cancelled (raising CancelledError) as soon as the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise asyncio.CancelledError("the client went away")
    finally:
        watcher.cancel()
        if not task.done():  # we were cancelled ourselves (shutdown): take the run down too
            task.cancel()
