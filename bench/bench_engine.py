"""Engine: validate, compile and total time by graph size and shape; per-run overhead; first compile.

    python -m bench.bench_engine          # writes bench/results/engine.json and its docs section

Graphs use the built-in components with distinct params per node (no two templates alike), and the
parsed-template cache is emptied before every timed sample, so no cache makes a large flow look cheaper
than it is:
- chain: ChatInput -> PromptTemplate -> LLM(echo) -> PromptTemplate -> ... (n nodes, n-1 edges)
- wide:  ChatInput -> n-2 PromptTemplates side by side -> one PromptTemplate joining them all
validate = `validate(document)`; compile = `compile_analysis` on the validated analysis (building the
components and the schedule, as `compile_flow` does after validating); total = `compile_flow(document)`.
Overhead: the 3-node flow PromptTemplate -> LLM(echo) -> ChatOutput run through the engine, against
awaiting the same three component instances one after another in one coroutine.
First compile: a fresh interpreter's first `compile_flow`, without and after `cluster.engine.warm_up()`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.engine_markdown import markdown
from bench.report import ROOT, about_markdown, load, machine, now, summary, write_results, write_section
from cluster.components.base import BuildContext, RunContext
from cluster.components.registry import default_registry
from cluster.engine import CompiledFlow, compile_analysis, compile_flow
from cluster.flow.hashing import content_address
from cluster.flow.templates import clear_cache
from cluster.flow.validation import check_and_analyse, validate

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


def timed(action: Callable[[Any], Any], repeat: int, setup: Callable[[], Any] = clear_cache) -> list[float]:
    """Milliseconds of `action(setup())` per sample; `setup` runs untimed before each one (by default it
    empties the parsed-template cache, so every sample parses its templates from scratch)."""
    samples = []
    for _ in range(repeat):
        prepared = setup()
        gc.collect()
        started = time.perf_counter()
        action(prepared)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def component_hooks(document: dict[str, Any]) -> None:
    """What the components themselves cost during a compile: check_params, ports and construction,
    once per node (the part of compile time the engine does not control)."""
    registry = default_registry()
    build = BuildContext(flow_name="bench")
    for node in document["nodes"]:
        cls = registry.get(node["type"])
        assert cls is not None
        params = node.get("params", {})
        cls.check_params(params, "")
        cls.ports(params)
        cls(node["id"], params, build)


def _validated(document: dict[str, Any]) -> Callable[[], Any]:
    def setup() -> Any:
        # As inside compile_flow: validation has just parsed (and cached) the flow's templates.
        clear_cache()
        return check_and_analyse(document)

    return setup


def _row(shape: str, document: dict[str, Any], repeat: int) -> dict[str, Any]:
    digest = content_address(document)[1]

    def validate_it(_: Any) -> Any:
        return validate(document)

    def compile_it(analysis: Any) -> Any:
        return compile_analysis(analysis, digest=digest)

    def total(_: Any) -> Any:
        return compile_flow(document)

    def hooks(_: Any) -> None:
        component_hooks(document)

    return {
        "shape": shape,
        "nodes": len(document["nodes"]),
        "edges": len(document["edges"]),
        "validate": summary(timed(validate_it, repeat)),
        "compile": summary(timed(compile_it, repeat, _validated(document))),
        "total": summary(timed(total, repeat)),
        "component_hooks": summary(timed(hooks, repeat)),
    }


def compile_times() -> list[dict[str, Any]]:
    rows = []
    for shape, build in (("chain", chain), ("wide", wide)):
        for n in SIZES:
            document = build(n)
            assert validate(document) == [], f"{shape}-{n} is not valid"
            rows.append(_row(shape, document, repeat=30 if n <= 100 else 20 if n <= 1000 else 10))
            best, median = rows[-1]["total"]["min_ms"], rows[-1]["total"]["median_ms"]
            print(f"{shape:5} {n:5} nodes: validate + compile {best:9.3f} ms best, {median:9.3f} ms median")
    return rows


# Run in a fresh interpreter: `warm` says whether to call warm_up() first; prints the times as JSON.
_FIRST_COMPILE = """
import json, sys, time
started = time.perf_counter()
from cluster.engine import compile_flow, warm_up
from bench.bench_engine import OVERHEAD_FLOW
imported = time.perf_counter()
if sys.argv[1] == "warm":
    warm_up()
warmed = time.perf_counter()
compile_flow(OVERHEAD_FLOW)
first = time.perf_counter()
compile_flow(OVERHEAD_FLOW)
second = time.perf_counter()
ms = lambda a, b: round((b - a) * 1000, 3)
print(json.dumps({"import_ms": ms(started, imported), "warm_up_ms": ms(imported, warmed),
                  "first_compile_ms": ms(warmed, first), "second_compile_ms": ms(first, second)}))
"""


def first_compile(runs: int = 7) -> dict[str, Any]:
    """The first compile of the 3-node flow in a fresh process, cold and after warm_up (median of runs)."""
    results: dict[str, Any] = {"runs": runs}
    for mode in ("cold", "warm"):
        samples = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", _FIRST_COMPILE, mode],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
            samples.append(json.loads(out))
        results[mode] = {key: round(statistics.median(s[key] for s in samples), 2) for key in samples[0]}
    return results


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


def main() -> None:
    results: dict[str, Any] = {"machine": machine(), "date": now(), "command": COMMAND, "load_before": load()}
    results["compile"] = compile_times()
    results["overhead"] = o = overhead()
    print(f"overhead: engine {o['engine_us_per_run']} µs/run, direct {o['direct_us_per_run']} µs/run")
    results["first_compile"] = f = first_compile()
    print(f"first compile: {f['cold']['first_compile_ms']} ms cold, {f['warm']['first_compile_ms']} ms warm")
    results["load_after"] = load()
    write_results("engine", results)
    write_section("about", about_markdown(results["machine"], results["date"], COMMAND), first=True)
    write_section("engine", markdown(results))
    print("wrote bench/results/engine.json and the engine section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
