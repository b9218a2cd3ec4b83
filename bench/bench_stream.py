"""Streaming: time to first token and token rate through a replica, next to the same upstream called directly.

Three processes, none sharing an event loop: a local OpenAI-compatible upstream (bench/stream_upstream.py)
streams 200 tokens paced at 20 ms each; a replica (a real worker process) runs a one-LLM flow on it with
`"stream": true`; this process is only the client. Every path is read by the same client code, each
client over its own warmed keep-alive connection to each: time to first token (TTFT) is from sending
the request to the arrival of the bytes of the first token (a `data:` chunk direct, an `event: token`
through the replica); the token rate is tokens / (last token - first token) per stream.

Three loads, the paths taking turns (direct, replica, and the baseline replica if any):
- 1 stream: one stream at a time;
- 32 streams (steady): 32 clients, started 1/32 of a stream apart, each streaming back to back, so every
  measured request starts while 31 others stream (each client's first stream, the ramp, is not counted);
- 32 streams (burst): 32 requests sent at the same instant, what a thundering herd sees.

    python -m bench.bench_stream [--quick] [--baseline DIR [--baseline-name NAME]]

`--baseline DIR` adds a second replica running the code in DIR (say `git worktree add /tmp/base HEAD`):
before / after in one run, the paths taking turns, so a shared machine's load hits both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.harness import Fleet
from bench.report import load
from bench.script import bench_args, header, save, start_results
from bench.stream_upstream import UpstreamProcess
from cluster.flow.hashing import content_address
from tests.e2e import fleet as fleet_module
from tests.e2e.fleet import wait_all_serve, wait_ready
from tests.redis_server import free_port

COMMAND = "python -m bench.bench_stream"
FLOW = "stream_bench"
JSON = {"content-type": "application/json"}
TARGET_ADDED_MS = 2.0
TARGET_RATE = 0.95


@dataclass(frozen=True)
class Target:
    """One way to the tokens: a POST and the line prefix that marks a token event in its answer."""

    name: str
    host: str
    port: int
    path: str
    body: bytes
    marker: bytes

    @property
    def request(self) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


Sample = tuple[float, float]  # (TTFT seconds, tokens per second)


class Connection:
    """One keep-alive HTTP/1.1 connection and the client code both paths are read with.

    Deliberately small (asyncio streams, chunked decoding, no pool): a general client's per-request cost
    (httpx's pool scans every connection it holds, each time) would be timed on both paths and, with
    32 streams sent at once, queue them in this process rather than in the servers measured.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _send(self) -> tuple[float, bytes, asyncio.StreamReader]:
        """Send the request on a live connection: (when it was sent, the answer's head, the reader).

        A connection the server closed while idle (its keep-alive timeout) is replaced first, and once
        more if it closed just as the request went out; the clock starts at the request that is answered.
        """
        for attempt in (1, 2):
            if self.reader is None or self.writer is None or self.reader.at_eof() or self.writer.is_closing():
                self.close()
                self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)
            reader, writer = self.reader, self.writer
            started = time.perf_counter()
            writer.write(self.target.request)
            try:
                return started, await reader.readuntil(b"\r\n\r\n"), reader
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def stream(self, tokens: int) -> Sample:
        """One streamed request: (seconds from sending it to the first token's bytes, tokens/s)."""
        target = self.target
        started, head, reader = await self._send()
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"{target.name}: {head[:200]!r}")
        if b"transfer-encoding: chunked" not in head.lower():
            raise RuntimeError(f"{target.name}: the answer is not chunked: {head[:300]!r}")
        first = last = 0.0
        count, tail = 0, b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            data = (await reader.readexactly(size + 2))[:-2]
            now = time.perf_counter()
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            found = sum(1 for line in lines if line.startswith(target.marker))
            if found:
                first = first or now
                last = now
                count += found
        await reader.readuntil(b"\r\n")  # the empty trailer
        if b"connection: close" in head.lower():
            self.close()
        if count != tokens:
            raise RuntimeError(f"{target.name}: {count} tokens, expected {tokens}")
        return first - started, (count - 1) / (last - first)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Share of one core each process used while each path was timed."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.totals: dict[str, dict[str, float]] = {}
        self.walls: dict[str, float] = {}

    async def measure(self, path: str, work: Awaitable[Any]) -> Any:
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        started = time.perf_counter()
        result = await work
        self.walls[path] = self.walls.get(path, 0.0) + time.perf_counter() - started
        totals = self.totals.setdefault(path, dict.fromkeys(self.pids, 0.0))
        for name, pid in self.pids.items():
            totals[name] += cpu_seconds(pid) - before[name]
        return result

    def shares(self, path: str) -> dict[str, float]:
        wall = self.walls.get(path)
        if not wall:
            return {}
        return {name: round(100 * used / wall, 1) for name, used in self.totals[path].items()}


Runner = Callable[[Target], Awaitable[list[Sample]]]


class Clients:
    """n clients, each with its own keep-alive connection to each target (opened on first use, before
    any clock starts; `alternate` warms them all)."""

    def __init__(self, n: int, tokens: int) -> None:
        self.n, self.tokens = n, tokens
        self.connections: dict[Target, list[Connection]] = {}

    def stream(self, k: int, target: Target) -> Awaitable[Sample]:
        if target not in self.connections:
            self.connections[target] = [Connection(target) for _ in range(self.n)]
        return self.connections[target][k].stream(self.tokens)

    def close(self) -> None:
        for connections in self.connections.values():
            for connection in connections:
                connection.close()


def one_at_a_time(clients: Clients) -> Runner:
    async def run(target: Target) -> list[Sample]:
        return [await clients.stream(0, target)]

    return run


def steady(clients: Clients, streams_each: int, period_s: float) -> Runner:
    """n clients started period/n apart, each streaming `streams_each` + 1 times back to back; the first
    stream of each (the ramp up, under less than n streams) is dropped."""
    n = clients.n

    async def client(k: int, target: Target) -> list[Sample]:
        await asyncio.sleep(k * period_s / n)
        samples = [await clients.stream(k, target) for _ in range(streams_each + 1)]
        return samples[1:]

    async def run(target: Target) -> list[Sample]:
        per_client = await asyncio.gather(*(client(k, target) for k in range(n)))
        return [sample for samples in per_client for sample in samples]

    return run


def burst(clients: Clients) -> Runner:
    async def run(target: Target) -> list[Sample]:
        return list(await asyncio.gather(*(clients.stream(k, target) for k in range(clients.n))))

    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[Sample]) -> dict[str, float]:
    ttfts = [s[0] * 1000 for s in samples]
    return {
        "samples": len(samples),
        "ttft_ms_p50": round(statistics.median(ttfts), 2),
        "ttft_ms_p90": round(percentile(ttfts, 0.9), 2),
        "tokens_per_s_mean": round(statistics.fmean(s[1] for s in samples), 2),
    }


def versus(path: dict[str, float], direct: dict[str, float]) -> dict[str, float]:
    """What a path through a replica adds to the direct one."""
    return {
        "ttft_added_ms_p50": round(path["ttft_ms_p50"] - direct["ttft_ms_p50"], 2),
        "ttft_added_ms_p90": round(path["ttft_ms_p90"] - direct["ttft_ms_p90"], 2),
        "rate_ratio": round(path["tokens_per_s_mean"] / direct["tokens_per_s_mean"], 3),
    }


async def alternate(runner: Runner, targets: list[Target], repeats: int, cpu: CpuMeter) -> dict[str, Any]:
    """Warm every path with one untimed run each, then `repeats` runs of each, the paths taking turns (in
    an order that rotates, so no path always follows the same one)."""
    for target in targets:
        await runner(target)
    pooled: dict[str, list[Sample]] = {target.name: [] for target in targets}
    for i in range(repeats):
        for target in targets[i % len(targets) :] + targets[: i % len(targets)]:
            pooled[target.name] += await cpu.measure(target.name, runner(target))
    row: dict[str, Any] = {
        name: summary(samples) | {"cpu_percent": cpu.shares(name)} for name, samples in pooled.items()
    }
    row |= versus(row["replica"], row["direct"])
    if "baseline" in row:
        row |= {f"baseline_{key}": value for key, value in versus(row["baseline"], row["direct"]).items()}
    return row


@dataclass(frozen=True)
class Plan:
    tokens: int
    pace_s: float
    streams: int  # the concurrent load
    single_rounds: int  # one-at-a-time streams per path
    steady_repeats: int  # steady phases per path
    steady_each: int  # counted streams per client and steady phase
    burst_rounds: int


@contextlib.contextmanager
def code_root(root: Path) -> Iterator[None]:
    """Replicas started in this block run the code in `root` (tests/e2e/fleet.py puts its ROOT first on
    a worker's PYTHONPATH and runs it there)."""
    saved = fleet_module.ROOT
    fleet_module.ROOT = root
    try:
        yield
    finally:
        fleet_module.ROOT = saved


async def measure(plan: Plan, baseline: Path | None = None) -> dict[str, Any]:
    upstream = await asyncio.to_thread(UpstreamProcess(free_port(), plan.tokens, plan.pace_s).start)
    try:
        env = {"FLOWFLEET_EGRESS_ALLOW": "127.0.0.1", "FLOWFLEET_MAX_CONCURRENT_RUNS": "256"}
        async with Fleet(1, env=env, control=False) as fleet:
            llm = {"provider": "openai", "model": "m", "base_url": f"{upstream.url}/v1", "api_key_env": None}
            doc = {"name": FLOW, "nodes": [{"id": "llm", "type": "LLM", "params": llm}], "edges": []}
            data, digest = content_address(doc)
            await fleet.store.publish(FLOW, data, digest, author="bench", message="stream", node_count=1)
            await fleet.store.activate(FLOW, digest, by="bench", reason="stream")
            replicas = {"replica": fleet.workers[0]}
            if baseline is not None:
                with code_root(baseline):
                    replicas["baseline"] = fleet.add_worker("baseline")
            async with httpx.AsyncClient(timeout=30) as http:
                await wait_ready(http, list(replicas.values()), timeout=60)
                await wait_all_serve(http, list(replicas.values()), FLOW, digest)
            assert upstream.proc is not None
            chat = orjson.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "go"}], "stream": True}
            )
            run = orjson.dumps({"inputs": {"prompt": "go"}, "stream": True})
            run_path = f"/v1/flows/{FLOW}/run"
            targets = [Target("direct", "127.0.0.1", upstream.port, "/v1/chat/completions", chat, b"data: {")]
            for name, worker in replicas.items():
                targets.append(Target(name, "127.0.0.1", worker.port, run_path, run, b"event: token"))
            period = plan.tokens * plan.pace_s
            n = plan.streams
            single, many = Clients(1, plan.tokens), Clients(n, plan.tokens)
            loads: list[tuple[str, Runner, int]] = [
                ("1", one_at_a_time(single), plan.single_rounds),
                (f"{n} steady", steady(many, plan.steady_each, period), plan.steady_repeats),
                (f"{n} burst", burst(many), plan.burst_rounds),
            ]
            pids = {"client": os.getpid(), "upstream": upstream.proc.pid}
            pids |= {name: worker.pid for name, worker in replicas.items()}
            rows = []
            try:
                for name, runner, repeats in loads:
                    rows.append(
                        {"streams": name, **await alternate(runner, targets, repeats, CpuMeter(pids))}
                    )
            finally:
                single.close()
                many.close()
            return {"rows": rows}
    finally:
        await asyncio.to_thread(upstream.stop)


def markdown(results: dict[str, Any]) -> str:
    n = results["streams"]
    paths = ["direct", "replica", *(["baseline"] if results.get("baseline") else [])]
    lines = [
        "## Streaming: time to first token and token rate",
        "",
        header(results),
        "",
        f"Upstream: {results['tokens']} tokens paced at {results['pace_ms']} ms, in a process of its own "
        "(`bench/stream_upstream.py`); one replica (a worker process); the client in the benchmark's "
        "process, the same code for every path over warmed keep-alive connections, one per client and "
        "path. TTFT: from sending the request to the arrival of the first token's bytes. Loads: one "
        f"stream at a time; {n} streams steady (clients started 1/{n} of a stream apart, streaming back "
        f"to back: each request meets {n - 1} streams in flight); {n} streams sent at once (burst). The "
        "paths take turns.",
    ]
    if results.get("baseline"):
        lines += [
            "",
            f"`{results['baseline_name']}`: a second replica running the code in `{results['baseline']}`, "
            "measured in the same run.",
        ]
    lines += [
        "",
        "| streams | path | samples | TTFT p50 (ms) | TTFT p90 (ms) | added p50 (ms) | added p90 (ms) "
        "| tokens/s | rate ratio | CPU % client / replica / upstream |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in results["rows"]:
        for path in paths:
            p = row[path]
            cpu = p["cpu_percent"]
            prefix = "" if path == "replica" else f"{path}_"
            added = (
                ("—", "—", "—")
                if path == "direct"
                else (
                    row[f"{prefix}ttft_added_ms_p50"],
                    row[f"{prefix}ttft_added_ms_p90"],
                    row[f"{prefix}rate_ratio"],
                )
            )
            server = "—" if path == "direct" else cpu.get(path)
            shown = results["baseline_name"] if path == "baseline" else path
            lines.append(
                f"| {row['streams']} | {shown} | {p['samples']} | {p['ttft_ms_p50']} | {p['ttft_ms_p90']} "
                f"| {added[0]} | {added[1]} | {p['tokens_per_s_mean']} | {added[2]} "
                f"| {cpu.get('client')} / {server} / {cpu.get('upstream')} |"
            )
    lines += [
        "",
        f"Targets: at most {TARGET_ADDED_MS:g} ms added to the first token (p50) at 1 and {n} steady "
        f"streams; at least {TARGET_RATE} of the direct token rate. CPU %: of one core, while that path "
        f"was timed. In a burst the replica takes the {n} requests in turn while the model thinks, and "
        "their first tokens then leave within a millisecond or two of each other: burst percentiles move "
        "by whole rounds (the p90 is about the slowest round), and say more about the machine's load at "
        "that moment than p50s over single streams do.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    baseline_help = "also measure a replica running the code in DIR (e.g. a `git worktree` of another commit)"
    args = bench_args(
        argv,
        __doc__ or "",
        baseline={"type": Path, "default": None, "metavar": "DIR", "help": baseline_help},
        baseline_name={
            "default": "baseline",
            "metavar": "NAME",
            "help": "the baseline's name in the results",
        },
    )
    results = start_results(COMMAND, args)
    if args.quick:
        plan = Plan(20, 0.005, 4, single_rounds=2, steady_repeats=1, steady_each=1, burst_rounds=1)
    else:
        plan = Plan(200, 0.020, 32, single_rounds=20, steady_repeats=2, steady_each=3, burst_rounds=4)
    baseline = args.baseline.resolve() if args.baseline is not None else None
    if baseline is not None:
        results["command"] += f" --baseline {baseline} --baseline-name '{args.baseline_name}'"
    results |= {"tokens": plan.tokens, "pace_ms": plan.pace_s * 1000, "streams": plan.streams}
    results |= {"plan": plan.__dict__, "baseline": str(baseline) if baseline else None}
    results["baseline_name"] = args.baseline_name
    results |= asyncio.run(measure(plan, baseline))
    for row in results["rows"]:
        for prefix in ("", *(["baseline_"] if baseline else [])):
            path = prefix.rstrip("_") or "replica"
            shown = args.baseline_name if path == "baseline" else path
            print(
                f"{row['streams']} stream(s), {shown}: TTFT +{row[prefix + 'ttft_added_ms_p50']} ms p50 "
                f"({row['direct']['ttft_ms_p50']} -> {row[path]['ttft_ms_p50']}), "
                f"+{row[prefix + 'ttft_added_ms_p90']} ms p90, token rate x{row[prefix + 'rate_ratio']}, "
                f"cpu {row[path]['cpu_percent']}"
            )
    results["load_after"] = load()
    save("stream", results, markdown(results), args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
