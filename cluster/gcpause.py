"""Pause Python's cyclic garbage collector around a burst of allocation, on the main thread only.

Validating and compiling a 5,000-node flow allocates a few hundred thousand small containers. Each
allocation counts towards the collector's thresholds, so the collector runs dozens of times in the
middle of the work, and its full passes walk the whole heap: the larger the flow (and the process), the
more each node costs. The work creates no reference cycles that need collecting before it ends, so the
collector is paused for its duration and runs on its usual schedule afterwards. Reference counting,
which frees almost everything, is not affected.

`gc.disable()` is process-wide. On the main thread nothing else runs while the work holds it (the event
loop is the main thread), so the pause is the work's alone. From a worker thread (a compile handed to
`asyncio.to_thread`) it would also stop collection for the event loop serving requests, and overlapping
pauses of several threads would re-enable it under each other; so there the block runs with the
collector as it is.

>>> import gc
>>> with paused_gc():
...     gc.isenabled()
False
>>> gc.isenabled()
True
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the collector inside the block when called on the main thread; re-enable it after only
    if it was enabled before, so nested pauses, and a process that turned the collector off itself, are
    left as they were. On any other thread, do nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
