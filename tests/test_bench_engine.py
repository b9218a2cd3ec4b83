"""The engine benchmark measures valid flows, and its report keeps other benchmarks' sections."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.bench_engine import OVERHEAD_FLOW, _overhead, chain, wide
from bench.report import write_section
from cluster.engine import compile_flow
from cluster.validation import validate


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
    # The ratio comes from the unrounded timings, so it may differ from the rounded ones' in the last digit.
    expected = numbers["engine_us_per_run"] / numbers["direct_us_per_run"]
    assert numbers["ratio"] == pytest.approx(expected, abs=0.02)


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
