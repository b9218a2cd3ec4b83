"""Memory: a replica's resident set size at start and after 1,000 reloads (growth must be bounded).

    python -m bench.bench_memory [--reloads 1000] [--quick]

One real `flowfleet worker` process. Every reload is a distinct version (a 20-node chain whose templates
carry the reload's number), activated with the store's activation script, and the next one waits until
the replica's status shows the swap, so each is a real fetch + verify + compile + swap and any cache keyed
by version would show. RSS (VmRSS from /proc) is sampled after the first load and every 10% of the run,
while the replica also serves a run after each sample.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.bench_engine import chain
from bench.harness import FLOW, Fleet, bench_args, header, save, start_results
from bench.report import load
from cluster.hashing import content_address

COMMAND = "python -m bench.bench_memory"
NODES = 20


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def version_doc(i: int) -> dict[str, Any]:
    doc = chain(NODES)
    doc["name"] = FLOW
    for node in doc["nodes"]:
        if node["type"] == "PromptTemplate":
            node["params"]["template"] = f"[reload {i}] " + node["params"]["template"]
    return doc


async def measure(reloads: int) -> dict[str, Any]:
    async with Fleet(1, control=False) as fleet:
        store, worker = fleet.store, fleet.workers[0]
        run_url = f"{worker.url}/v1/flows/{FLOW}/run"

        async def activate(i: int) -> None:
            data, digest = content_address(version_doc(i))
            await store.publish(FLOW, data, digest, author="bench", message="", node_count=NODES)
            release = await store.activate(FLOW, digest, by="bench", reason="memory")
            await fleet.wait_swapped(release.generation, timeout=60, poll_s=0.002)

        async def sample(done: int) -> dict[str, int]:
            r = await fleet.http.post(run_url, json={"inputs": {"question": "q"}})
            assert r.status_code == 200, r.text
            return {"reloads": done, "rss_kib": rss_kib(worker.pid)}

        await activate(0)
        samples = [await sample(0)]
        step = max(1, reloads // 10)
        for i in range(1, reloads + 1):
            await activate(i)
            if i % step == 0 or i == reloads:
                samples.append(await sample(i))
                print(f"after {i} reloads: RSS {samples[-1]['rss_kib'] / 1024:.1f} MiB", flush=True)
        metrics = (await fleet.http.get(f"{worker.url}/metrics")).text
    start, end = samples[0]["rss_kib"], samples[-1]["rss_kib"]
    half = next(s for s in samples if s["reloads"] >= reloads // 2)["rss_kib"]
    loaded = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("flowfleet_workflow_reload_total{") and 'result="loaded"' in line
    )
    return {
        "nodes_per_version": NODES,
        "reloads": reloads,
        "reloads_counted_by_replica": int(loaded),
        "samples": samples,
        "start_kib": start,
        "end_kib": end,
        "growth_kib": end - start,
        "growth_second_half_kib": end - half,
    }


def _markdown(results: dict[str, Any]) -> str:
    r = results["run"]
    mib = 1024
    series = ", ".join(f"{s['reloads']}: {s['rss_kib'] / mib:.1f}" for s in r["samples"])
    return "\n".join(
        [
            "## Memory over reloads",
            "",
            header(results),
            "",
            f"One `flowfleet worker` process; {r['reloads']} reloads, each a distinct version of a "
            f"{r['nodes_per_version']}-node chain (the replica's own `flowfleet_workflow_reload_total` "
            f"counted {r['reloads_counted_by_replica']} loads), each waited for before the next. RSS from "
            "/proc/<pid>/status.",
            "",
            "| RSS at start (after the first load) | after all reloads | growth "
            "| growth over the second half |",
            "| ---: | ---: | ---: | ---: |",
            f"| {r['start_kib'] / mib:.1f} MiB | {r['end_kib'] / mib:.1f} MiB "
            f"| {r['growth_kib'] / mib:+.1f} MiB | {r['growth_second_half_kib'] / mib:+.1f} MiB |",
            "",
            f"RSS in MiB by reloads done: {series}.",
        ]
    )


async def run(args: Any) -> dict[str, Any]:
    results = start_results(COMMAND, args)
    results["run"] = await measure(10 if args.quick else args.reloads)
    results["load_after"] = load()
    return results


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__, reloads={"type": int, "default": 1000})
    results = asyncio.run(run(args))
    save("memory", results, _markdown(results), args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
