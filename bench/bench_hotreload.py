"""Zero-error hot reload under load: a load generator (its own process, keep-alive connections) drives runs
through the replicas' shared address (SO_REUSEPORT) while activations alternate between two versions.

    python -m bench.bench_hotreload [--duration 60] [--activations 100] [--concurrency 32] [--quick]

Checked: every response is a 2xx (every non-2xx and every transport failure counts as an error); every
response names one of the two versions; and no request sent after an activation had converged (every
replica's own swap timestamp passed) was answered by an older generation.
"""

from __future__ import annotations

import asyncio
import bisect
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import FLOW, Fleet, qa_doc
from bench.loadgen import Record, finish_process, is_error, per_second, start_process, summarise
from bench.report import load
from bench.script import bench_args, header, save, start_results
from bench.stats import dist, fmt

COMMAND = "python -m bench.bench_hotreload"


def check_versions(records: list[Record], activations: list[dict[str, Any]]) -> dict[str, Any]:
    """Responses vs activations: versions seen, and requests sent after a convergence that were answered
    by a generation older than the converged one (must be none)."""
    by_generation = {a["generation"]: a["hash"] for a in activations}
    converged_at = [a["converged_at"] for a in activations]  # increasing: activations are sequential
    seen: Counter[str] = Counter()
    stale, mismatched = [], 0
    for sent, _received, status, generation, version, replica, _error in records:
        if not 200 <= status < 300:
            continue
        seen[version] += 1
        if by_generation.get(generation, version) != version:
            mismatched += 1
        i = bisect.bisect_left(converged_at, sent) - 1  # the last activation converged before `sent`
        if i >= 0 and generation < activations[i]["generation"]:
            stale.append({"sent": sent, "generation": generation, "replica": replica})
    return {
        "versions_seen": dict(seen),
        "only_the_two_versions": set(seen) <= set(by_generation.values()),
        "stale_after_convergence": len(stale),
        "stale_examples": stale[:5],
        "version_generation_mismatches": mismatched,
    }


async def measure(
    replicas: int, duration: float, activations: int, concurrency: int, mode: str = "default"
) -> dict[str, Any]:
    async with Fleet(replicas, shared_port=True) as fleet:
        versions = [await fleet.publish(qa_doc("a")), await fleet.publish(qa_doc("b"))]
        first = await fleet.activate(versions[0], mode)
        swaps = await fleet.wait_swapped(first.generation)
        done = [{"generation": first.generation, "hash": first.hash, "converged_at": max(swaps.values())}]
        out = str(Path(tempfile.mkdtemp(prefix="flowfleet-load-")) / "records.json")
        url = f"{fleet.url}/v1/flows/{FLOW}/run"
        # Baseline: the same load on the same fleet with no activation, half just before and half just
        # after, so a change in the (shared) machine's load during the run weighs on both sides alike.
        quiet_s = max(0.5, duration / 8)

        async def quiet() -> list[Record]:
            proc = await start_process(url, duration=quiet_s, concurrency=concurrency, out=out)
            return await finish_process(proc, out, timeout=quiet_s + 120)

        quiet_records = await quiet()
        quiet_seconds = per_second([r for r in quiet_records if not is_error(r)])
        proc = await start_process(url, duration=duration, concurrency=concurrency, out=out)
        began = time.time()
        margin = min(2.0, duration * 0.1)
        interval = (duration - 2 * margin) / activations
        convergence_ms = []
        modes: Counter[str] = Counter()
        for i in range(activations):
            await asyncio.sleep(max(0.0, began + margin + i * interval - time.time()))  # pacing
            act = await fleet.activate(versions[(i + 1) % 2], mode)
            modes[act.mode] += 1
            swaps = await fleet.wait_swapped(act.generation)
            done.append({"generation": act.generation, "hash": act.hash, "converged_at": max(swaps.values())})
            convergence_ms.append((max(swaps.values()) - act.returned) * 1000)
        records = await finish_process(proc, out, timeout=duration + 120)
        after = await quiet()
        quiet_seconds += per_second([r for r in after if not is_error(r)])
        baseline = summarise(quiet_records + after, 2 * quiet_s)
        baseline["per_second_rps"] = dist(quiet_seconds)  # window by window, never across the gap
        shutil.rmtree(Path(out).parent, ignore_errors=True)
    result = {
        "replicas": replicas,
        "duration_s": duration,
        "concurrency": concurrency,
        "activations": activations,
        "mode_requested": mode,
        "modes_used": dict(modes),
        "versions": versions,
        "load": summarise(records, duration),
        "baseline_without_activations": baseline,
        "convergence_after_return_ms": dist(convergence_ms),
        "replicas_answering": sorted({r[5] for r in records if r[5]}),
    }
    result.update(check_versions(records, done))
    return result


def _markdown(results: dict[str, Any]) -> str:
    r = results["run"]
    load_ = r["load"]
    seen = ", ".join(f"`{v[:12]}` {n}" for v, n in sorted(r["versions_seen"].items()))
    modes = ", ".join(f"{m} ×{n}" for m, n in sorted(r.get("modes_used", {}).items())) or "one-phase"
    return "\n".join(
        [
            "## Zero-error hot reload under load",
            "",
            header(results),
            "",
            f"{r['replicas']} `flowfleet worker --reuse-port` replicas on one address; a load generator "
            f"(`bench/loadgen.py`, its own process, {r['concurrency']} keep-alive connections) sends runs of "
            f"the 3-node flow back to back for {r['duration_s']:.0f} s while {r['activations']} activations "
            f"through the control plane (cutover: {modes}) alternate between two versions, each waiting for "
            "the fleet to "
            "converge (every replica's own swap timestamp) before the next. Every non-2xx response and "
            "every transport failure counts as an error.",
            "",
            "| requests | errors | throughput (runs/s) | latency p50 / p99 ms | activations "
            "| converged after the call returned p50 / p99 ms | responses from an older generation after "
            "convergence | versions seen |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            f"| {load_['requests']} | {load_['errors']} | {load_['throughput_rps']:.0f} "
            f"| {fmt(load_['latency_ms'])} / {fmt(load_['latency_ms'], 'p99')} | {r['activations']} "
            f"| {fmt(r['convergence_after_return_ms'])} / {fmt(r['convergence_after_return_ms'], 'p99')} "
            f"| {r['stale_after_convergence']} | {seen} |",
            *_baseline_rows(r),
            "",
            f"Every response named one of the two versions: {'yes' if r['only_the_two_versions'] else 'NO'}; "
            f"replicas that answered: {', '.join(r['replicas_answering'])}.",
        ]
    )


def _baseline_rows(r: dict[str, Any]) -> list[str]:
    b = r.get("baseline_without_activations")
    if b is None:
        return []
    ratio = r["load"]["throughput_rps"] / max(b["throughput_rps"], 1e-9)
    return [
        "",
        "Baseline from the same run: same fleet, same load, no activation (half just before, half just "
        "after):",
        "",
        "| requests | errors | throughput (runs/s) | latency p50 / p99 ms "
        "| throughput with activations / without |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {b['requests']} | {b['errors']} | {b['throughput_rps']:.0f} "
        f"| {fmt(b['latency_ms'])} / {fmt(b['latency_ms'], 'p99')} | {ratio:.2f} |",
        "",
        "Runs per second, second by second (min / p50 / max): with activations "
        f"{_steadiness(r['load'])}; without {_steadiness(b)}. The machine is shared with other work, so "
        "compare the ratio above with this spread: a difference inside it is noise, not the activations.",
    ]


def _steadiness(summary: dict[str, Any]) -> str:
    d = summary.get("per_second_rps") or {}
    return "–" if not d.get("n") else f"{d['min']:.0f} / {d['p50']:.0f} / {d['max']:.0f}"


async def run(args: Any) -> dict[str, Any]:
    results = start_results(COMMAND, args)
    if args.quick:
        results["run"] = await measure(2, 3.0, 6, 4, args.mode)
    else:
        results["run"] = await measure(3, args.duration, args.activations, args.concurrency, args.mode)
    results["load_after"] = load()
    r = results["run"]
    print(
        f"{r['load']['requests']} requests, {r['load']['errors']} errors, {r['activations']} activations, "
        f"{r['stale_after_convergence']} stale after convergence, versions {r['versions_seen']}",
        flush=True,
    )
    return results


def main(argv: list[str] | None = None) -> None:
    args = bench_args(
        argv,
        __doc__,
        duration={"type": float, "default": 60.0},
        activations={"type": int, "default": 100},
        concurrency={"type": int, "default": 32},
        mode={
            "choices": ["default", "one-phase", "two-phase"],
            "default": "default",
            "help": "activation mode (default: whatever the control plane does by default)",
        },
    )
    results = asyncio.run(run(args))
    save("hotreload", results, _markdown(results), args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
