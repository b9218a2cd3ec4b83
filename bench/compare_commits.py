"""Before / after: the engine and request-path benchmarks of a base commit against the current tree.

    python -m bench.compare_commits BASE [--quick] [--rounds 1]

BASE is checked out with `git worktree add --detach` under a temporary directory; the current tree (the
working tree as it is, uncommitted changes and untracked files included, ignored files left out) is
copied next to it. Copying keeps the checkout untouched: `bench.bench_engine` and `bench.bench_overhead`
write `bench/results/` and their sections of `docs/benchmarks.md` inside the tree they run in, and others
may edit the checkout while this runs. Each benchmark runs with this interpreter, `PYTHONPATH` and cwd
set to one tree, base and current alternating (the order flips every round), so drift in a shared
machine's load hits both alike:
- `python -m bench.bench_engine` (no options): validate + compile of the 1,000-node chain and wide
  flows (best of its repetitions) and the engine's per-run overhead, read from its `engine.json`;
- `python -m bench.bench_overhead --duration S --rounds R --concurrency 1 32 --out DIR` (its `--quick`
  measures 2 connections only): runs/s of one replica at 1 and 32 connections, read from
  `DIR/overhead.json`.
With several rounds each figure is the best one (lowest time, highest throughput). A benchmark that
fails in one tree (the base may lack something) leaves its cells empty; the others are still compared.
Prints a markdown table, current / base for every figure. The worktree and the copy are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import ROOT, load, machine, now

TREES = ("base", "current")

# (figure, base, current, current / base)
Row = tuple[str, float | None, float | None, float | None]

# (label, benchmark, path into its JSON, which way is better); "ms"/"µs": lower, "runs/s": higher.
Metric = tuple[str, str, Callable[[dict[str, Any]], float], str]


def _compile_total(shape: str) -> Callable[[dict[str, Any]], float]:
    def read(data: dict[str, Any]) -> float:
        row = next(r for r in data["compile"] if r["shape"] == shape and r["nodes"] == 1000)
        return float(row["total"]["min_ms"])

    return read


def _overhead_row(connections: int, key: str) -> Callable[[dict[str, Any]], float]:
    def read(data: dict[str, Any]) -> float:
        row = next(r for r in data["runs"] if r["concurrency"] == connections)
        value = row[key] if key == "throughput_ratio" else row[key]["throughput_rps"]
        return float(value)

    return read


METRICS: tuple[Metric, ...] = (
    ("validate + compile, 1,000-node chain (ms)", "engine", _compile_total("chain"), "lower"),
    ("validate + compile, 1,000-node wide (ms)", "engine", _compile_total("wide"), "lower"),
    ("engine per-run overhead, 3-node flow (µs)", "engine", lambda d: d["overhead"]["overhead_us_per_run"],
     "lower"),
    ("engine run, 3-node flow (µs)", "engine", lambda d: d["overhead"]["engine_us_per_run"], "lower"),
    ("replica runs/s, 1 connection", "overhead", _overhead_row(1, "flowfleet"), "higher"),
    ("replica runs/s, 32 connections", "overhead", _overhead_row(32, "flowfleet"), "higher"),
    ("bare endpoint runs/s, 1 connection", "overhead", _overhead_row(1, "bare"), "higher"),
    ("bare endpoint runs/s, 32 connections", "overhead", _overhead_row(32, "bare"), "higher"),
    ("replica / bare throughput, 1 connection", "overhead", _overhead_row(1, "throughput_ratio"), "higher"),
    ("replica / bare throughput, 32 connections", "overhead", _overhead_row(32, "throughput_ratio"),
     "higher"),
)  # fmt: skip


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def snapshot(target: Path) -> None:
    """Copy the working tree as it is (tracked and untracked files, not ignored ones) to `target`."""
    names = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not part of it
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports(tree: Path) -> None:
    """Fail early if the tree's packages would not be the ones imported (the venv holds an editable
    install of the checkout)."""
    out = subprocess.run(
        [sys.executable, "-c", "import bench, cluster; print(cluster.__file__); print(bench.__file__)"],
        cwd=tree, env=_env(tree), capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in out.split():
        if not Path(line).resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"{line} is imported instead of the copy in {tree}")


def run_benchmark(name: str, tree: Path, out: Path, quick: bool) -> dict[str, Any] | None:
    """One run of `bench.bench_<name>` in `tree`; its JSON results, or None if it failed."""
    if name == "engine":
        args, result = [], tree / "bench" / "results" / "engine.json"
        result.unlink(missing_ok=True)
    else:
        duration, rounds = ("1.5", "1") if quick else ("3", "2")
        args = ["--duration", duration, "--rounds", rounds, "--concurrency", "1", "32", "--out", str(out)]
        result = out / "overhead.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.bench_{name}", *args],
        cwd=tree, env=_env(tree), capture_output=True, text=True, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    if proc.returncode != 0 or not result.exists():
        tail = "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        print(f"  {name} failed in {tree.name} (exit {proc.returncode}, {took:.0f} s):", flush=True)
        print(f"    {tail}", flush=True)
        return None
    print(f"  {name} in {tree.name}: {took:.0f} s", flush=True)
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def _best(values: list[float], better: str) -> float | None:
    if not values:
        return None
    return min(values) if better == "lower" else max(values)


def figures(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[Row]:
    rows = []
    for label, bench, read, better in METRICS:
        best: list[float | None] = []
        for tree in TREES:
            values = []
            for data in results[tree][bench]:
                try:
                    values.append(read(data))
                except (KeyError, StopIteration, TypeError):
                    pass  # this tree's benchmark does not report it
            best.append(_best(values, better))
        base, current = best
        ratio = current / base if base and current is not None else None
        rows.append((f"{label}, {better} is better", base, current, ratio))
    return rows


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row], base_name: str, current_name: str) -> str:
    lines = [
        f"| figure | base `{base_name}` | current `{current_name}` | current / base |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, base, current, ratio in rows:
        digits = 0 if "runs/s," in label and "/ bare" not in label else 2
        lines.append(f"| {label} | {_cell(base, digits)} | {_cell(current, digits)} | {_cell(ratio)} |")
    return "\n".join(lines)


def machine_line() -> str:
    m = machine()
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['system']}, "
        f"Python {m['python']}, redis-server {m['redis_server']}. Date: {now()}."
    )


def compare(base: str, quick: bool, rounds: int) -> str:
    base_sha = _git("rev-parse", "--short", base).strip()
    dirty = bool(_git("status", "--porcelain").strip())
    current_name = _git("rev-parse", "--short", "HEAD").strip() + (" + working tree" if dirty else "")
    temp = Path(tempfile.mkdtemp(prefix="flowfleet-compare-"))
    trees = {"base": temp / "base", "current": temp / "current"}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {t: {"engine": [], "overhead": []} for t in TREES}
    load_before = load()
    try:
        _git("worktree", "add", "--detach", "--quiet", str(trees["base"]), base)
        snapshot(trees["current"])
        for tree in trees.values():
            check_imports(tree)
        for number in range(rounds):
            order = TREES if number % 2 == 0 else TREES[::-1]
            print(f"round {number + 1} of {rounds}", flush=True)
            for bench in ("engine", "overhead"):
                for name in order:
                    out = temp / f"out-{name}-{bench}-{number}"
                    out.mkdir()
                    data = run_benchmark(bench, trees[name], out, quick)
                    if data is not None:
                        results[name][bench].append(data)
    finally:
        _git("worktree", "remove", "--force", str(trees["base"]))
        shutil.rmtree(temp, ignore_errors=True)
    overhead_args = "--duration 1.5 --rounds 1" if quick else "--duration 3 --rounds 2"
    notes = (
        f"{machine_line()} Load average (1/5/15 min) {load_before} before, {load()} after. "
        f"Command: `python -m bench.compare_commits {base}{' --quick' if quick else ''}"
        f"{f' --rounds {rounds}' if rounds != 1 else ''}` ({rounds} round(s); `bench_engine` with its "
        f"defaults, `bench_overhead {overhead_args} --concurrency 1 32`; best of the rounds)."
    )
    return notes + "\n\n" + table(figures(results), base_sha, current_name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("base", help="the commit to compare against (e.g. ef49bfa)")
    parser.add_argument("--quick", action="store_true", help="shorter request-path runs (1 x 1.5 s)")
    parser.add_argument("--rounds", type=int, default=1, help="times each tree runs each benchmark")
    args = parser.parse_args(argv)
    print(compare(args.base, args.quick, max(1, args.rounds)))


if __name__ == "__main__":
    main(sys.argv[1:])
