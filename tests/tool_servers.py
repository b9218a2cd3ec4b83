"""Loopback HTTP servers for the tool components' tests: any Starlette app, served by uvicorn on a free port,
every request recorded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute

from tests.loopback import serve_app


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
    async with serve_app(app, before_stop=served.release.set) as url:
        served.url = url
        served.port = int(url.rsplit(":", 1)[1])
        yield served
