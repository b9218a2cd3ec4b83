"""The fleet benchmarks run (each in quick mode: tiny sizes, results in a temporary directory) and their
pure parts compute what they claim. No timing is asserted: only that the scripts work and that the
correctness checks they report (errors, versions seen, stale responses) come out right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import (
    bench_cutover,
    bench_hotreload,
    bench_memory,
    bench_openai,
    bench_overhead,
    bench_reload,
    bench_scale,
)
from bench.bench_hotreload import check_versions
from bench.loadgen import summarise
from bench.report import DOC
from bench.stats import Round, dist, percentile, rounds_summary


def run_quick(module: Any, name: str, tmp_path: Path) -> dict[str, Any]:
    before = DOC.read_text() if DOC.exists() else None
    module.main(["--quick", "--out", str(tmp_path)])
    assert (DOC.read_text() if DOC.exists() else None) == before, "quick mode must not touch the docs"
    results: dict[str, Any] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["quick"] is True and results["machine"]["cores"] and results["load_after"]
    return results


def test_percentile_is_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]
    assert percentile(samples, 50) == 50.0 and percentile(samples, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert dist([]) == {"n": 0}
    assert dist([3.0, 1.0, 2.0]) == {"n": 3, "p50": 2.0, "p99": 3.0, "min": 1.0, "max": 3.0, "mean": 2.0}


def test_rounds_summary_measures_from_the_call() -> None:
    summary = rounds_summary([Round(10.0, 10.002, [10.001, 10.005]), Round(20.0, 20.001, [20.003, 20.004])])
    assert summary["rounds"] == 2
    assert summary["last_after_return_ms"]["max"] == pytest.approx(3.0)
    assert summary["each_after_return_ms"]["min"] == pytest.approx(-1.0)  # swapped before the reply
    assert summary["skew_ms"]["max"] == pytest.approx(4.0)


def test_check_versions_flags_old_generations_after_convergence() -> None:
    activations = [
        {"generation": 1, "hash": "a", "converged_at": 100.0},
        {"generation": 2, "hash": "b", "converged_at": 110.0},
    ]
    ok = [100.5, 100.6, 200, 1, "a", "r0", None]
    in_flight = [105.0, 110.2, 200, 1, "a", "r1", None]  # sent before generation 2 converged
    stale = [110.5, 110.6, 200, 1, "a", "r2", None]  # sent after it converged, answered by generation 1
    failed = [111.0, 111.1, 503, None, None, "r0", None]
    result = check_versions([ok, in_flight, stale, failed], activations)
    assert result["stale_after_convergence"] == 1 and result["stale_examples"][0]["replica"] == "r2"
    assert result["versions_seen"] == {"a": 3} and result["only_the_two_versions"]
    assert (
        check_versions([[1.0, 1.1, 200, 2, "zzz", "r0", None]], activations)["only_the_two_versions"] is False
    )
    assert summarise([ok, failed, [1, 2, 0, None, None, None, "ConnectionResetError"]], 1.0)[
        "error_kinds"
    ] == {
        "http_503": 1,
        "ConnectionResetError": 1,
    }


def test_cutover_quick(tmp_path: Path) -> None:
    results = run_quick(bench_cutover, "cutover", tmp_path)
    runs = {r["mode"]: r for r in results["runs"]}
    assert set(runs) == {"one-phase", "two-phase"}
    one = runs["one-phase"]
    assert one["available"] and one["swaps"]["rounds"] == 3 and one["floor"]["rounds"] == 3
    assert one["swaps"]["each_after_return_ms"]["n"] == 3 * one["replicas"]
    assert one["probe_errors"] == 0
    assert one["floor_under_probes"]["rounds"] == 3
    # Every swap is matched with its replica's reload line (where the time went).
    assert one["from_record_breakdown"]["apply_ms"]["n"] == 3 * one["replicas"]


def test_hotreload_quick_has_no_errors_and_no_stale_responses(tmp_path: Path) -> None:
    run = run_quick(bench_hotreload, "hotreload", tmp_path)["run"]
    assert run["load"]["requests"] > 0 and run["load"]["errors"] == 0
    assert run["stale_after_convergence"] == 0 and run["version_generation_mismatches"] == 0
    assert set(run["versions_seen"]) == set(run["versions"])
    assert run["baseline_without_activations"]["requests"] > 0


def test_overhead_quick(tmp_path: Path) -> None:
    [row] = run_quick(bench_overhead, "overhead", tmp_path)["runs"]
    for target in ("flowfleet", "bare"):
        assert row[target]["requests"] > 0 and row[target]["errors"] == 0
    assert row["throughput_ratio"] > 0


def test_openai_quick(tmp_path: Path) -> None:
    results = run_quick(bench_openai, "openai", tmp_path)
    [row] = results["runs"]
    for target in ("openai", "native"):
        assert row[target]["requests"] > 0 and row[target]["errors"] == 0
    assert row["throughput_ratio"] > 0 and row["paired_ratio"]["p50"] > 0
    timed = results["in_process"]
    assert len(timed["openai"]["rounds_us"]) == len(timed["native"]["rounds_us"]) == 2
    assert timed["native"]["median_us"] > 0 and timed["rate_ratio"] > 0


def test_reload_quick(tmp_path: Path) -> None:
    rows = run_quick(bench_reload, "reload", tmp_path)["rows"]
    assert [r["nodes"] for r in rows] == [10, 100]
    assert all(r["replica"]["logged_ms"]["n"] == 2 and r["compile_ms"]["n"] == 3 for r in rows)


def test_memory_quick(tmp_path: Path) -> None:
    run = run_quick(bench_memory, "memory", tmp_path)["run"]
    assert run["reloads_counted_by_replica"] >= run["reloads"] + 1
    assert run["samples"][0]["reloads"] == 0 and run["samples"][-1]["reloads"] == run["reloads"]


def test_scale_quick(tmp_path: Path) -> None:
    [row] = run_quick(bench_scale, "scale", tmp_path)["runs"]
    assert row["swaps"]["rounds"] == 2 and row["swaps"]["each_after_start_ms"]["n"] == 2 * row["replicas"]
    assert row["floor"]["rounds"] == 2


def test_summary_goes_under_the_title_and_skips_quick_results(tmp_path: Path) -> None:
    from bench import summary
    from bench.report import write_section

    results, doc = tmp_path / "results", tmp_path / "benchmarks.md"
    results.mkdir()
    assert summary.write(results, doc) is False
    hot = {
        "quick": False,
        "run": {
            "load": {"requests": 1000, "errors": 0},
            "duration_s": 60.0,
            "activations": 100,
            "stale_after_convergence": 0,
            "versions_seen": {"a": 500, "b": 500},
        },
    }
    mem = {"quick": True, "run": {}}
    (results / "hotreload.json").write_text(json.dumps(hot))
    (results / "memory.json").write_text(json.dumps(mem))
    write_section("engine", "engine numbers", doc)
    write_section("about", "how to run", doc, first=True)
    assert summary.write(results, doc) is True
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    assert text.index("how to run") < text.index("## Summary") < text.index("engine numbers")
    assert "1000 runs" in text and "0 errors" in text and "Memory" not in text
    hot["run"]["load"]["requests"] = 2000
    (results / "hotreload.json").write_text(json.dumps(hot))
    summary.write(results, doc)
    text = doc.read_text()
    assert text.count("## Summary") == 1 and "2000 runs" in text and "1000 runs" not in text


def test_per_second_counts_whole_seconds_only() -> None:
    from bench.loadgen import per_second

    records = [[0, t, 200, 1, "a", "r0", None] for t in (10.0, 10.5, 11.2, 11.4, 11.9, 12.1, 13.5, 14.0)]
    # per second from the first response: 2, 3, 1, 1, 1; the first and the last are partial
    assert per_second(records) == [3.0, 1.0, 1.0]
    assert per_second([]) == []
