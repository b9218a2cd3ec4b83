"""The engine benchmark measures valid flows, and its report keeps other benchmarks' sections."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.bench_engine import OVERHEAD_FLOW, _overhead, _row, chain, first_compile, timed, wide
from bench.engine_markdown import markdown
from bench.report import about_markdown, machine, scripts, write_section
from cluster.engine import compile_flow
from cluster.flow.validation import validate


@pytest.mark.parametrize("build", [chain, wide])
@pytest.mark.parametrize("n", [3, 10, 101])
def test_benchmark_graphs_are_valid_and_sized(build, n) -> None:
    document = build(n)
    assert validate(document) == []
    assert len(document["nodes"]) == n


async def test_benchmark_graphs_run() -> None:
    result = await compile_flow(chain(5)).run({"question": "q"})
    assert result.outputs == {"n4": "[echo-4] Step 3: [echo-2] Step 1: q"}
    result = await compile_flow(wide(4)).run({"question": "q"})
    assert result.outputs == {"join": "Angle 0: q Angle 1: q"}


def test_overhead_measurement_compares_equal_work() -> None:
    numbers = asyncio.run(_overhead(compile_flow(OVERHEAD_FLOW), runs=10))
    assert numbers["engine_us_per_run"] > 0 and numbers["direct_us_per_run"] > 0
    # Both times are rounded to 0.01 µs, the ratio is computed before rounding.
    assert numbers["ratio"] == pytest.approx(
        numbers["engine_us_per_run"] / numbers["direct_us_per_run"], rel=0.02
    )


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_section("engine", "engine v1", doc)
    write_section("store", "store v1", doc)
    write_section("engine", "engine v2", doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    assert "engine v2" in text and "engine v1" not in text and "store v1" in text
    assert text.index("engine v2") < text.index("store v1")


def test_bench_runner_finds_modules_and_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert "bench_engine" in bench_main.modules()
    assert bench_main.run(["no_such_bench"]) == 2
    assert "unknown benchmark(s): no_such_bench" in capsys.readouterr().err


def test_write_section_can_put_a_new_section_first(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_section("engine", "engine v1", doc)
    write_section("about", "about v1", doc, first=True)
    write_section("about", "about v2", doc, first=True)
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    assert text.index("about v2") < text.index("engine v1") and "about v1" not in text


def test_timed_runs_setup_before_every_sample_and_hands_its_value_over() -> None:
    seen: list[int] = []
    counter = iter(range(100))
    samples = timed(seen.append, 3, setup=lambda: next(counter))
    assert seen == [0, 1, 2] and len(samples) == 3


def test_row_measures_validate_compile_and_total() -> None:
    row = _row("chain", chain(10), repeat=2)
    assert (row["shape"], row["nodes"], row["edges"]) == ("chain", 10, 9)
    for key in ("validate", "compile", "total", "component_hooks"):
        assert row[key]["runs"] == 2 and row[key]["min_ms"] <= row[key]["median_ms"]


def test_first_compile_runs_fresh_interpreters_cold_and_warmed_up() -> None:
    numbers = first_compile(runs=1)
    assert numbers["cold"]["warm_up_ms"] < numbers["warm"]["warm_up_ms"]  # cold never calls warm_up
    assert set(numbers["warm"]) == {"import_ms", "warm_up_ms", "first_compile_ms", "second_compile_ms"}


def test_markdown_has_every_table_and_the_machine_facts() -> None:
    summary = {"min_ms": 1.0, "median_ms": 2.0, "runs": 3}
    rows = [
        {"shape": "chain", "nodes": n, "edges": n - 1, "validate": summary, "compile": summary,
         "total": {**summary, "min_ms": n / 10}, "component_hooks": summary}
        for n in (10, 100)
    ]  # fmt: skip
    overhead = {
        "runs_per_round": 10, "rounds": 5, "engine_us_per_run": 9.0, "ratio": 4.5,
        "engine_with_trace_us_per_run": 12.0, "direct_us_per_run": 2.0, "overhead_us_per_run": 7.0,
    }  # fmt: skip
    run = {"import_ms": 1.0, "warm_up_ms": 0.0, "first_compile_ms": 40.0, "second_compile_ms": 0.3}
    results = {
        "date": "2026-01-01 00:00 UTC", "command": "python -m bench.bench_engine", "load_before": [1, 1, 1],
        "load_after": [1, 1, 1], "compile": rows, "overhead": overhead,
        "first_compile": {
            "runs": 1, "cold": run, "warm": {**run, "warm_up_ms": 30.0, "first_compile_ms": 1.0}
        },
    }  # fmt: skip
    text = markdown(results)
    assert (
        "| chain | 100 | 99 | 1.00 / 2.00 | 1.00 / 2.00 | 10.00 / 2.00 | 100.0 | ×10.0 for ×10 nodes |"
        in text
    )
    assert "| 9.0 | 12.0 | 2.0 | 7.0 | 4.50 |" in text
    assert "| after warm_up() | 30.00 | 1.00 | 0.30 |" in text
    about = about_markdown(machine(), "today", "make bench")
    assert "`make bench`" in about and "| `bench/bench_engine.py` |" in about
    assert "bench_engine" in scripts()
