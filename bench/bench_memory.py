"""Memory: a replica's resident set size at start and after 1,000 reloads (growth must be bounded).

    python -m bench.bench_memory [--reloads 1000] [--settle-s 75] [--quick]

One real `flowfleet worker` process. Every reload is a distinct version (a 20-node chain whose templates
carry the reload's number), activated with the store's activation script, and the next one waits until
the replica's status shows the swap, so each is a real fetch + verify + compile + swap and any cache keyed
by version would show. Two batches of `--reloads`, with `--settle-s` idle between them (longer than the
time a replica keeps a retired version for runs that may still use it). RSS (VmRSS from /proc) is sampled
at start, five times per batch and after the idle period, each time after serving a run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.bench_engine import chain
from bench.harness import FLOW, Fleet
from bench.report import load
from bench.script import bench_args, header, save, start_results
from cluster.flow.hashing import content_address

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


async def measure(batch: int, settle_s: float) -> dict[str, Any]:
    async with Fleet(1, control=False) as fleet:
        store, worker = fleet.store, fleet.workers[0]
        run_url = f"{worker.url}/v1/flows/{FLOW}/run"

        async def activate(i: int) -> None:
            data, digest = content_address(version_doc(i))
            await store.publish(FLOW, data, digest, author="bench", message="", node_count=NODES)
            release = await store.activate(FLOW, digest, by="bench", reason="memory")
            await fleet.wait_swapped(release.generation, timeout=60, poll_s=0.002)

        async def sample(done: int, note: str = "") -> dict[str, Any]:
            r = await fleet.http.post(run_url, json={"inputs": {"question": "q"}})
            assert r.status_code == 200, r.text
            row = {"reloads": done, "rss_kib": rss_kib(worker.pid), "note": note}
            print(
                f"after {done} reloads{note and ' ' + note}: RSS {row['rss_kib'] / 1024:.1f} MiB", flush=True
            )
            return row

        async def reload_batch(first: int) -> None:
            step = max(1, batch // 5)
            for i in range(first, first + batch):
                await activate(i)
                if (i - first + 1) % step == 0:
                    samples.append(await sample(i))

        await activate(0)
        samples = [await sample(0)]
        await reload_batch(1)
        after_first = samples[-1]["rss_kib"]
        await asyncio.sleep(settle_s)  # idle: versions retired during the batch are released
        samples.append(await sample(batch, f"and {settle_s:.0f} s idle"))
        after_settle = samples[-1]["rss_kib"]
        await reload_batch(batch + 1)
        metrics = (await fleet.http.get(f"{worker.url}/metrics")).text
    start, end = samples[0]["rss_kib"], samples[-1]["rss_kib"]
    loaded = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("flowfleet_workflow_reload_total{") and 'result="loaded"' in line
    )
    return {
        "nodes_per_version": NODES,
        "batch": batch,
        "reloads": 2 * batch,
        "settle_s": settle_s,
        "reloads_counted_by_replica": int(loaded),
        "samples": samples,
        "start_kib": start,
        "after_first_batch_kib": after_first,
        "after_settle_kib": after_settle,
        "end_kib": end,
        "growth_kib": end - start,
        "second_batch_growth_kib": end - after_first,
    }


def _markdown(results: dict[str, Any]) -> str:
    r = results["run"]
    mib = 1024
    series = ", ".join(
        f"{s['reloads']}{' ' + s['note'] if s.get('note') else ''}: {s['rss_kib'] / mib:.1f}"
        for s in r["samples"]
    )
    return "\n".join(
        [
            "## Memory over reloads",
            "",
            header(results),
            "",
            f"One `flowfleet worker` process (production settings); two batches of {r['batch']} reloads, "
            f"each a distinct version of a {r['nodes_per_version']}-node chain (the replica's own "
            f"`flowfleet_workflow_reload_total` counted {r['reloads_counted_by_replica']} loads), each "
            f"waited for before the next, with {r['settle_s']:.0f} s idle between the batches. RSS from "
            "/proc/<pid>/status. A replica keeps the versions it swapped out in its cache of versions (at "
            "most 64 unserved ones, for pinned sessions and quick rollbacks), and an evicted version is "
            "released only `FLOWFLEET_RUN_TIMEOUT_S` + 5 s (65 s by default) later, when no run can still "
            "be using it; a burst of reloads therefore holds every version of the last 65 s. Bounded "
            "growth shows as the second batch ending where the first did.",
            "",
            "| RSS at start | after the first batch | after the idle period | after the second batch "
            "| growth over the second batch |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| {r['start_kib'] / mib:.1f} MiB | {r['after_first_batch_kib'] / mib:.1f} MiB "
            f"| {r['after_settle_kib'] / mib:.1f} MiB | {r['end_kib'] / mib:.1f} MiB "
            f"| {r['second_batch_growth_kib'] / mib:+.1f} MiB |",
            "",
            f"RSS in MiB by reloads done: {series}.",
        ]
    )


async def run(args: Any) -> dict[str, Any]:
    results = start_results(COMMAND, args)
    if args.quick:
        results["run"] = await measure(5, 0.5)
    else:
        results["run"] = await measure(args.reloads, args.settle_s)
    results["load_after"] = load()
    return results


def main(argv: list[str] | None = None) -> None:
    args = bench_args(
        argv,
        __doc__,
        reloads={"type": int, "default": 1000, "help": "reloads per batch"},
        settle_s={"type": float, "default": 75.0, "help": "idle seconds between the batches"},
    )
    results = asyncio.run(run(args))
    save("memory", results, _markdown(results), args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
