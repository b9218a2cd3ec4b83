"""Loopback HTTP servers for the tool components' tests: any Starlette app, served by uvicorn on a free port,
every request recorded."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute


@dataclass
class Served:
    """A running server: its base URL (`http://127.0.0.1:PORT`), every request it received (path, query,
    headers, body) and an event that releases handlers told to hang."""

    url: str = ""
    port: int = 0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def paths(self) -> list[str]:
        return [path for path, _, _, _ in self.requests]

    async def record(self, request: Request) -> bytes:
        """Log `request` (handlers call this first) and return its body."""
        body = await request.body()
        self.requests.append((request.url.path, request.url.query, dict(request.headers), body))
        return body


@contextlib.asynccontextmanager
async def serve(routes: Callable[[Served], Sequence[BaseRoute]]) -> AsyncIterator[Served]:
    """Serve the routes `routes(served)` builds on 127.0.0.1 for the duration of the block."""
    served = Served()
    app = Starlette(routes=list(routes(served)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    served.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not server.started:
            if task.done() or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("test server did not start")
            await asyncio.sleep(0.01)
        served.url = f"http://127.0.0.1:{served.port}"
        yield served
    finally:
        served.release.set()
        server.should_exit = True
        await task
        sock.close()
