"""Request-path overhead: throughput and latency of `POST /v1/flows/{flow}/run` on one replica, against a
bare Starlette endpoint (bench/bare_app.py) doing the same three steps, same uvicorn settings, same run.

    python -m bench.bench_overhead [--duration 8] [--rounds 3] [--concurrency 1 32] [--quick]

One replica process and one baseline process, each on its own SO_REUSEPORT address; the load generator
is its own process (keep-alive connections, closed loop). The two targets alternate round by round so
drift in the machine's load hits both alike; each figure pools all rounds of one target.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import FLOW, Fleet, qa_doc
from bench.loadgen import Record, finish_process, is_error, per_second, start_process, summarise
from bench.report import load, stack, stack_line
from bench.script import bench_args, header, save, start_results
from bench.stats import dist, fmt
from tests.redis_server import free_port

COMMAND = "python -m bench.bench_overhead"


class BareServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> BareServer:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bare_app",
            "--port",
            str(self.port),
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    await self.__aexit__()
                    raise RuntimeError("the bare baseline server did not start")
                await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def load_once(url: str, duration: float, concurrency: int) -> list[Record]:
    out = str(Path(tempfile.mkdtemp(prefix="flowfleet-load-")) / "records.json")
    proc = await start_process(url, duration=duration, concurrency=concurrency, out=out)
    records = await finish_process(proc, out, timeout=duration + 60)
    shutil.rmtree(Path(out).parent, ignore_errors=True)
    return records


async def same_answer(flowfleet_url: str, bare_url: str) -> bool:
    async with httpx.AsyncClient() as client:
        body = {"inputs": {"input": "the quarterly report"}}
        a, b = [(await client.post(u, json=body)).json()["outputs"] for u in (flowfleet_url, bare_url)]
    return bool(a == b)


async def measure(duration: float, rounds: int, concurrencies: list[int]) -> dict[str, Any]:
    print(stack_line(), flush=True)  # both targets run on it: same environment, same uvicorn settings
    async with Fleet(1, shared_port=True) as fleet, BareServer() as bare:
        first = await fleet.activate(await fleet.publish(qa_doc("a")))
        await fleet.wait_swapped(first.generation)
        targets = {
            "flowfleet": f"{fleet.url}/v1/flows/{FLOW}/run",
            "bare": f"{bare.url}/v1/flows/{FLOW}/run",
        }
        assert await same_answer(targets["flowfleet"], targets["bare"]), "the two endpoints differ"
        for url in targets.values():
            await load_once(url, min(duration, 2.0), 4)  # warm-up, discarded
        runs = []
        for concurrency in concurrencies:
            pooled: dict[str, list[Record]] = {name: [] for name in targets}
            seconds: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(rounds):
                for name, url in targets.items():
                    records = await load_once(url, duration, concurrency)
                    pooled[name] += records
                    seconds[name] += per_second([r for r in records if not is_error(r)])
            row: dict[str, Any] = {"concurrency": concurrency, "rounds": rounds, "duration_s": duration}
            for name, records in pooled.items():
                row[name] = summarise(records, duration * rounds)
                row[name]["per_second_rps"] = dist(seconds[name])  # round by round, never across a gap
            f, b = row["flowfleet"], row["bare"]
            row["throughput_ratio"] = round(f["throughput_rps"] / max(b["throughput_rps"], 1e-9), 3)
            row["p50_ratio"] = round(f["latency_ms"]["p50"] / max(b["latency_ms"]["p50"], 1e-9), 3)
            row["p99_ratio"] = round(f["latency_ms"]["p99"] / max(b["latency_ms"]["p99"], 1e-9), 3)
            runs.append(row)
            print(
                f"concurrency {concurrency}: flowfleet {f['throughput_rps']:.0f} runs/s p50 "
                f"{f['latency_ms']['p50']:.2f} ms, bare {b['throughput_rps']:.0f} runs/s p50 "
                f"{b['latency_ms']['p50']:.2f} ms (throughput ratio {row['throughput_ratio']})",
                flush=True,
            )
        return {"runs": runs, "stack": stack()}


# The request path before and after it was trimmed, measured in one session (this benchmark, default
# settings), kept here because the section is rewritten on every run.
HISTORY = (
    "The table above: this tree on an AMD EPYC machine later on 2026-12-06, replica / bare 0.995 at 1 "
    "connection (3,820 against 3,840 runs/s) and 1.13 at 32 (7,314 against 6,454). Against the "
    "previous request path (`407db9a`), both on the fast stack and measured with this benchmark in "
    "one session on 2026-12-06 (Intel Xeon), one after the other on an idle machine (8 s x 3 rounds "
    "each): at 32 connections the replica went from 10,107 to 13,360 runs/s (bare 12,128 and 12,390), "
    "the throughput ratio from 0.83 to 1.08; at 1 connection from 1,955 to 2,349 runs/s (bare 1,986 "
    "and 2,196), the ratio from 0.98 to 1.07. (The machine ran every 1-connection round at about half "
    "its earlier speed that hour, both targets alike; the previous session measured the old path at "
    "0.89 at 1 connection and 0.82 at 32.) In process (the ASGI app called directly, no sockets, "
    "uvloop) a run went from 49.6 to 31.9 µs against 18.7 µs for the bare app: what flowfleet adds "
    "fell from 30.9 to 13.2 µs per run (-57%). Earlier trims: 0.84 to 0.89 and 0.73 to 0.82 "
    "(2026-12-05), 0.79 to 0.82 and 0.72 to 0.80 (2026-11-26)."
)

# Where a run's time goes, before and after (cProfile of the in-process loop above, 20,000 runs; the
# profiler's own cost inflates every figure about 2.5-fold, so read the shares, not the absolutes).
REQUEST_PATH = "\n".join(
    [
        "### Request path",
        "",
        "Profile of `POST /v1/flows/{flow}/run` in process (cProfile, 20,000 runs of the ASGI app, self "
        "time grouped by part, µs per run under the profiler), before (`407db9a`) and after, measured "
        "in one session:",
        "",
        "```text",
        "part                                         before   after",
        "Starlette (middleware, router, request)        13.4     2.8   no Request or Headers on the route",
        "replica request path (parse, admit, render)    47.9    34.5   headers in one pass, body direct",
        "engine (compiler.run, budget, scheduler)       26.9    20.6   one budget timer, inputs once",
        "metrics + run stats                             3.2     2.9",
        "components (the same work as the bare app)     14.4    12.7",
        "builtins and other                             25.9    15.8",
        "total                                         131.7    89.3",
        "unprofiled, µs per run                         51.5    31.7   (bare app: 18.7)",
        "",
        "top self time, before                 top self time, after",
        " 6.1% native.run_flow                  6.7% native.serve_run",
        " 4.1% scheduler._sequential            5.2% scheduler._sequential",
        " 3.8% echo._reply (component)          4.8% echo._reply (component)",
        " 3.6% native.parse_run                 3.7% app.ReplicaHeader.__call__",
        " 3.1% budget.within                    3.6% compiler.run",
        " 2.9% scheduler._inputs (3 per run)    3.6% llm.run (component)",
        " 2.9% compiler.run                     3.5% native.parse_run",
        " 2.8% llm.run (component)              3.3% runs.execute",
        " 2.8% http.read_body                   3.1% scheduler.gather",
        " 2.7% starlette Headers.__getitem__    2.3% http.read_json_body",
        "```",
        "",
        "What went: the run budget's loop timer per run (every budget of a loop now shares one timer, a "
        "heap by deadline: arming and cancelling a timer cost about 2.8 µs on uvloop), the second check "
        "of the inputs (`Run.prepare` checks them and the engine is told so), Starlette's `Request` and "
        "`Headers` on the run route (the three headers it needs are read in one pass over the ASGI list, "
        "a one-message JSON body is taken as it is, anything else still goes through the shared checks), "
        "the per-run `Served` record (made once per loaded version), a frame per run in the scheduler "
        "(inputs and the skip decision gathered in one pass), and frozen records per run. Before that: "
        "the router and its exception wrappers on the hot route, the lock per run-metric observation, "
        "the version headers encoded per response. What is left is mostly uvicorn's own work and the "
        "same component calls the bare app makes.",
    ]
)


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "## Request-path overhead",
        "",
        header(results),
        "",
        stack_line(results.get("stack") or results["machine"].get("stack")),
        "",
        "`POST /v1/flows/{flow}/run` of the 3-node flow PromptTemplate -> LLM(echo) -> ChatOutput on one "
        "`flowfleet worker --reuse-port` replica, against a bare Starlette endpoint (`bench/bare_app.py`) "
        "that awaits the same three component instances directly and answers the same JSON, served with "
        "the replica's own uvicorn settings, logging and socket. Load: `bench/loadgen.py` in its own "
        "process, keep-alive connections, closed loop; the targets alternate round by round. Errors count "
        "every non-2xx and transport failure. The bare endpoint is the baseline; a throughput ratio "
        "below 1 and latency ratios above 1 are flowfleet's cost. The machine is shared with other work: "
        "the second-by-second spread shows how much one average can move.",
        "",
        "| connections | target | requests | errors | runs/s | runs/s second by second (min / max) | p50 ms "
        "| p99 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratios = [
        "",
        "| connections | throughput flowfleet / bare | p50 flowfleet / bare | p99 flowfleet / bare |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in results["runs"]:
        for name in ("flowfleet", "bare"):
            s = row[name]
            lines.append(
                f"| {row['concurrency']} | {name} | {s['requests']} | {s['errors']} "
                f"| {s['throughput_rps']:.0f} | {_spread(s)} | {fmt(s['latency_ms'])} "
                f"| {fmt(s['latency_ms'], 'p99')} |"
            )
        ratios.append(
            f"| {row['concurrency']} | {row['throughput_ratio']:.2f} | {row['p50_ratio']:.2f} "
            f"| {row['p99_ratio']:.2f} |"
        )
    return "\n".join([*lines, *ratios, "", HISTORY, "", REQUEST_PATH])


def _spread(summary: dict[str, Any]) -> str:
    d = summary.get("per_second_rps") or {}
    return "–" if not d.get("n") else f"{d['min']:.0f} / {d['max']:.0f}"


async def run(args: Any) -> dict[str, Any]:
    results = start_results(COMMAND, args)
    if args.quick:
        results.update(await measure(1.0, 1, [2]))
    else:
        results.update(await measure(args.duration, args.rounds, args.concurrency))
    results["load_after"] = load()
    return results


def main(argv: list[str] | None = None) -> None:
    args = bench_args(
        argv,
        __doc__,
        duration={"type": float, "default": 8.0},
        rounds={"type": int, "default": 3},
        concurrency={"type": int, "nargs": "+", "default": [1, 32]},
    )
    results = asyncio.run(run(args))
    save("overhead", results, _markdown(results), args)


if __name__ == "__main__":
    main(sys.argv[1:])
