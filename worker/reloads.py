"""What a reload is made of besides the swap: its failures and outcome, compiling verified bytes, and
re-reading a release record that is not news by generation (worker/loader.py runs them)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from cluster.errors import FlowValidationError, MissingSearchProvider, MissingSecret
from cluster.logfmt import logfmt_value
from worker.ports import Compiler, ReleaseReader, Runnable, Target
from worker.state import LoadedFlow, LoadError, WorkerState

# The loader's logger: these lines are the loader's.
log = logging.getLogger("worker.loader")

# Documents above this size are compiled in a thread so a big compile never stalls running requests.
THREAD_COMPILE_BYTES = 64 * 1024


class LoadFailure(Exception):
    """A version could not be prepared; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ReloadOutcome:
    """What one `Loader.apply` did. `result`: loaded, ignored, skipped or failed."""

    flow: str
    result: str
    old_hash: str | None
    new_hash: str
    generation: int
    duration_ms: float
    error: LoadError | None = None


async def compile_version(compiler: Compiler, target: Target, data: bytes, thread_bytes: int) -> Runnable:
    """Verified bytes of `target`, compiled (in a thread above `thread_bytes`). Raises LoadFailure."""
    try:
        if len(data) > thread_bytes:
            compiled = await asyncio.to_thread(compiler, data)
        else:
            compiled = compiler(data)
    except MissingSecret as e:  # this replica's configuration, not the version, is at fault
        raise LoadFailure("missing_secret", str(e)) from e
    except MissingSearchProvider as e:  # the same: a WebSearch node and no provider configured here
        raise LoadFailure("missing_search_provider", str(e)) from e
    except FlowValidationError as e:
        raise LoadFailure("invalid_document", f"invalid document: {e}") from e
    except Exception as e:  # a component's build may raise anything; it must not kill the loader
        log.exception("compiling %s %s failed", target.flow, target.hash[:12])
        raise LoadFailure("compile_error", f"compile failed: {type(e).__name__}: {e}") from e
    return compiled


async def recheck(
    store: ReleaseReader, state: WorkerState, target: Target, current: LoadedFlow | None
) -> Target | None:
    """The flow's release record read afresh, if this replica must move to it; None otherwise."""
    try:
        fresh = await store.get_release(target.flow)
    except (RedisError, OSError):
        return None  # the next reconcile reads it again
    if fresh is None:
        return None
    state.targets[target.flow] = fresh  # the record, not the newest number seen, is the truth
    if current is not None and current.serves(fresh):
        return None  # a stale read raced a newer event; nothing to do
    if current is not None and fresh.generation <= current.generation:
        log.warning(
            "flow=%s replica=%s release record generation %d (%s) replaces loaded generation %d (%s), "
            "which is not older: store reset or restored? following the release record",
            target.flow, state.replica_id, fresh.generation, fresh.hash[:12],
            current.generation, current.hash[:12],
        )  # fmt: skip
    return fresh


def log_reload(outcome: ReloadOutcome, triggered_by: str, replica: str, **failure: Any) -> None:
    """One structured line per reload attempt (logfmt); `extra` carries the fields for JSON formatters."""
    fields: dict[str, Any] = {
        "flow": outcome.flow,
        "old_hash": outcome.old_hash or "-",
        "new_hash": outcome.new_hash,
        "generation": outcome.generation,
        "triggered_by": triggered_by,
        "duration_ms": round(outcome.duration_ms, 3),
        "result": outcome.result,
        "replica": replica,
        **failure,
    }
    line = " ".join(f"{key}={logfmt_value(value)}" for key, value in fields.items())
    level = logging.INFO if outcome.result == "loaded" else logging.WARNING
    log.log(level, "reload %s", line, extra={"reload": fields})
