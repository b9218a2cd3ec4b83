"""What every benchmark script shares: its options, where its results go, and how its section starts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def bench_args(argv: list[str] | None, doc: str, **extra: Any) -> Any:
    """Common options: `--quick` (tiny sizes, results in a temporary directory, docs untouched) and
    `--out DIR` (where the JSON goes; default bench/results)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the script works")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default bench/results)")
    for flag, options in extra.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", **options)
    args = parser.parse_args(argv or [])
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="flowfleet-bench-quick-")) if args.quick else RESULTS
    return args


RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, results: dict[str, Any], markdown: str, args: Any) -> Path:
    """bench results JSON into `args.out`; the docs section only for a full run."""
    import orjson

    from bench.report import write_section

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    if not args.quick:
        write_section(name, markdown)
    print(f"wrote {path}" + ("" if args.quick else f" and the {name} section of docs/benchmarks.md"))
    return path


def header(results: dict[str, Any]) -> str:
    """The machine / date / command line that heads every section."""
    m = results["machine"]
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores (shared, loaded), {m.get('ram_gb', '?')} GB RAM, "
        f"{m['system']}, Python {m['python']}, redis-server {m.get('redis_server', '?')}. "
        f"Date: {results['date']}. "
        f"Command: `{results['command']}` (or `make bench`). Load average (1/5/15 min) "
        f"{results['load_before']} before, {results['load_after']} after."
    )


def start_results(command: str, args: Any) -> dict[str, Any]:
    from bench.report import load, machine, now

    return {
        "machine": machine(),
        "date": now(),
        "command": command + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "load_before": load(),
    }
