"""Agent overhead: an agent run of 3 tool rounds against a local OpenAI-compatible server, per model round,
next to the bare HTTP round trip to the same server with the same request bodies.

The server (uvicorn on loopback, same process as the client) answers a chat request with one tool call
while the conversation has fewer than 3 tool results, then with the answer; the tool returns at once.
One agent run is therefore 4 model round trips and 3 tool calls. The bare client replays the 4 request
bodies of a real run with one pooled httpx client, exactly as the agent's provider sends them.
`added per round` = (agent run time - 4 bare round trips) / 4: what flowfleet adds to each round
(building messages, parsing the reply, validating arguments, calling the tool, trace off).

    python -m bench.bench_agent [--quick] [--runs N]
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.script import bench_args, header, save, start_results
from cluster.components.base import TOOL_PARAMS, Component, Ports, RunContext
from cluster.components.registry import Registry, builtin_components
from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime
from cluster.engine import compile_flow

TOOL_ROUNDS = 3
COMMAND = "python -m bench.bench_agent"


class Ping(Component):
    """A tool that answers at once, so the numbers are flowfleet's and the server's alone."""

    type_name = "BenchPing"
    description = "Answers pong."
    tool_mode = True
    params_schema = {"type": "object", "additionalProperties": False, "properties": {**TOOL_PARAMS}}

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(
            inputs=("q",), required=frozenset({"q"}), default_input="q", outputs=("a",), default_output="a"
        )

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        return {"a": "pong"}


def _reply(tool_results: int) -> bytes:
    if tool_results < TOOL_ROUNDS:
        call = {
            "id": f"c{tool_results}",
            "type": "function",
            "function": {"name": "ping", "arguments": '{"q": "x"}'},
        }
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
    else:
        message = {"role": "assistant", "content": "done"}
    return orjson.dumps({"choices": [{"index": 0, "message": message}], "usage": {"prompt_tokens": 10}})


async def completions(request: Request) -> Response:
    body = orjson.loads(await request.body())
    results = sum(1 for m in body["messages"] if m["role"] == "tool")
    return Response(_reply(results), media_type="application/json")


async def serve() -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    sock = socket.socket()
    # Accepted connections inherit it: without it a reply written in two parts waits for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def flow(base_url: str) -> dict[str, Any]:
    model = {"provider": "openai", "model": "bench", "base_url": base_url, "api_key_env": None, "retries": 0}
    return {
        "name": "bench-agent",
        "nodes": [
            {"id": "agent", "type": "Agent", "params": model},
            {"id": "ping", "type": "BenchPing", "params": {}},
        ],
        "edges": [{"source": "ping", "target": "agent", "target_input": "tools"}],
    }


async def recorded_bodies(base_url: str) -> list[bytes]:
    """The request bodies of one agent run, as the provider sends them (captured by a recording client)."""
    bodies: list[bytes] = []

    async def record(request: httpx.Request) -> None:
        bodies.append(request.content)

    runtime = Runtime(OutboundPolicy.build(egress_allow="127.0.0.1"))
    compiled = compile_flow(flow(base_url), registry=Registry([*builtin_components(), Ping]), runtime=runtime)
    agent = compiled.steps[0].component
    agent.provider._client.event_hooks["request"].append(record)  # type: ignore[attr-defined]
    await compiled.run({"input": "go"})
    await compiled.aclose()
    return bodies


async def measure(runs: int) -> dict[str, Any]:
    server, task, base_url = await serve()
    try:
        bodies = await recorded_bodies(base_url)
        assert len(bodies) == TOOL_ROUNDS + 1, len(bodies)
        runtime = Runtime(OutboundPolicy.build(egress_allow="127.0.0.1"))
        compiled = compile_flow(
            flow(base_url), registry=Registry([*builtin_components(), Ping]), runtime=runtime
        )
        bare_client = runtime.http_client(timeout=30)
        url = base_url + "/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        agent_s: list[float] = []
        bare_s: list[float] = []
        for _ in range(max(3, runs // 10)):  # warm both paths (connections, caches)
            await compiled.run({"input": "go"})
            for body in bodies:
                (await bare_client.post(url, content=body, headers=headers)).raise_for_status()
        for _ in range(runs):  # interleaved, so both see the same machine
            started = time.perf_counter()
            result = await compiled.run({"input": "go"})
            agent_s.append(time.perf_counter() - started)
            assert result.outputs == {"agent": "done"}
            started = time.perf_counter()
            for body in bodies:
                (await bare_client.post(url, content=body, headers=headers)).raise_for_status()
            bare_s.append(time.perf_counter() - started)
        await bare_client.aclose()
        await compiled.aclose()
    finally:
        server.should_exit = True
        await task
    rounds = TOOL_ROUNDS + 1
    agent_round = statistics.median(agent_s) / rounds * 1000
    bare_round = statistics.median(bare_s) / rounds * 1000
    return {
        "runs": runs,
        "model_rounds_per_run": rounds,
        "agent_ms_per_round_p50": round(agent_round, 3),
        "bare_ms_per_round_p50": round(bare_round, 3),
        "added_ms_per_round_p50": round(agent_round - bare_round, 3),
        "agent_ms_per_run_best": round(min(agent_s) * 1000, 3),
        "bare_ms_per_run_best": round(min(bare_s) * 1000, 3),
    }


def markdown(results: dict[str, Any]) -> str:
    r = results["agent"]
    return "\n".join(
        [
            "## Agent: flowfleet's time per model round",
            "",
            header(results),
            "",
            f"An agent run of {TOOL_ROUNDS} tool rounds ({r['model_rounds_per_run']} model round trips) "
            "against a local OpenAI-compatible server, next to the same request bodies sent by a bare "
            f"pooled httpx client; {r['runs']} runs each, interleaved, medians.",
            "",
            "| per model round | agent | bare HTTP | added by flowfleet |",
            "| --- | ---: | ---: | ---: |",
            f"| p50 (ms) | {r['agent_ms_per_round_p50']} | {r['bare_ms_per_round_p50']} | "
            f"{r['added_ms_per_round_p50']} |",
            "",
            "Target: at most 1 ms added per round.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = bench_args(
        argv, __doc__ or "", runs={"type": int, "default": 300, "help": "agent runs (default 300)"}
    )
    results = start_results(COMMAND, args)
    results["agent"] = r = asyncio.run(measure(20 if args.quick else args.runs))
    print(
        f"agent: {r['agent_ms_per_round_p50']} ms/round, bare {r['bare_ms_per_round_p50']} ms/round, "
        f"added {r['added_ms_per_round_p50']} ms/round"
    )
    from bench.report import load

    results["load_after"] = load()
    save("agent", results, markdown(results), args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
