"""A closed-loop HTTP load generator: `concurrency` keep-alive connections, each sending POST requests back
to back for `duration` seconds, recording every response and every failure.

    python -m bench.loadgen http://127.0.0.1:8000/v1/flows/f/run --duration 10 --concurrency 16 --out r.json

A hand-written HTTP/1.1 client on asyncio streams (no dependency): a general-purpose client such as
httpx costs more CPU per request than the server under test, so on a small machine it would measure
itself. Connections are opened once and reused, as a real client's pool does; a failed connection is
replaced. Each record is `[sent, received, status, generation, version, replica, error]` (unix seconds;
status 0 with an error name for a transport failure); every non-2xx status and every failure is an
error. The process prints `started` when its connections are open, so a driver can line up with it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

Record = list[Any]
DEFAULT_BODY = b'{"inputs": {"input": "the quarterly report"}}'


class Connection:
    def __init__(self, host: str, port: int, path: str, body: bytes, *, parse: bool = True) -> None:
        self.host, self.port = host, port
        self.parse = parse
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        # asyncio sets TCP_NODELAY on TCP connections it opens.
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self) -> Record:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        sent = time.time()
        self.writer.write(self.request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("connection closed by the server")
        status = int(status_line.split(b" ", 2)[1])
        length, replica, close, version = 0, None, False, None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-flowfleet-replica":
                replica = value.strip().decode()
            elif name == b"x-flowfleet-version":
                version = value.strip().decode()
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError("chunked responses are not supported")
        body = await self.reader.readexactly(length)
        received = time.time()
        generation = None
        if self.parse:  # else the version is its header's, and the body is not read as JSON
            payload = orjson.loads(body) if 200 <= status < 300 else {}
            generation, version = payload.get("generation"), payload.get("version")
        if close:
            self.close()
        return [sent, received, status, generation, version, replica, None]


async def drive(
    url: str,
    *,
    duration: float,
    concurrency: int,
    body: bytes = DEFAULT_BODY,
    timeout: float = 30.0,
    started: asyncio.Event | None = None,
    until: asyncio.Event | None = None,
    records: list[Record] | None = None,
    parse: bool = True,
) -> list[Record]:
    """Run the load for `duration` seconds or until `until` is set; returns every record (appended to
    `records` as they come, when given, so a caller can watch the load while it runs). With `parse`
    false, answers are not read as JSON: the version comes from X-Flowfleet-Version, the generation is
    None."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    connections = [Connection(host, port, path, body, parse=parse) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    records = [] if records is None else records
    end = time.monotonic() + duration

    async def loop(conn: Connection) -> None:
        while time.monotonic() < end and not (until is not None and until.is_set()):
            sent = time.time()
            try:
                async with asyncio.timeout(timeout):
                    records.append(await conn.send())
            except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError) as e:
                records.append([sent, time.time(), 0, None, None, None, type(e).__name__])
                conn.close()
                await asyncio.sleep(0.01)  # a refused connection must not spin

    if started is not None:
        started.set()
    try:
        await asyncio.gather(*(loop(c) for c in connections))
    finally:
        for c in connections:
            c.close()
    return records


def is_error(record: Record) -> bool:
    return not 200 <= record[2] < 300


def summarise(records: list[Record], duration: float) -> dict[str, Any]:
    from bench.stats import dist

    ok = [r for r in records if not is_error(r)]
    errors: dict[str, int] = {}
    for r in records:
        if is_error(r):
            key = r[6] or f"http_{r[2]}"
            errors[key] = errors.get(key, 0) + 1
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "error_kinds": errors,
        "throughput_rps": round(len(ok) / duration, 1) if duration else 0.0,
        "latency_ms": dist([(r[1] - r[0]) * 1000 for r in ok]),
        "per_second_rps": dist(per_second(ok)),
    }


def per_second(records: list[Record]) -> list[float]:
    """Successful responses in each whole second of the run (partial first and last seconds left out):
    how steady the throughput was, which on a shared machine says how much to trust one average."""
    if not records:
        return []
    start = min(r[1] for r in records)
    counts: dict[int, int] = {}
    for r in records:
        second = int(r[1] - start)
        counts[second] = counts.get(second, 0) + 1
    last = max(counts)
    return [float(counts.get(i, 0)) for i in range(1, last)]


async def start_process(
    url: str, *, duration: float, concurrency: int, out: str
) -> asyncio.subprocess.Process:
    """The load generator as a child process (its own CPU); returns once its connections are open."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen", url, "--duration", str(duration),
        "--concurrency", str(concurrency), "--out", out, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    except TimeoutError:
        line = b""
    if line.strip() != b"started":
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"load generator failed to start (exit {proc.returncode})")
    return proc


async def finish_process(proc: asyncio.subprocess.Process, out: str, timeout: float) -> list[Record]:
    try:
        await asyncio.wait_for(proc.wait(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"load generator exited with {proc.returncode}")
    with open(out, "rb") as f:
        records: list[Record] = orjson.loads(f.read())
    return records


async def _main(args: argparse.Namespace) -> None:
    started = asyncio.Event()

    async def announce() -> None:
        await started.wait()
        print("started", flush=True)

    announcer = asyncio.create_task(announce())
    records = await drive(
        args.url,
        duration=args.duration,
        concurrency=args.concurrency,
        body=args.body.encode(),
        started=started,
        parse=not args.no_parse,
    )
    await announcer
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(records))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--body", default=DEFAULT_BODY.decode())
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--no-parse",
        action="store_true",
        help="do not read answers as JSON: the version from X-Flowfleet-Version, no generation",
    )
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
