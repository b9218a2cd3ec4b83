"""Fleet scale: 100 and 200 lightweight replicas — the real `worker.replica.Replica` (subscriber, loader,
heartbeat, each with its own Redis connections), many in one process, without HTTP servers — and the time
until all of them serve a new version, next to a bare PUBLISH to as many subscribers in one process.

    python -m bench.bench_scale [--replicas 100 200] [--activations 20] [--quick]

All replicas share one event loop and one CPU, so every one of them fetches, verifies and compiles in
turn: the time until the last one swapped is an upper bound for a real fleet, where each replica has its
own CPU. Times come from each replica's own swap timestamp (`LoadedFlow.loaded_at`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from bench.floor import in_process_rounds
from bench.harness import FLOW, qa_doc
from bench.report import load
from bench.script import bench_args, header, save, start_results
from bench.stats import Round, fmt, rounds_summary
from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime
from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.redis_server import RedisServer
from worker.replica import Replica, engine_compiler


async def wait_all(replicas: list[Replica], generation: int, timeout: float = 120.0) -> list[float]:
    deadline = time.monotonic() + timeout
    while True:
        loaded = [r.state.snapshot.get(FLOW) for r in replicas]
        if all(x is not None and x.generation >= generation for x in loaded):
            return [x.loaded_at for x in loaded if x is not None]
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every replica reached generation {generation}")
        await asyncio.sleep(0.001)


async def measure(count: int, activations: int) -> dict[str, Any]:
    server = RedisServer().start()
    client = aioredis.Redis.from_url(server.url)
    namespace = f"ffscale-{uuid.uuid4().hex[:8]}"
    store = Store(client, Keys(namespace))
    replicas: list[Replica] = []
    try:
        digests = []
        for tag in ("a", "b"):
            data, digest = content_address(qa_doc(tag))
            await store.publish(FLOW, data, digest, author="bench", message="", node_count=3)
            digests.append(digest)
        first = await store.activate(FLOW, digests[0], by="bench", reason="scale")
        compiler = engine_compiler(Runtime(OutboundPolicy()))
        settings = Settings(redis_url=server.url, namespace=namespace)
        replicas = [
            Replica(dataclasses.replace(settings, replica_id=f"s{i}"), compiler=compiler)
            for i in range(count)
        ]
        for replica in replicas:
            await replica.start()
        await wait_all(replicas, first.generation)
        deadline = time.monotonic() + 120
        while not all(r.subscriber.connected.is_set() for r in replicas):
            assert time.monotonic() < deadline, "replicas did not all subscribe"
            await asyncio.sleep(0.01)
        rounds = []
        for i in range(activations):
            started = time.time()
            release = await store.activate(FLOW, digests[(i + 1) % 2], by="bench", reason="scale")
            returned = time.time()
            rounds.append(Round(started, returned, await wait_all(replicas, release.generation)))
            await asyncio.sleep(0.2)  # spacing: let the heartbeats after the swap go out
    finally:
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
        await client.aclose()
    try:
        floor = await in_process_rounds(server.url, f"{namespace}:floor", count, activations, pause_s=0.2)
    finally:
        server.stop()
    return {
        "replicas": count,
        "activations": activations,
        "swaps": rounds_summary(rounds),
        "floor": rounds_summary(floor),
    }


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "## Fleet scale",
        "",
        header(results),
        "",
        "N real `Replica` objects (subscriber, loader, heartbeat; own Redis connections each; no HTTP "
        "server) in one process and one event loop, activations with the store's activation script "
        "alternating two versions of the 3-node flow. *All swapped* = from the activation call being sent "
        "to the last replica's own swap timestamp. Floor: a bare PUBLISH to N redis-py subscribers in one "
        "process, until the last one read it. One CPU does every replica's fetch + verify + compile in "
        "turn here, so these are upper bounds for a fleet whose replicas have their own CPUs. ms, p50 / p99.",
        "",
        "| replicas | activations | all swapped | first to last swap | floor: all received | floor skew "
        "| all swapped / floor (p50) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in results["runs"]:
        s, f = run["swaps"], run["floor"]
        a, fa = s["last_after_start_ms"], f["last_after_start_ms"]
        lines.append(
            f"| {run['replicas']} | {run['activations']} | {fmt(a)} / {fmt(a, 'p99')} "
            f"| {fmt(s['skew_ms'])} / {fmt(s['skew_ms'], 'p99')} | {fmt(fa)} / {fmt(fa, 'p99')} "
            f"| {fmt(f['skew_ms'])} / {fmt(f['skew_ms'], 'p99')} | {a['p50'] / max(fa['p50'], 1e-9):.1f}× |"
        )
    return "\n".join(lines)


async def run(args: Any) -> dict[str, Any]:
    results = start_results("python -m bench.bench_scale", args)
    results["runs"] = []
    for count in [5] if args.quick else args.replicas:
        row = await measure(count, 2 if args.quick else args.activations)
        results["runs"].append(row)
        print(
            f"{count} replicas: all swapped {row['swaps']['last_after_start_ms']['p50']:.1f} ms p50 after "
            f"the call was sent; floor {row['floor']['last_after_start_ms']['p50']:.1f} ms",
            flush=True,
        )
    results["load_after"] = load()
    return results


def main(argv: list[str] | None = None) -> None:
    args = bench_args(
        argv,
        __doc__,
        replicas={"type": int, "nargs": "+", "default": [100, 200]},
        activations={"type": int, "default": 20},
    )
    results = asyncio.run(run(args))
    save("scale", results, _markdown(results), args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
