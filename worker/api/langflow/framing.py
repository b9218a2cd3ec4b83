"""LangFlow's streamed runs (`/api/v1/run/{flow}?stream=true`), byte for byte as LangFlow writes them.

LangFlow's EventManager writes each event as `json.dumps({"event": name, "data": data}) + "\\n\\n"`
(Python's default separators, non-ASCII escaped), as `text/event-stream` though it is no SSE:

    {"event": "add_message", "data": {"text_key": "text", ..., "sender": "User", ..., "id": "…"}}

    {"event": "add_message", "data": {..., "text": "Hel", "properties": {..., "state": "partial"}, ...}}

    {"event": "token", "data": {"chunk": "Hel", "id": "…"}}

    {"event": "token", "data": {"chunk": "lo", "id": "…"}}

    {"event": "add_message", "data": {..., "text": "Hello", "properties": {..., "state": "complete"}, ...}}

    {"event": "end", "data": {"result": {"session_id": "…", "outputs": [...]}}}

In order: the user's message (a ChatInput that stores it), then for each ChatOutput fed by a model, a
partial message on its first token, its tokens (keyed by the message's id), then every ChatOutput's
complete message and `end` with the non-streamed answer. A failure after the head is
`{"event": "error", "data": {"error": "<message>"}}`, and nothing after it. LangFlow sends no keepalive,
and neither does this framing: any extra byte could break a client that splits on blank lines.

Tokens of nodes that feed no selected ChatOutput, and tool calls, are not sent (LangFlow streams only
what reaches a chat output). `?sse=true` asks for the same events as standard server-sent events
(`event: token\\ndata: {...}\\n\\n`) with `: keepalive` comments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from cluster.errors import FlowfleetError
from cluster.flow.templates import to_text
from worker.api.langflow.call import LangflowRun
from worker.api.langflow.errors import INTERNAL, error_response
from worker.api.langflow.plan import Plan
from worker.api.langflow.results import Messages, event_message, output_message, run_response
from worker.routing import Served
from worker.runs import Finished, Run
from worker.stream import HEADERS, KEEPALIVE


def frame(event: str, data: Any) -> bytes:
    """One event as LangFlow's EventManager writes it.

    >>> frame("token", {"chunk": "hé", "id": "m1"})
    b'{"event": "token", "data": {"chunk": "h\\\\u00e9", "id": "m1"}}\\n\\n'
    """
    return (json.dumps({"event": event, "data": data}, default=repr) + "\n\n").encode()


def sse_frame(event: str, data: Any) -> bytes:
    """The same event as a server-sent event (`?sse=true`)."""
    return b"event: " + event.encode() + b"\ndata: " + json.dumps(data, default=repr).encode() + b"\n\n"


class LangflowFraming:
    """The events of one streamed run (a framing per request: it remembers which messages it opened)."""

    headers = HEADERS

    def __init__(self, run: LangflowRun, *, sse: bool = False) -> None:
        self.run = run
        self.messages = Messages(run.call.flow, run.session_id)
        self.keepalive = KEEPALIVE if sse else b""
        self._frame = sse_frame if sse else frame
        self._opened = False
        self._streaming: set[str] = set()

    @property
    def _plan(self) -> Plan:
        assert self.run.plan is not None, "a run is planned before its first event"
        return self.run.plan

    def _opening(self) -> bytes:
        """The user's message, once, before anything else (LangFlow's ChatInput runs first)."""
        if self._opened:
            return b""
        self._opened = True
        chunks = []
        inputs = self.run.call.inputs
        for node in self._plan.chat_inputs:
            text = to_text(inputs.get(node.input_name, node.default))
            data = self.messages.data(node.node_id, text, sender="User", sender_name=node.sender_name)
            chunks.append(self._frame("add_message", event_message(data)))
        return b"".join(chunks)

    def event(self, event: Mapping[str, Any]) -> bytes | None:
        if event.get("event") != "token":
            return None
        node, delta = str(event.get("node")), str(event.get("delta", ""))
        output = self._plan.streamed_as(node)
        if output is None or not delta:
            return None
        chunks = [self._opening()]
        message_id, _ = self.messages.stamp(output.node_id)
        if output.node_id not in self._streaming:
            self._streaming.add(output.node_id)
            partial = output_message(self.messages, output, delta)
            partial["properties"]["state"] = "partial"
            chunks.append(self._frame("add_message", event_message(partial)))
        chunks.append(self._frame("token", {"chunk": delta, "id": message_id}))
        return b"".join(chunks)

    def done(self, run: Run, finished: Finished) -> bytes:
        plan, values = self._plan, finished.result.outputs
        chunks = [self._opening()]
        for output in plan.outputs:
            if output.messages:
                complete = output_message(self.messages, output, values.get(output.key))
                chunks.append(self._frame("add_message", event_message(complete)))
        result = run_response(self.messages, self.run.request.input_value, plan.outputs, values)
        chunks.append(self._frame("end", {"result": result}))
        return b"".join(chunks)

    def error(self, run: Run, error: FlowfleetError | None) -> bytes:
        return self._opening() + self._frame("error", {"error": INTERNAL if error is None else error.message})

    def refuse(self, run: Run, error: FlowfleetError, served: Served) -> Response:
        return error_response(error, served)
