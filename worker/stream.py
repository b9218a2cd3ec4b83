"""Streamed runs: the run's events as server-sent events (text/event-stream).

    event: token
    data: {"node":"llm","delta":"Hello"}

    : keepalive

    event: done
    data: {"outputs":{...},"flow":"qa","version":"…","generation":3,"variant":"stable","duration_ms":…}

Events are formatted here by hand rather than with an SSE library (sse-starlette): the format is two
lines per event, and the response has to stay ours end to end. Exactly one reader of `receive` may
exist per request (worker/disconnect.py cancels the run when the client goes away; a library's own
disconnect listener would compete with it for the message), the response may start only once the run
is admitted and its inputs checked (so 404/422/503 stay plain JSON), and the final `done` waits for
the run's bookkeeping (stored conversation turn, metrics) — none of which a generic EventSourceResponse
lets us order. No dependency is added for it.

Components emit events synchronously (RunContext.stream); they are queued and written by one task,
which also sends a `: keepalive` comment after HEARTBEAT_S seconds of silence so that proxies and
clients keep an idle stream open while a model thinks or a tool runs.

`StreamedRun` is the response of a streamed run; `settle` is how every run ends, plain or streamed
(gate left, run counted), so the two answers cannot drift apart in their bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cluster.errors import FlowfleetError
from cluster.http import error_body, error_response
from worker.ports import Runnable, RunOutcome
from worker.replica import Replica
from worker.routing import RunKeys, Served
from worker.state import LoadedFlow

logger = logging.getLogger(__name__)

# Seconds of silence before a keepalive comment (tests shorten it with monkeypatch).
HEARTBEAT_S = 15.0
KEEPALIVE = b": keepalive\n\n"
MEDIA_TYPE = "text/event-stream"
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx: pass each event on at once instead of buffering the response.
    (b"x-accel-buffering", b"no"),
)


def sse(event: str, data: Any) -> bytes:
    """One event; orjson writes no newline, so `data` is always a single line.

    >>> sse("token", {"node": "llm", "delta": "hi\\n"})
    b'event: token\\ndata: {"node":"llm","delta":"hi\\\\n"}\\n\\n'
    """
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data, default=repr) + b"\n\n"


def wants_stream(accept: str | None) -> bool:
    """Whether an Accept header asks for an event stream.

    >>> wants_stream("text/event-stream"), wants_stream("application/json, */*"), wants_stream(None)
    (True, False, False)
    """
    return accept is not None and MEDIA_TYPE in accept.lower()


class EventStream:
    """One streamed response: `emit` queues an event (synchronously, from any component), a writer task
    sends them in order with keepalives in between, `close` ends the response after a last event."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.opened = time.monotonic()
        self.first_token: float | None = None  # seconds from the head to the first token

    @property
    def started(self) -> bool:
        return self._writer is not None

    def emit(self, event: Mapping[str, Any]) -> None:
        """A component's event, `{"event": name, ...data}`."""
        data = dict(event)
        name = str(data.pop("event"))
        if name == "token" and self.first_token is None:
            self.first_token = time.monotonic() - self.opened
        self._queue.put_nowait(sse(name, data))

    async def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the response's head (200, text/event-stream) and start writing queued events."""
        message = {"type": "http.response.start", "status": 200, "headers": [*HEADERS, *headers]}
        self.opened = time.monotonic()
        await self._send(message)
        self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while True:
            try:
                chunk = await asyncio.wait_for(self._queue.get(), HEARTBEAT_S)
            except TimeoutError:
                chunk = KEEPALIVE
            if chunk is None:
                break
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def close(self, event: str, data: Any) -> None:
        """Write `event` last and end the response; a client gone by then is not an error of the run."""
        self._queue.put_nowait(sse(event, data))
        self._queue.put_nowait(None)
        if self._writer is None:
            return
        try:
            await self._writer
        except Exception as e:  # the connection went away while the last events were written
            logger.info("stream ended early: %r", e)

    async def abort(self) -> None:
        """Stop writing (the client went away or the run was cancelled)."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(BaseException):
                await self._writer


def version_headers(served: Served) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-flowfleet-version", served.hash.encode()),
        (b"x-flowfleet-variant", served.variant.encode()),
    ]


def settle(replica: Replica, name: str, epoch: Any, digest: str, outcome: str, started: float) -> None:
    """How every admitted run ends, plain or streamed: leave the gate, count the run, and record it for
    the canary and rollback guards."""
    replica.gate.leave()
    elapsed = time.monotonic() - started
    replica.metrics.count_run(name, digest, outcome, elapsed)
    if outcome != "cancelled":  # a client that went away says nothing about the version
        replica.run_stats.record(name, epoch, digest, ok=outcome == "ok", seconds=elapsed)


@dataclass(frozen=True)
class RunRequest:
    """An admitted run (it holds a place in the replica's gate until it is settled)."""

    replica: Replica
    name: str
    loaded: LoadedFlow  # the one snapshot read of the request: a swap later never changes the run
    served: Served
    keys: RunKeys
    inputs: dict[str, Any]
    trace: bool
    body: Mapping[str, Any]


# worker/app.py's `_execute` and `_payload`: the very run and body a plain run has.
Execute = Callable[..., Awaitable[tuple[RunOutcome, dict[str, Any] | None]]]
Payload = Callable[..., dict[str, Any]]


class StreamedRun(Response):
    """The response of a streamed run: `token` / `tool_call` / `tool_result` events while it runs, then
    `done` with the body a plain run answers, or `error` with the body its error response carries.

    The head (200, version headers) goes out just before the run starts: once a session's pin is
    resolved and the inputs checked, so that those failures are still plain JSON with their status. The
    run's events reach the stream through the sink handed to `CompiledFlow.run(stream=...)`.
    """

    def __init__(self, run: RunRequest, execute: Execute, payload: Payload) -> None:
        super().__init__()
        self.run, self.execute, self.payload = run, execute, payload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run, events = self.run, EventStream(send)
        served, started, outcome = run.served, time.monotonic(), "internal_error"
        failure: dict[str, Any] | None = None
        status = 500
        try:
            if run.keys.session_id is not None:
                served = await run.replica.sessions.serve(run.loaded, run.keys.session_id, run.keys.key)
            compiled: Runnable = served.compiled
            check = getattr(compiled, "check_inputs", None)
            if check is not None:
                check(run.inputs)  # RunInputError: a plain 422, as for a plain run
            await events.start(version_headers(served))
            args = (run.name, run.inputs, run.trace, run.keys.session_id, run.body, receive)
            result, memory = await self.execute(run.replica, compiled, *args, stream=events.emit)
            outcome = "ok"
        except FlowfleetError as e:
            outcome, status, failure = e.code, e.http_status, error_body(e.code, e.message, e.details)
        except asyncio.CancelledError:
            outcome = "cancelled"
            await events.abort()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # shutdown: not ours to swallow
            return  # the client went away (the run is cancelled): nobody to answer
        except Exception:
            if not events.started:
                raise  # a plain 500, as for a plain run
            logger.exception("streamed run of %s failed", run.name)
            failure = error_body("internal_error", "internal error; see the server log")
        finally:
            settle(run.replica, run.name, run.loaded.epoch, served.hash, outcome, started)
        if failure is None:
            body = self.payload(run.name, served, result, run.keys.session_id, memory, run.trace)
            await events.close("done", body)
        elif events.started:
            await events.close("error", failure)
        else:  # failed before the run started: the plain error response
            headers = {"X-Flowfleet-Version": served.hash, "X-Flowfleet-Variant": served.variant}
            f = failure
            response = error_response(status, f["error"], f["message"], f["details"], headers=headers)
            await response(scope, receive, send)
            return
        elapsed = time.monotonic() - events.opened
        run.replica.metrics.observe_stream(run.name, events.first_token, elapsed)
