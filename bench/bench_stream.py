"""Streaming: time to first token and token rate through a replica, next to the same upstream called directly.

A local OpenAI-compatible upstream streams 200 tokens paced at 20 ms each (SSE chunks, as OpenAI sends
them). The direct client streams from it with httpx; the replica (a real worker process) runs a one-LLM
flow on it with `"stream": true`, and the client reads its `token` events. 1 and 32 concurrent streams,
the two paths alternating. Time to first token (TTFT) is from sending the request to the first token;
the token rate is tokens / (last token - first token) per stream.

    python -m bench.bench_stream [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from bench.harness import Fleet
from bench.report import load
from bench.script import bench_args, header, save, start_results
from cluster.flow.hashing import content_address
from tests.e2e.fleet import wait_all_serve
from tests.loopback import serve_app

COMMAND = "python -m bench.bench_stream"
FLOW = "stream_bench"


def chunk(text: str | None) -> bytes:
    delta = {"content": text} if text is not None else {}
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def upstream(tokens: int, pace_s: float) -> Starlette:
    async def completions(request: Request) -> StreamingResponse:
        await request.body()

        async def events() -> Any:
            for i in range(tokens):
                await asyncio.sleep(pace_s)  # the model's pace: what the upstream is for
                yield chunk(f"t{i} ")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


async def direct(http: httpx.AsyncClient, base: str) -> tuple[float, float]:
    body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "stream": True}
    started, first, last, count = time.perf_counter(), 0.0, 0.0, 0
    async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content"' in line:
                last = time.perf_counter()
                first = first or last
                count += 1
    return first - started, (count - 1) / (last - first)


async def replica(http: httpx.AsyncClient, url: str) -> tuple[float, float]:
    body = {"inputs": {"prompt": "go"}, "stream": True}
    started, first, last, count = time.perf_counter(), 0.0, 0.0, 0
    async with http.stream("POST", f"{url}/v1/flows/{FLOW}/run", json=body) as response:
        async for line in response.aiter_lines():
            if line == "event: token":
                last = time.perf_counter()
                first = first or last
                count += 1
    return first - started, (count - 1) / (last - first)


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "ttft_ms_p50": round(statistics.median(s[0] for s in samples) * 1000, 2),
        "tokens_per_s_mean": round(statistics.fmean(s[1] for s in samples), 2),
    }


async def measure(
    tokens: int, pace_s: float, concurrency: tuple[int, ...], rounds: int
) -> list[dict[str, Any]]:
    rows = []
    async with serve_app(upstream(tokens, pace_s), "bench upstream") as base:
        env = {"FLOWFLEET_EGRESS_ALLOW": "127.0.0.1", "FLOWFLEET_MAX_CONCURRENT_RUNS": "256"}
        async with Fleet(1, env=env, control=False) as fleet:
            llm = {"provider": "openai", "model": "m", "base_url": f"{base}/v1", "api_key_env": None}
            doc = {"name": FLOW, "nodes": [{"id": "llm", "type": "LLM", "params": llm}], "edges": []}
            data, digest = content_address(doc)
            await fleet.store.publish(FLOW, data, digest, author="bench", message="stream", node_count=1)
            await fleet.store.activate(FLOW, digest, by="bench", reason="stream")
            worker = fleet.workers[0]
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
            async with httpx.AsyncClient(timeout=120, limits=limits) as http:
                await wait_all_serve(http, [worker], FLOW, digest)
                for n in concurrency:
                    # Warm both paths first: connections (client to replica, replica to upstream) and caches.
                    await asyncio.gather(*(direct(http, base) for _ in range(n)))
                    await asyncio.gather(*(replica(http, worker.url) for _ in range(n)))
                    pooled: dict[str, list[tuple[float, float]]] = {"direct": [], "replica": []}
                    for _ in range(rounds):
                        pooled["direct"] += await asyncio.gather(*(direct(http, base) for _ in range(n)))
                        pooled["replica"] += await asyncio.gather(
                            *(replica(http, worker.url) for _ in range(n))
                        )
                    d, r = summary(pooled["direct"]), summary(pooled["replica"])
                    rows.append(
                        {
                            "streams": n,
                            "direct": d,
                            "replica": r,
                            "ttft_added_ms_p50": round(r["ttft_ms_p50"] - d["ttft_ms_p50"], 2),
                            "rate_ratio": round(r["tokens_per_s_mean"] / d["tokens_per_s_mean"], 3),
                        }
                    )
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "## Streaming: time to first token and token rate",
        "",
        header(results),
        "",
        f"Upstream: {results['tokens']} tokens paced at {results['pace_ms']} ms; one replica; "
        f"{results['rounds']} rounds per concurrency, the two paths alternating.",
        "",
        "| streams | TTFT p50 direct (ms) | TTFT p50 replica (ms) | added (ms) | tokens/s direct "
        "| tokens/s replica | rate ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        d, r = row["direct"], row["replica"]
        lines.append(
            f"| {row['streams']} | {d['ttft_ms_p50']} | {r['ttft_ms_p50']} | {row['ttft_added_ms_p50']} | "
            f"{d['tokens_per_s_mean']} | {r['tokens_per_s_mean']} | {row['rate_ratio']} |"
        )
    lines += [
        "",
        "Targets: at most 2 ms added to the first token (p50); at least 0.95 of the direct token rate.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__ or "")
    results = start_results(COMMAND, args)
    tokens, pace_s, rounds = (20, 0.005, 1) if args.quick else (200, 0.020, 3)
    results |= {"tokens": tokens, "pace_ms": pace_s * 1000, "rounds": rounds}
    results["rows"] = asyncio.run(measure(tokens, pace_s, (1, 32), rounds))
    for row in results["rows"]:
        print(
            f"{row['streams']} stream(s): TTFT +{row['ttft_added_ms_p50']} ms (p50), "
            f"token rate x{row['rate_ratio']}"
        )
    results["load_after"] = load()
    save("stream", results, markdown(results), args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
