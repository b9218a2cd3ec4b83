"""A scriptable OpenAI-compatible chat-completions server on loopback, for provider tests.

Each request pops the next scripted reply (the last one repeats); every request is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
class Recorded:
    headers: dict[str, str]
    body: Any


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: list[Reply | str] = [Reply()]
        self.requests: list[Recorded] = []
        self.release = asyncio.Event()
        self.url = ""

    async def completions(self, request: Request) -> Response:
        raw = await request.body()
        self.requests.append(Recorded(dict(request.headers), orjson.loads(raw)))
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if reply == HANG:
            await self.release.wait()  # longer than any client timeout; released at teardown
            return Response(status_code=499)
        assert isinstance(reply, Reply)
        body = reply.body
        content = (
            orjson.dumps(body) if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
        )
        return Response(
            content, status_code=reply.status, headers=reply.headers, media_type="application/json"
        )


@contextlib.asynccontextmanager
async def run_fake_openai() -> AsyncIterator[FakeOpenAI]:
    """Serve a FakeOpenAI with uvicorn on a free loopback port for the duration of the block."""
    fake = FakeOpenAI()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.completions, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it a reply written in two parts waits for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not server.started:
            if task.done() or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("test OpenAI server did not start")
            await asyncio.sleep(0.01)
        fake.url = f"http://127.0.0.1:{port}/v1"
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        await task
        sock.close()
