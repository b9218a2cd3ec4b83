"""The streaming benchmark's model: an OpenAI-compatible upstream, in a process of its own.

    python -m bench.stream_upstream --port 8123 --tokens 200 --pace-ms 20

POST /v1/chat/completions answers `tokens` chat.completion.chunk events, one every `pace-ms`
milliseconds (the first one too: the model "thinks" for one pace), then `data: [DONE]`. Each event is
its own write, as OpenAI sends them. It runs in its own process so that neither the benchmark's client
nor the replica shares an event loop (or a core's time slice) with the model it measures against.

Idle keep-alive connections are kept for KEEPALIVE_S, as a hosted API's front end keeps them: the
benchmark measures whether the replica reuses its upstream connections, not this server's timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
KEEPALIVE_S = 120


def chunk(text: str) -> bytes:
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def upstream(tokens: int, pace_s: float) -> Starlette:
    events = [chunk(f"t{i} ") for i in range(tokens)]

    async def completions(request: Request) -> StreamingResponse:
        await request.body()

        async def paced() -> Any:
            # Paced against the clock, not sleep after sleep: the rate stays `pace_s` whatever a write costs.
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, event in enumerate(events, 1):
                await asyncio.sleep(max(0.0, start + i * pace_s - loop.time()))
                yield event
            yield b"data: [DONE]\n\n"

        return StreamingResponse(paced(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def serve(port: int, tokens: int, pace_s: float) -> None:
    import uvicorn

    config = uvicorn.Config(
        upstream(tokens, pace_s),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=KEEPALIVE_S,
        backlog=2048,
    )
    uvicorn.Server(config).run()


class UpstreamProcess:
    """`python -m bench.stream_upstream` as a child process on a free loopback port."""

    def __init__(self, port: int, tokens: int, pace_s: float) -> None:
        self.port, self.tokens, self.pace_s = port, tokens, pace_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> UpstreamProcess:
        args = [sys.executable, "-m", "bench.stream_upstream", "--port", str(self.port)]
        args += ["--tokens", str(self.tokens), "--pace-ms", str(self.pace_s * 1000)]
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path}
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the benchmark upstream did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    serve(args.port, args.tokens, args.pace_ms / 1000)


if __name__ == "__main__":
    main(sys.argv[1:])
