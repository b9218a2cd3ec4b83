"""A TCP proxy that can turn every open connection half-open: bytes silently stop flowing both ways,
the sockets stay up, and new connections still work — what a dead NAT entry or a cut link looks like."""

from __future__ import annotations

import asyncio
import contextlib

from tests.redis_server import free_port


class _Link:
    def __init__(self) -> None:
        self.dead = False
        self.writers: list[asyncio.StreamWriter] = []


class BlackholeProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.links: list[_Link] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    def blackhole(self) -> int:
        """Silence every connection open now; returns how many."""
        alive = [link for link in self.links if not link.dead]
        for link in alive:
            link.dead = True
        return len(alive)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for writer in link.writers:
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = _Link()
        link.writers = [writer, up_writer]
        self.links.append(link)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(link, src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if link.dead:
                    continue  # swallowed: the peer never learns
                dst.write(data)
                await dst.drain()
        if not link.dead:
            dst.close()
