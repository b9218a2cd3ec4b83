"""Engine benchmark: validate + compile time by graph size and shape, and per-run engine overhead.

    python -m bench.bench_engine          # writes bench/results/engine.json and its docs section

Graphs use the built-in components with distinct params per node (no two templates alike), so no cache
can make a large flow look cheaper than it is:
- chain: ChatInput -> PromptTemplate -> LLM(echo) -> PromptTemplate -> ... (n nodes, n-1 edges)
- wide:  ChatInput -> n-2 PromptTemplates side by side -> one PromptTemplate joining them all
Overhead: the 3-node flow PromptTemplate -> LLM(echo) -> ChatOutput run through the engine, against
awaiting the same three component instances one after another in one coroutine.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from bench.report import load, machine, now, summary, write_results, write_section
from cluster.components.base import RunContext
from cluster.engine import CompiledFlow, compile_flow
from cluster.validation import validate

SIZES = (10, 100, 1000, 5000)
COMMAND = "python -m bench.bench_engine"


def chain(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "n0", "type": "ChatInput", "params": {"name": "question"}}]
    for i in range(1, n):
        if i % 2:
            nodes.append(
                {"id": f"n{i}", "type": "PromptTemplate", "params": {"template": f"Step {i}: {{text}}"}}
            )
        else:
            nodes.append({"id": f"n{i}", "type": "LLM", "params": {"provider": "echo", "model": f"echo-{i}"}})
    edges: list[dict[str, Any]] = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(n - 1)]
    edges[0]["source_output"] = "message"
    return {"name": f"chain-{n}", "nodes": nodes, "edges": edges}


def wide(n: int) -> dict[str, Any]:
    branches = n - 2
    nodes: list[dict[str, Any]] = [{"id": "in", "type": "ChatInput", "params": {"name": "question"}}]
    edges: list[dict[str, Any]] = []
    for i in range(branches):
        nodes.append({"id": f"b{i}", "type": "PromptTemplate", "params": {"template": f"Angle {i}: {{q}}"}})
        edges.append({"source": "in", "target": f"b{i}", "source_output": "message"})
        edges.append({"source": f"b{i}", "target": "join", "target_input": f"v{i}"})
    join = " ".join(f"{{v{i}}}" for i in range(branches))
    nodes.append({"id": "join", "type": "PromptTemplate", "params": {"template": join}})
    return {"name": f"wide-{n}", "nodes": nodes, "edges": edges}


def timed(action: Callable[[], Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def compile_times() -> list[dict[str, Any]]:
    rows = []
    for shape, build in (("chain", chain), ("wide", wide)):
        for n in SIZES:
            document = build(n)
            assert validate(document) == [], f"{shape}-{n} is not valid"
            repeat = 30 if n <= 100 else 10 if n <= 1000 else 5
            rows.append(
                {
                    "shape": shape,
                    "nodes": n,
                    "edges": len(document["edges"]),
                    "validate": summary(timed(lambda d=document: validate(d), repeat)),
                    "compile": summary(timed(lambda d=document: compile_flow(d), repeat)),
                }
            )
            print(
                f"{shape:5} {n:5} nodes: compile {rows[-1]['compile']['median_ms']:9.3f} ms (median)",
                flush=True,
            )
    return rows


OVERHEAD_FLOW = {
    "name": "overhead",
    "nodes": [
        {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Summarise: {input}"}},
        {"id": "llm", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
        {"id": "out", "type": "ChatOutput", "params": {"name": "answer"}},
    ],
    "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "out"}],
}


async def _overhead(compiled: CompiledFlow, runs: int) -> dict[str, Any]:
    prompt, llm, out = (step.component for step in compiled.steps)
    inputs = {"input": "the quarterly report"}

    async def direct() -> Any:
        ctx = RunContext(inputs=inputs)
        text = (await prompt.run({"input": inputs["input"]}, ctx))["text"]
        reply = (await llm.run({"prompt": text}, ctx))["text"]
        return (await out.run({"message": reply}, ctx))["message"]

    expected = (await compiled.run(inputs)).outputs["answer"]
    assert await direct() == expected

    async def measure(call: Callable[[], Any]) -> float:
        gc.collect()
        started = time.perf_counter()
        for _ in range(runs):
            await call()
        return (time.perf_counter() - started) / runs * 1e6

    # Alternate the two, several rounds, and keep each one's best round: the machine is shared.
    engine_us, direct_us, traced_us = [], [], []
    for _ in range(5):
        engine_us.append(await measure(lambda: compiled.run(inputs)))
        direct_us.append(await measure(direct))
        traced_us.append(await measure(lambda: compiled.run(inputs, trace=True)))
    engine, plain, traced = min(engine_us), min(direct_us), min(traced_us)
    return {
        "runs_per_round": runs,
        "rounds": 5,
        "engine_us_per_run": round(engine, 2),
        "engine_with_trace_us_per_run": round(traced, 2),
        "direct_us_per_run": round(plain, 2),
        "overhead_us_per_run": round(engine - plain, 2),
        "ratio": round(engine / plain, 2),
    }


def overhead(runs: int = 5000) -> dict[str, Any]:
    return asyncio.run(_overhead(compile_flow(OVERHEAD_FLOW), runs))


def _markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "## Engine: validate + compile, and per-run overhead",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores visible (shared with other work), Python {m['python']}, "
        f"{m['system']}. Date: {results['date']}. Command: `{results['command']}` (or `make bench`).",
        "",
        "Graphs of built-in components with distinct params per node: *chain* = ChatInput -> "
        "PromptTemplate -> LLM(echo) -> ... ; *wide* = ChatInput -> n-2 parallel PromptTemplates -> one "
        "joining PromptTemplate. Times in ms, median of repeated runs (min in brackets); compile includes "
        f"validation. Load average while measuring: {results['load_before']} before, "
        f"{results['load_after']} after (1/5/15 min).",
        "",
        "| shape | nodes | edges | validate ms | compile ms | compile µs/node |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["compile"]:
        v, c = row["validate"], row["compile"]
        per_node = c["median_ms"] * 1000 / row["nodes"]
        lines.append(
            f"| {row['shape']} | {row['nodes']} | {row['edges']} | {v['median_ms']:.2f} ({v['min_ms']:.2f}) "
            f"| {c['median_ms']:.2f} ({c['min_ms']:.2f}) | {per_node:.1f} |"
        )
    o = results["overhead"]
    lines += [
        "",
        "Per-run overhead of the 3-node flow PromptTemplate -> LLM(echo) -> ChatOutput, against awaiting "
        f"the same three component instances in one coroutine (best of {o['rounds']} rounds of "
        f"{o['runs_per_round']} runs):",
        "",
        "| engine µs/run | engine + trace µs/run | direct µs/run | overhead µs/run | ratio |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {o['engine_us_per_run']:.1f} | {o['engine_with_trace_us_per_run']:.1f} "
        f"| {o['direct_us_per_run']:.1f} | {o['overhead_us_per_run']:.1f} | {o['ratio']:.2f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    results: dict[str, Any] = {"machine": machine(), "date": now(), "command": COMMAND, "load_before": load()}
    results["compile"] = compile_times()
    results["overhead"] = o = overhead()
    results["load_after"] = load()
    print(f"overhead: engine {o['engine_us_per_run']} µs/run, direct {o['direct_us_per_run']} µs/run")
    write_results("engine", results)
    write_section("engine", _markdown(results))
    print("wrote bench/results/engine.json and the engine section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
