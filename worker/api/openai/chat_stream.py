"""Streamed chat completions: `chat.completion.chunk` objects as server-sent `data:` lines, as OpenAI's.

    data: {"id":"chatcmpl-…","object":"chat.completion.chunk",…,"choices":[{"delta":{"role":"assistant"…
    data: {…"choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}
    data: {…"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}
    data: {…"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}
    data: [DONE]

(the usage chunk only with `stream_options.include_usage`)

The role chunk leaves with the head; content chunks are the token events of the model node that feeds
the answer (mapping.AnswerText), and whatever of the final answer they did not carry comes in one
chunk before the last, so the pieces always add up to the non-streamed answer. A run that fails after
the head ends the stream with `data: {"error": {...}}` and no `[DONE]`: the OpenAI SDKs raise it as an
APIError. Keepalives are SSE comments, which every SSE client skips.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Mapping
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

DONE = b"data: [DONE]\n\n"


def fingerprint(digest: str) -> str:
    return "fp_" + digest[:12]


# Completion ids need to be unique, not secret: a random prefix per process and a counter. They are
# made a batch at a time, so that taking one on the request path is a single step of an iterator.
ID_PREFIX = "chatcmpl-" + os.urandom(6).hex()
ID_BATCH = 1024


def _id_batch(start: int) -> list[bytes]:
    prefix = ID_PREFIX.encode()
    return [b"%s%012x" % (prefix, n) for n in range(start, start + ID_BATCH)]


# Every completion id of this process, plain and streamed alike, as ASCII bytes.
COMPLETION_IDS: Iterator[bytes] = itertools.chain.from_iterable(map(_id_batch, itertools.count(0, ID_BATCH)))


def completion_id() -> str:
    return next(COMPLETION_IDS).decode()


def chat_usage(tokens: TokenCount) -> dict[str, int]:
    return {
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.completion,
        "total_tokens": tokens.prompt + tokens.completion,
    }


def data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChatFraming:
    """One streamed chat completion (worker.stream.Framing)."""

    headers = HEADERS
    keepalive = KEEPALIVE

    def __init__(self, run: StreamingRun, model: str, include_usage: bool) -> None:
        self.run = run
        self.model = model
        self.include_usage = include_usage
        self.id = completion_id()
        self.created = int(time.time())
        self.answer = AnswerText()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": fingerprint(self.run.served.hash),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return data(chunk)

    def event(self, event: Mapping[str, Any]) -> bytes | None:
        if event.get("event") == OPENED:
            return self._chunk({"role": "assistant", "content": ""})
        piece = self.answer.delta(self.run.compiled, event)
        return None if piece is None else self._chunk({"content": piece})

    def done(self, run: Run, finished: Finished) -> bytes:
        rest = self.answer.rest(self.run.answer(finished))
        chunks = [self._chunk({"content": rest})] if rest else []
        chunks.append(self._chunk({}, "stop"))
        if self.include_usage:
            last = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": fingerprint(finished.served.hash),
                "choices": [],
                "usage": chat_usage(self.run.tokens),
            }
            chunks.append(data(last))
        chunks.append(DONE)
        return b"".join(chunks)

    def error(self, run: Run, error: FlowfleetError | None) -> bytes:
        return data(error_body(error)[1])

    def refuse(self, run: Run, error: FlowfleetError, served: Served) -> Response:
        return error_response(error, served)
