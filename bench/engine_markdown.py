"""The engine section of docs/benchmarks.md, from the results of `bench.bench_engine`."""

from __future__ import annotations

from typing import Any

# The previous engine against this one, measured back to back (same graphs, machine and method; best of
# runs, validate + compile), kept here because the section is rewritten on every run.
HISTORY = (
    "Against the previous version of the engine (measured back to back on 2026-11-26, best of runs): "
    "validate + compile of the 1,000-node chain went from 20.7 to 15.1 ms (validate alone 15.1 to 11.0 ms), "
    "of the 5,000-node chain from 137.9 to 93.2 ms, of the 1,000-node wide graph from 34.7 to 23.1 ms and "
    "of the 5,000-node wide graph from 245.7 to 148.1 ms. The gains come from parsing each template once "
    "(a bounded cache keyed by the template text, and a one-pass tokenizer), schema checks specialised "
    "per type, fewer allocations while binding edges and building the schedule, and pausing the cyclic "
    "garbage collector for the duration of a validation or compile (`cluster.gcpause`)."
)

# The per-run overhead before and after the run path was trimmed, measured in one session.
RUN_HISTORY = (
    "Per run, against the previous scheduler (measured in one session on 2026-11-26, same method): the "
    "3-node flow went from 9.7 to 5.5 µs/run (13.9 to 10.1 µs with a trace; the direct calls took 1.3 "
    "and 1.2 µs). A "
    "flow in which no two nodes can ever be ready at once (a chain, whatever a router skips) gets its "
    "run order at compile time and awaits its nodes one after another, without the ready queue, tasks "
    "or per-node bookkeeping; anything that fans out keeps the concurrent scheduler. A run's time "
    "budget is one loop timer that cancels the run's task (the semantics of `asyncio.timeout`, without "
    "its per-use objects), and gathering a node's inputs and checking its outputs allocate less."
)


def _ms(numbers: dict[str, Any]) -> str:
    return f"{numbers['min_ms']:.2f} / {numbers['median_ms']:.2f}"


def _compile_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| shape | nodes | edges | validate ms | compile ms | total ms | total µs/node | growth "
        "| component hooks ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    previous: dict[str, Any] | None = None
    for row in rows:
        total = row["total"]["min_ms"]
        growth = "–"
        if previous is not None and previous["shape"] == row["shape"]:
            nodes = row["nodes"] / previous["nodes"]
            growth = f"×{total / previous['total']['min_ms']:.1f} for ×{nodes:.0f} nodes"
        lines.append(
            f"| {row['shape']} | {row['nodes']} | {row['edges']} | {_ms(row['validate'])} "
            f"| {_ms(row['compile'])} | {_ms(row['total'])} | {total * 1000 / row['nodes']:.1f} | {growth} "
            f"| {row['component_hooks']['min_ms']:.2f} |"
        )
        previous = row
    return lines


def markdown(results: dict[str, Any]) -> str:
    o, first = results["overhead"], results["first_compile"]
    cold, warm = first["cold"], first["warm"]
    lines = [
        "## Engine: validate + compile, per-run overhead, first compile",
        "",
        f"Date: {results['date']}. Command: `{results['command']}` (or `make bench`). Load average while "
        f"measuring: {results['load_before']} before, {results['load_after']} after (1/5/15 min; the "
        "machine is shared).",
        "",
        "Graphs of built-in components with distinct params per node: *chain* = ChatInput -> "
        "PromptTemplate -> LLM(echo) -> ... ; *wide* = ChatInput -> n-2 parallel PromptTemplates -> one "
        "joining PromptTemplate. *validate* is `validate(document)`; *compile* is what `compile_flow` "
        "does after validating (build every component, precompute the schedule); *total* is "
        "`compile_flow(document)`, both together. Times in ms, best / median of repeated runs (the best "
        "is the closest to the code's own cost on a shared machine); the parsed-template cache is emptied "
        "before every run. *Growth* compares the best total with the previous size: near ×10 for ×10 "
        "nodes is linear. *Component hooks* is the components' own `check_params`, `ports` and "
        "constructor over the same nodes (best), the part of the time that belongs to the components.",
        "",
        *_compile_table(results["compile"]),
        "",
        "Per-run overhead of the 3-node flow PromptTemplate -> LLM(echo) -> ChatOutput, against awaiting "
        f"the same three component instances in one coroutine (best of {o['rounds']} rounds of "
        f"{o['runs_per_round']} runs):",
        "",
        "| engine µs/run | engine + trace µs/run | direct µs/run | overhead µs/run | ratio |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {o['engine_us_per_run']:.1f} | {o['engine_with_trace_us_per_run']:.1f} "
        f"| {o['direct_us_per_run']:.1f} | {o['overhead_us_per_run']:.1f} | {o['ratio']:.2f} |",
        "",
        "First compile of that flow in a fresh interpreter that has imported `cluster.engine` (median of "
        f"{first['runs']} processes). The first compile loads the component registry (the built-in "
        "component modules and plugins) and builds each used component's params validator; "
        "`cluster.engine.warm_up()` does this ahead of time for every registered component, so a worker "
        "can call it at startup:",
        "",
        "| | warm_up ms | first compile ms | second compile ms |",
        "| --- | ---: | ---: | ---: |",
        f"| cold | – | {cold['first_compile_ms']:.2f} | {cold['second_compile_ms']:.2f} |",
        f"| after warm_up() | {warm['warm_up_ms']:.2f} | {warm['first_compile_ms']:.2f} "
        f"| {warm['second_compile_ms']:.2f} |",
    ]
    if HISTORY:
        lines += ["", HISTORY]
    if RUN_HISTORY:
        lines += ["", RUN_HISTORY]
    return "\n".join(lines)
