"""Serve an ASGI app with uvicorn on a free loopback port for the duration of a block (test servers)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import uvicorn
from starlette.types import ASGIApp


@contextlib.asynccontextmanager
async def serve_app(
    app: ASGIApp, what: str = "test server", before_stop: Callable[[], object] | None = None
) -> AsyncIterator[str]:
    """Yields the server's base URL, `http://127.0.0.1:<port>`. `before_stop` runs first on the way out
    (release requests held open on purpose: the server waits for them before it stops)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it a reply written in two parts waits for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not server.started:
            if task.done() or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{what} did not start")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        if before_stop is not None:
            before_stop()
        server.should_exit = True
        await task
        sock.close()
