"""Reload cost vs flow size: fetch + verify + compile of a version on a replica, for 10 ... 5,000 nodes.

    python -m bench.bench_reload [--quick]

Two measurements of the same documents (chains of built-in components with distinct params, as in the
engine benchmark), against a real redis-server:
- phases, in this process, with the replica's own code: `Store.get_blob` (fetch), `sha256_hex` (verify),
  and the replica's compiler (`worker.replica.engine_compiler`: parse with limits, validate, compile);
  baseline measured alongside: `orjson.loads` of the same bytes, the least any reader of the document pays;
- end to end on a real `flowfleet worker` process: the `duration_ms` its loader logs for each reload
  (lock, fetch, verify, compile — in a thread above 64 KiB — and swap), each reload a new version.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.bench_engine import chain
from bench.harness import FLOW, Fleet
from bench.report import load
from bench.script import bench_args, header, save, start_results
from bench.stats import dist, fmt
from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime
from cluster.flow.hashing import content_address, sha256_hex
from cluster.store.store import Store
from worker.replica import engine_compiler

COMMAND = "python -m bench.bench_reload"
SIZES = (10, 100, 1000, 5000)
RELOAD_LINE = re.compile(r"reload .*new_hash=(\w+) .*duration_ms=([\d.]+) result=loaded")


def sized_doc(nodes: int, variant: str) -> dict[str, Any]:
    doc = chain(nodes)
    doc["name"] = FLOW
    doc["nodes"][1]["params"]["template"] = f"[{variant}] " + doc["nodes"][1]["params"]["template"]
    return doc


async def timed(action: Callable[[], Awaitable[Any] | Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = action()
        if asyncio.iscoroutine(result):
            await result
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def phases(store: Store, nodes: int, repeat: int) -> dict[str, Any]:
    data, digest = content_address(sized_doc(nodes, "phases"))
    await store.publish(FLOW, data, digest, author="bench", message="", node_count=nodes)
    compiler = engine_compiler(Runtime(OutboundPolicy()))
    return {
        "bytes": len(data),
        "fetch_ms": dist(await timed(lambda: store.get_blob(FLOW, digest), repeat)),
        "verify_ms": dist(await timed(lambda: sha256_hex(data), repeat)),
        "compile_ms": dist(await timed(lambda: compiler(data), repeat)),
        "json_parse_baseline_ms": dist(await timed(lambda: orjson.loads(data), repeat)),
    }


async def on_replica(fleet: Fleet, nodes: int, reloads: int) -> dict[str, Any]:
    """Each reload a version the replica has never seen, so none comes from its cache of versions."""
    store = fleet.store
    digests = []
    for i in range(reloads):
        data, digest = content_address(sized_doc(nodes, f"replica-{i}"))
        await store.publish(FLOW, data, digest, author="bench", message="", node_count=nodes)
        release = await store.activate(FLOW, digest, by="bench", reason="reload cost")
        await fleet.wait_swapped(release.generation, timeout=120)
        digests.append(digest)
    durations = [
        float(m.group(2))
        for m in (RELOAD_LINE.search(line) for line in fleet.workers[0].log().splitlines())
        if m and m.group(1) in digests
    ]
    return {"reloads": len(digests), "logged_ms": dist(durations)}


async def measure(sizes: tuple[int, ...], quick: bool) -> list[dict[str, Any]]:
    rows = []
    async with Fleet(1, control=False) as fleet:
        for nodes in sizes:
            repeat = 3 if quick else 20 if nodes <= 100 else 10 if nodes <= 1000 else 6
            row: dict[str, Any] = {"nodes": nodes, **await phases(fleet.store, nodes, repeat)}
            row["replica"] = await on_replica(fleet, nodes, 2 if quick else repeat)
            rows.append(row)
            print(
                f"{nodes:5} nodes ({row['bytes']} bytes): fetch {row['fetch_ms']['p50']:.2f} verify "
                f"{row['verify_ms']['p50']:.2f} compile {row['compile_ms']['p50']:.2f} ms p50; on a "
                f"replica {row['replica']['logged_ms']['p50']:.2f} ms p50",
                flush=True,
            )
    return rows


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "## Reload cost vs flow size",
        "",
        header(results),
        "",
        "Chains of built-in components with distinct params (ChatInput -> PromptTemplate -> LLM(echo) "
        "-> ...). Phases run the replica's own code in the benchmark process against a real redis-server: "
        "fetch = `Store.get_blob` (one GET), verify = sha256 of the bytes, compile = the replica's compiler "
        "(parse with limits + validate + build components). Baseline: `orjson.loads` of the same bytes. "
        "*On a replica*: the `duration_ms` a real `flowfleet worker` logs per reload (fetch + verify + "
        "compile, in a thread above 64 KiB, + swap), each reload a version the replica has not seen before "
        "(so none comes from its cache of recent versions). Times in ms, p50 / p99.",
        "",
        "| nodes | bytes | fetch | verify | compile | fetch + verify + compile (p50) | JSON parse baseline "
        "| compile / parse (p50) | on a replica (reloads) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        f, v, c, b, r = (
            row["fetch_ms"],
            row["verify_ms"],
            row["compile_ms"],
            row["json_parse_baseline_ms"],
            row["replica"]["logged_ms"],
        )
        total = f["p50"] + v["p50"] + c["p50"]
        lines.append(
            f"| {row['nodes']} | {row['bytes']} | {fmt(f)} / {fmt(f, 'p99')} | {fmt(v)} / {fmt(v, 'p99')} "
            f"| {fmt(c)} / {fmt(c, 'p99')} | {total:.2f} | {fmt(b)} / {fmt(b, 'p99')} "
            f"| {c['p50'] / max(b['p50'], 1e-9):.0f}× | {fmt(r)} / {fmt(r, 'p99')} ({r['n']}) |"
        )
    return "\n".join(lines)


async def run(args: Any) -> dict[str, Any]:
    results = start_results(COMMAND, args)
    results["rows"] = await measure((10, 100) if args.quick else SIZES, args.quick)
    results["load_after"] = load()
    return results


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    results = asyncio.run(run(args))
    save("reload", results, _markdown(results), args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
