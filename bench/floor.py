"""The floor under every cutover number: a bare Redis PUBLISH to the same number of subscribers, each a
redis-py asyncio pub/sub connection reading with `get_message` as a replica's subscriber does.

`FloorProcesses` runs one subscriber per process (like replicas); `in_process_rounds` runs them all in
one process (like the fleet-scale benchmark). Run alone: `python -m bench.floor URL CHANNEL` is one
subscriber that prints `ready`, then `<message> <unix time received>` per message, until `stop`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from bench.stats import Round

STOP = b"stop"


async def _subscribe(client: aioredis.Redis, channel: str) -> Any:
    pubsub: Any = client.pubsub()
    await pubsub.subscribe(channel)
    while True:
        message = await pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "subscribe":
            return pubsub


async def subscriber_main(url: str, channel: str) -> None:
    client = aioredis.Redis.from_url(url)
    pubsub = await _subscribe(client, channel)
    print("ready", flush=True)
    while True:
        message = await pubsub.get_message(timeout=0.5)
        if message is None or message["type"] != "message":
            continue
        now = time.time()
        if message["data"] == STOP:
            break
        print(f"{message['data'].decode()} {now!r}", flush=True)
    await pubsub.aclose()
    await client.aclose()


class FloorProcesses:
    """`n` subscriber processes on `channel`; `round(i)` publishes `i` and waits until all received it."""

    def __init__(self, url: str, channel: str, n: int) -> None:
        self.url, self.channel, self.n = url, channel, n
        self.procs: list[asyncio.subprocess.Process] = []
        self.seen: dict[int, list[float]] = {}
        self._arrived: dict[int, asyncio.Event] = {}
        self._readers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> FloorProcesses:
        try:
            for _ in range(self.n):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.floor",
                    self.url,
                    self.channel,
                    stdout=asyncio.subprocess.PIPE,
                )
                self.procs.append(proc)
            for proc in self.procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
                if line.strip() != b"ready":
                    raise RuntimeError("floor subscriber failed to start")
                self._readers.append(asyncio.create_task(self._read(proc)))
        except BaseException:
            await self._kill()
            raise
        return self

    async def _kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            index, at = line.split()
            times = self.seen.setdefault(int(index), [])
            times.append(float(at))
            if len(times) == self.n:
                self._event(int(index)).set()

    def _event(self, index: int) -> asyncio.Event:
        return self._arrived.setdefault(index, asyncio.Event())

    async def round(self, client: aioredis.Redis, index: int, timeout: float = 30.0) -> Round:
        started = time.time()
        await client.publish(self.channel, str(index))
        returned = time.time()
        await asyncio.wait_for(self._event(index).wait(), timeout)
        return Round(started, returned, self.seen[index])

    async def __aexit__(self, *exc: object) -> None:
        client = aioredis.Redis.from_url(self.url)
        try:
            await client.publish(self.channel, STOP)
        finally:
            await client.aclose()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def in_process_rounds(
    url: str, channel: str, n: int, rounds: int, pause_s: float = 0.05
) -> list[Round]:
    """`n` subscribers in this process (own connections, one task each); `rounds` publishes."""
    clients = [aioredis.Redis.from_url(url) for _ in range(n)]
    pubsubs = await asyncio.gather(*(_subscribe(c, channel) for c in clients))
    seen: dict[int, list[float]] = {}
    events: dict[int, asyncio.Event] = {}

    async def listen(pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=0.5)
            if message is None or message["type"] != "message":
                continue
            now = time.time()
            if message["data"] == STOP:
                return
            index = int(message["data"])
            times = seen.setdefault(index, [])
            times.append(now)
            if len(times) == n:
                events.setdefault(index, asyncio.Event()).set()

    listeners = [asyncio.create_task(listen(p)) for p in pubsubs]
    publisher = aioredis.Redis.from_url(url)
    out = []
    try:
        for i in range(rounds):
            started = time.time()
            await publisher.publish(channel, str(i))
            returned = time.time()
            await asyncio.wait_for(events.setdefault(i, asyncio.Event()).wait(), 60)
            out.append(Round(started, returned, seen[i]))
            await asyncio.sleep(pause_s)
        await publisher.publish(channel, STOP)
        await asyncio.wait_for(asyncio.gather(*listeners), 30)
    finally:
        for task in listeners:
            task.cancel()
        for p in pubsubs:
            await p.aclose()
        for c in [*clients, publisher]:
            await c.aclose()
    return out


if __name__ == "__main__":
    asyncio.run(subscriber_main(sys.argv[1], sys.argv[2]))
