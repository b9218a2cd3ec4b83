"""The Responses API's objects: a `response` (plain answer), and the typed events of a streamed one.

    event: response.created                 {"type", "sequence_number": 0, "response": {in_progress}}
    event: response.in_progress
    event: response.output_item.added       the assistant message, empty
    event: response.content_part.added      its output_text part, empty
    event: response.output_text.delta       one per piece of the answer (mapping.AnswerText)
    event: response.output_text.done        the whole text
    event: response.content_part.done
    event: response.output_item.done
    event: response.completed               the response, with `usage`

The first four leave with the head. A run that fails after the head ends with `response.failed` (the
response with `status: failed` and its `error`), as OpenAI's API ends a response the model failed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response

from cluster.components.providers.usage import TokenCount
from cluster.errors import FlowfleetError
from worker.api.openai.errors import error_body, error_response
from worker.api.openai.mapping import AnswerText
from worker.api.openai.run import OPENED, StreamingRun
from worker.routing import Served
from worker.runs import Finished, Run
from worker.stream import HEADERS, KEEPALIVE


def response_usage(tokens: TokenCount) -> dict[str, Any]:
    return {
        "input_tokens": tokens.prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": tokens.completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": tokens.total,
    }


@dataclass(frozen=True)
class Shape:
    """What one response says whatever its state: ids, model, the conversation it continues."""

    id: str
    model: str
    previous: str | None
    stored: bool
    user: str | None
    metadata: Any
    created_at: int = field(default_factory=lambda: int(time.time()))
    message_id: str = field(default_factory=lambda: "msg_" + secrets.token_hex(16))

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def message(self, text: str | None) -> dict[str, Any]:
        """The assistant's message: in progress and empty (None), or completed with `text`."""
        content = [] if text is None else [self.part(text)]
        status = "in_progress" if text is None else "completed"
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def response(
        self,
        status: str,
        text: str | None = None,
        tokens: TokenCount | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # Sampling parameters and instructions were not applied (params.py): the response says null.
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": None,
            "instructions": None,
            "max_output_tokens": None,
            "metadata": self.metadata or {},
            "model": self.model,
            "output": [] if text is None else [self.message(text)],
            "parallel_tool_calls": False,
            "previous_response_id": self.previous,
            "reasoning": {"effort": None, "summary": None},
            "store": self.stored,
            "temperature": None,
            "text": {"format": {"type": "text"}},
            "tool_choice": "none",
            "tools": [],
            "top_p": None,
            "truncation": "disabled",
            "usage": None if tokens is None else response_usage(tokens),
            "user": self.user,
        }


class ResponsesFraming:
    """One streamed response (worker.stream.Framing); every event carries its `sequence_number`."""

    headers = HEADERS
    keepalive = KEEPALIVE

    def __init__(self, run: StreamingRun, shape: Shape) -> None:
        self.run = run
        self.shape = shape
        self.sequence = 0
        self.answer = AnswerText()

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _at(self) -> dict[str, Any]:
        return {"item_id": self.shape.message_id, "output_index": 0, "content_index": 0}

    def event(self, event: Mapping[str, Any]) -> bytes | None:
        if event.get("event") == OPENED:
            shape = self.shape
            return b"".join(
                (
                    self._event("response.created", response=shape.response("in_progress")),
                    self._event("response.in_progress", response=shape.response("in_progress")),
                    self._event("response.output_item.added", output_index=0, item=shape.message(None)),
                    self._event("response.content_part.added", **self._at(), part=shape.part("")),
                )
            )
        piece = self.answer.delta(self.run.compiled, event)
        if piece is None:
            return None
        return self._event("response.output_text.delta", **self._at(), delta=piece, logprobs=[])

    def done(self, run: Run, finished: Finished) -> bytes:
        text = self.run.answer(finished)
        rest = self.answer.rest(text)
        shape, at = self.shape, self._at()
        events = [self._event("response.output_text.delta", **at, delta=rest, logprobs=[])] if rest else []
        events += [
            self._event("response.output_text.done", **at, text=text, logprobs=[]),
            self._event("response.content_part.done", **at, part=shape.part(text)),
            self._event("response.output_item.done", output_index=0, item=shape.message(text)),
            self._event("response.completed", response=shape.response("completed", text, self.run.tokens)),
        ]
        return b"".join(events)

    def error(self, run: Run, error: FlowfleetError | None) -> bytes:
        failure = error_body(error)[1]["error"]
        reason = {"code": "server_error", "message": f"{failure['code']}: {failure['message']}"}
        failed = self.shape.response("failed", tokens=self.run.tokens, error=reason)
        return self._event("response.failed", response=failed)

    def refuse(self, run: Run, error: FlowfleetError, served: Served) -> Response:
        return error_response(error, served)
