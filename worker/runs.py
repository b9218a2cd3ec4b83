"""One run, whichever API asked for it: admission, the version that serves it, execution, bookkeeping.

Every run API of a replica (the native `/v1/flows/{name}/run`, LangFlow's `/api/v1/run/{flow}`, the
OpenAI-compatible endpoints) turns its request into a `RunCall` and runs it the same way:

    async with admit(replica, call) as run:      # 503 / 404 before anything runs
        served = await run.prepare()             # version (explicit, pinned, canary or stable), tweaks,
                                                 # inputs checked: failures are still plain errors
        ... a streamed answer sends its head here ...
        finished = await run.execute(receive, sink)

Leaving the block settles the run exactly once (gate left, metrics, run stats for the guards), with the
outcome the block ended with. The one read of the snapshot happens in `admit`: a swap later never changes
what this run executes.

Which version serves: an explicit `version` (flows that opt in, worker.pick) wins over a session's pin,
which wins over canary routing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from cluster.components.conversation import ChatMessage, InMemoryConversation
from cluster.errors import FlowfleetError, FlowNotFound, Unavailable
from cluster.store.conversations import ANONYMOUS
from worker.disconnect import unless_disconnected
from worker.ports import Runnable, RunOutcome
from worker.replica import Replica
from worker.routing import Served, route
from worker.served import version_header_pairs
from worker.state import LoadedFlow

Sink = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class RunCall:
    """What a caller asks for, in any API's terms translated to ours. Treat it as immutable (change it
    with `dataclasses.replace`): not frozen only because a frozen dataclass of ten fields costs about
    a microsecond more to make, once per run.

    `history`: the conversation given by the caller itself (OpenAI's `messages`): the run reads it
    instead of the stored conversation and stores nothing. `session_id` otherwise names the stored
    conversation (flows with memory) and the session's version pin.
    """

    flow: str
    inputs: dict[str, Any]
    key: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    principal: str = ANONYMOUS
    trace: bool = False
    version: str | None = None
    tweaks: Mapping[str, Mapping[str, Any]] | None = None
    history: tuple[ChatMessage, ...] | None = None


@dataclass(slots=True)
class Finished:
    """How a run ended (treat it as immutable, like RunCall)."""

    served: Served
    result: RunOutcome
    # What degraded in the conversation's memory, if anything (worker.memory.Conversations.finish).
    memory: dict[str, Any] | None
    # The messages this turn added to the conversation (the caller's own history included none).
    added: tuple[ChatMessage, ...] = ()


def not_loaded(replica: Replica, name: str) -> FlowfleetError:
    """404 for a flow this replica never heard of; 503 for one with a release it could not load."""
    target = replica.state.targets.get(name)
    if target is None:
        return FlowNotFound(name)
    err = replica.state.health_of(name).last_error
    details: dict[str, Any] = {"flow": name, "hash": target.hash, "generation": target.generation}
    if err is not None:
        details["reason"] = err.reason
        details["error"] = err.message
    message = f"flow {name!r} has a release, but no version of it is loaded on this replica"
    return Unavailable("flow_not_loaded", message, **details)


def admit(replica: Replica, call: RunCall) -> Run:
    """Take a place in the replica's gate for `call`, or raise why not (shutting down, unknown or
    unloaded flow, at the concurrency limit)."""
    if replica.state.draining:
        raise Unavailable("shutting_down", "replica is shutting down")
    loaded = replica.state.snapshot.get(call.flow)
    if loaded is None:
        raise not_loaded(replica, call.flow)
    served = route(loaded, call.key)
    if not replica.gate.try_enter():
        replica.metrics.count_run(call.flow, served.hash, "overloaded")
        limit = replica.gate.limit
        raise Unavailable(
            "overloaded", f"replica is running its limit of {limit} concurrent runs", limit=limit
        )
    return Run(replica, call, loaded, served)


class Run:
    """An admitted run; use as `async with` so it is settled exactly once."""

    __slots__ = ("replica", "call", "loaded", "served", "compiled", "started", "outcome", "checked")

    def __init__(self, replica: Replica, call: RunCall, loaded: LoadedFlow, served: Served) -> None:
        self.replica, self.call, self.loaded, self.served = replica, call, loaded, served
        self.compiled: Runnable = served.compiled
        self.started = time.monotonic()
        self.outcome = "internal_error"
        # Whether `prepare` checked `call.inputs` against `compiled` (the engine then skips its check).
        self.checked = False

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end(error)

    def end(self, error: BaseException | None) -> None:
        """Settle the run (what leaving `async with` does): it ended with `error`, or None if it ran."""
        if error is None:
            outcome = "ok"
        elif isinstance(error, FlowfleetError):
            outcome = error.code
        elif isinstance(error, asyncio.CancelledError):
            outcome = "cancelled"  # the client went away, or shutdown ran out of grace
        else:
            outcome = self.outcome
        self.outcome = outcome
        settle(self.replica, self.call.flow, self.loaded.epoch, self.served.hash, outcome, self.started)

    async def prepare(self) -> Served:
        """Choose the version, apply tweaks and check the inputs against what that version takes."""
        call, replica = self.call, self.replica
        if call.version is not None:
            self.served = await replica.picker.pick(self.loaded, call.version)
        elif call.session_id is not None and call.history is None:
            self.served = await replica.sessions.serve(self.loaded, call.session_id, call.key)
        compiled = self.served.compiled
        if call.tweaks:
            tweaked = getattr(compiled, "tweaked", None)
            if tweaked is None:
                raise FlowfleetError("this version cannot take tweaks")
            compiled = await tweaked(call.tweaks)
        self.checked = False
        check = getattr(compiled, "check_inputs", None)
        if check is not None:
            check(call.inputs)
        self.compiled, self.checked = compiled, check is not None
        return self.served

    async def execute(self, receive: Any, sink: Sink | None = None) -> Finished:
        """Run once, continuing the conversation if the flow has memory. A run that may wait on the
        network, or is streamed (`sink` takes its events), ends when its client goes away (`receive`);
        others just run, with no watcher task on the fast path."""
        call, replica, compiled = self.call, self.replica, self.compiled
        conversation: Any = None
        if getattr(compiled, "remembers", False):
            if call.history is not None:
                conversation = InMemoryConversation(call.session_id or "-", list(call.history))
            elif call.session_id is not None:
                conversations = replica.conversations
                conversation = conversations.open(call.flow, call.principal, call.session_id, call.user_id)
        options: dict[str, Any] = {"conversation": conversation} if conversation is not None else {}
        if sink is not None:
            options["stream"] = sink
        if self.checked:  # a Runnable with check_inputs takes inputs_checked (worker.ports.Runnable)
            options["inputs_checked"] = True
        running = compiled.run(
            call.inputs, timeout=replica.settings.run_timeout_s, trace=call.trace, **options
        )
        watched = sink is not None or getattr(compiled, "calls_out", False)
        result = await (unless_disconnected(running, receive) if watched and receive else running)
        memory: dict[str, Any] | None = None
        added: tuple[ChatMessage, ...] = ()
        if isinstance(conversation, InMemoryConversation):
            added = tuple(conversation.pending)
        elif conversation is not None:
            added = tuple(conversation.pending)
            memory = await replica.conversations.finish(conversation)
        return Finished(self.served, result, memory, added)


def settle(replica: Replica, name: str, epoch: Any, digest: str, outcome: str, started: float) -> None:
    """How every admitted run ends, plain or streamed: leave the gate, count the run, and record it for
    the canary and rollback guards."""
    replica.gate.leave()
    elapsed = time.monotonic() - started
    replica.metrics.count_run(name, digest, outcome, elapsed)
    if outcome != "cancelled":  # a client that went away says nothing about the version
        replica.run_stats.record(name, epoch, digest, ok=outcome == "ok", seconds=elapsed)


def run_payload(call: RunCall, finished: Finished) -> dict[str, Any]:
    """The native API's answer to a run (and the `done` event of a streamed one)."""
    served, result = finished.served, finished.result
    payload: dict[str, Any] = {
        "outputs": result.outputs,
        "flow": call.flow,
        "version": served.hash,
        "generation": served.generation,
        "variant": served.variant,
        "duration_ms": result.duration_ms,
    }
    if call.session_id is not None:
        payload["session_id"] = call.session_id
        payload["pinned"] = served.pinned
    if finished.memory is not None:  # the conversation's history could not be read, or the turn waits
        payload["memory"] = finished.memory
    if call.trace:
        payload["trace"] = result.trace
    return payload


def version_headers(served: Served) -> list[tuple[bytes, bytes]]:
    """X-Flowfleet-Version and -Variant: encoded once per version when routing chose it (a fresh list
    each call, as callers extend it)."""
    return list(served.headers or version_header_pairs(served.hash, served.variant))
