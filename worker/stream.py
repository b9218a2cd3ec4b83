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

`StreamedRun` is the response of a streamed run in any API: the API's `Framing` turns the run's events,
its result and its failure into that API's bytes (native events here; LangFlow's and OpenAI's in
worker/api/), while the order of things (pin, inputs, head, run, bookkeeping, last event) is kept here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cluster.errors import FlowfleetError
from cluster.http import error_body
from worker.routing import Served
from worker.runs import Finished, Run, run_payload, version_headers

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
    """One streamed response: `emit` queues a component's event (synchronously, from any component) in
    the framing's bytes, a writer task sends them in order with keepalives in between, `close` ends the
    response after a last chunk."""

    def __init__(self, send: Send, framing: Framing) -> None:
        self._send = send
        self._framing = framing
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.opened = time.monotonic()
        self.first_token: float | None = None  # seconds from the head to the first token

    @property
    def started(self) -> bool:
        return self._writer is not None

    def emit(self, event: Mapping[str, Any]) -> None:
        """A component's event, `{"event": name, ...data}`."""
        if self.first_token is None and event.get("event") == "token":
            self.first_token = time.monotonic() - self.opened
        chunk = self._framing.event(event)
        if chunk:
            self._queue.put_nowait(chunk)

    async def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the response's head (200, the framing's content type) and start writing queued events."""
        head = [*self._framing.headers, *headers]
        message = {"type": "http.response.start", "status": 200, "headers": head}
        self.opened = time.monotonic()
        await self._send(message)
        self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        keepalive = self._framing.keepalive
        while True:
            try:
                chunk = await asyncio.wait_for(self._queue.get(), HEARTBEAT_S)
            except TimeoutError:
                if not keepalive:
                    continue
                chunk = keepalive
            if chunk is None:
                break
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def close(self, last: bytes) -> None:
        """Write `last` and end the response; a client gone by then is not an error of the run."""
        if last:
            self._queue.put_nowait(last)
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


class Framing(Protocol):
    """How one API writes a streamed run."""

    headers: tuple[tuple[bytes, bytes], ...]
    keepalive: bytes  # sent after HEARTBEAT_S of silence; empty: none

    def event(self, event: Mapping[str, Any]) -> bytes | None:
        """A component's event (`{"event": "token" | "tool_call" | "tool_result", ...}`); None: skip."""

    def done(self, run: Run, finished: Finished) -> bytes:
        """The last chunk of a run that succeeded."""

    def error(self, run: Run, error: FlowfleetError | None) -> bytes:
        """The last chunk of a run that failed after the head was sent (None: an internal error)."""

    def refuse(self, run: Run, error: FlowfleetError, served: Served) -> Response:
        """The plain error response of a run refused before its head was sent (pin, inputs)."""


class NativeFraming:
    """`/v1/flows/{name}/run`'s events: `token`, `tool_call`, `tool_result`, then `done` or `error`."""

    headers = HEADERS
    keepalive = KEEPALIVE

    def event(self, event: Mapping[str, Any]) -> bytes | None:
        data = dict(event)
        return sse(str(data.pop("event")), data)

    def done(self, run: Run, finished: Finished) -> bytes:
        return sse("done", run_payload(run.call, finished))

    def error(self, run: Run, error: FlowfleetError | None) -> bytes:
        if error is None:
            return sse("error", error_body("internal_error", "internal error; see the server log"))
        return sse("error", error_body(error.code, error.message, error.details))

    def refuse(self, run: Run, error: FlowfleetError, served: Served) -> Response:
        from worker.api.errors import run_error_response

        return run_error_response(error, served)


class StreamedRun(Response):
    """The response of a streamed run: the framing's events while it runs, then its last chunk for the
    result or the failure.

    The head (200, version headers) goes out just before the run starts: once the version is chosen
    (explicit, a session's pin) and the inputs checked, so that those failures are still plain errors
    with their status. The run's events reach the stream through the sink handed to `Run.execute`.
    """

    def __init__(self, run: Run, framing: Framing) -> None:
        super().__init__()
        self.run, self.framing = run, framing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run, framing = self.run, self.framing
        events = EventStream(send, framing)
        refused: Response | None = None
        last = b""
        try:
            async with run:
                try:
                    served = await run.prepare()
                except FlowfleetError as e:
                    refused = framing.refuse(run, e, run.served)
                    raise
                await events.start(version_headers(served))
                finished = await run.execute(receive, events.emit)
            last = framing.done(run, finished)
        except FlowfleetError as e:
            if refused is not None:
                await refused(scope, receive, send)
                return
            last = framing.error(run, e)
        except asyncio.CancelledError:
            await events.abort()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # shutdown: not ours to swallow
            return  # the client went away (the run is cancelled): nobody to answer
        except Exception:
            if not events.started:
                raise  # a plain 500, as for a plain run
            logger.exception("streamed run of %s failed", run.call.flow)
            last = framing.error(run, None)
        await events.close(last)
        elapsed = time.monotonic() - events.opened
        run.replica.metrics.observe_stream(run.call.flow, events.first_token, elapsed)
