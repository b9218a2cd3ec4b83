"""A scriptable OpenAI-compatible chat-completions server on loopback, for provider tests.

Each request pops the next scripted reply (the last one repeats); every request is recorded.

A request with `"stream": true` gets server-sent events instead: a `StreamReply` as scripted (its chunks,
then `data: [DONE]`, or a connection cut after `break_after` chunks, or a hang), and a plain 200 `Reply`
holding a completion converted to chunks (`stream_chunks`: its text word by word, its tool calls in
fragments, and a usage chunk when the request asked for one). Requests without it are answered as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.loopback import serve_app

HANG = "hang"


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


def tool_call_completion(
    name: str, arguments: str | dict[str, Any], call_id: str = "call_1"
) -> dict[str, Any]:
    """A completion whose message calls one tool: `arguments` as JSON text, or an object (some servers)."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | str = field(default_factory=lambda: completion("hello"))
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamReply:
    """A streamed reply: `chunks` (objects, or raw `data:` text) then `[DONE]`; `break_after` cuts the
    connection after that many chunks (no [DONE]); `hang_after` stops sending after that many, until
    teardown."""

    chunks: list[dict[str, Any] | str]
    break_after: int | None = None
    hang_after: int | None = None


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "chatcmpl-test", "object": "chat.completion.chunk", "choices": [choice]}


def stream_chunks(body: dict[str, Any], include_usage: bool = False) -> list[dict[str, Any]]:
    """A completion body as the chunks a streaming server would send for it."""
    message = body["choices"][0]["message"]
    chunks = [_chunk({"role": "assistant"})]
    content = message.get("content")
    if content:
        chunks += [_chunk({"content": word}) for word in re.findall(r"\s*\S+\s*|\s+", content)]
    for index, call in enumerate(message.get("tool_calls") or ()):
        arguments = call["function"]["arguments"]
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
        head = {"index": index, "id": call["id"], "type": "function"}
        chunks.append(_chunk({"tool_calls": [{**head, "function": {"name": call["function"]["name"]}}]}))
        half = len(text) // 2
        for part in (text[:half], text[half:]):
            chunks.append(_chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
    chunks.append(_chunk({}, "tool_calls" if message.get("tool_calls") else "stop"))
    if include_usage:
        usage = body.get("usage") or {"prompt_tokens": 1, "completion_tokens": max(1, len(chunks) - 2)}
        last = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "choices": [], "usage": usage}
        chunks.append(last)
    return chunks


@dataclass
class Recorded:
    headers: dict[str, str]
    body: Any
    client_port: int | None = None  # the caller's port: one per upstream connection


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: list[Reply | str] = [Reply()]
        self.requests: list[Recorded] = []
        self.release = asyncio.Event()
        self.url = ""

    async def completions(self, request: Request) -> Response:
        raw = await request.body()
        port = request.client.port if request.client is not None else None
        self.requests.append(Recorded(dict(request.headers), orjson.loads(raw), port))
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if reply == HANG:
            await self.release.wait()  # longer than any client timeout; released at teardown
            return Response(status_code=499)
        data = self.requests[-1].body
        if isinstance(data, dict) and data.get("stream") is True:
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            if isinstance(reply, Reply) and reply.status == 200 and isinstance(reply.body, dict):
                reply = StreamReply(list(stream_chunks(reply.body, include_usage)))
            if isinstance(reply, StreamReply):
                return StreamingResponse(self._events(reply), media_type="text/event-stream")
        assert isinstance(reply, Reply)
        body = reply.body
        content = (
            orjson.dumps(body) if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
        )
        return Response(
            content, status_code=reply.status, headers=reply.headers, media_type="application/json"
        )

    async def _events(self, reply: StreamReply) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(reply.chunks):
            if i == reply.break_after:
                raise ConnectionAbortedError("scripted: the stream breaks here")
            if i == reply.hang_after:
                await self.release.wait()
                return
            data = chunk if isinstance(chunk, str) else orjson.dumps(chunk).decode()
            yield f"data: {data}\n\n".encode()
        if reply.break_after is not None:
            raise ConnectionAbortedError("scripted: the stream breaks here")
        yield b"data: [DONE]\n\n"


@contextlib.asynccontextmanager
async def run_fake_openai() -> AsyncIterator[FakeOpenAI]:
    """Serve a FakeOpenAI with uvicorn on a free loopback port for the duration of the block."""
    fake = FakeOpenAI()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.completions, methods=["POST"])])
    async with serve_app(app, "test OpenAI server", before_stop=fake.release.set) as url:
        fake.url = f"{url}/v1"
        yield fake
