"""Run every benchmark module (`bench/bench_*.py`), or only those named: `python -m bench engine cutover`.

`--quick` runs each benchmark that has a quick mode with tiny sizes (results in a temporary directory,
docs/benchmarks.md untouched): a smoke test of the scripts, not a measurement.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

# The order of the sections in docs/benchmarks.md; modules not listed run last, by name.
ORDER = ("cutover", "hotreload", "overhead", "openai", "reload", "memory", "scale", "engine")


def modules() -> list[str]:
    here = Path(__file__).parent
    names = [m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")]

    def rank(name: str) -> tuple[int, str]:
        short = name.removeprefix("bench_")
        return (ORDER.index(short) if short in ORDER else len(ORDER), name)

    return sorted(names, key=rank)


def takes_arguments(main: object) -> bool:
    return callable(main) and bool(inspect.signature(main).parameters)


def run(selected: list[str]) -> int:
    quick = "--quick" in selected
    selected = [s for s in selected if s != "--quick"]
    names = modules()
    if selected:
        unknown = [s for s in selected if f"bench_{s}" not in names and s not in names]
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        names = [n for n in names if n in selected or n.removeprefix("bench_") in selected]
    for name in names:
        print(f"== {name}", flush=True)
        main = importlib.import_module(f"bench.{name}").main
        if takes_arguments(main):
            main(["--quick"] if quick else [])
        elif quick:
            print("no quick mode; skipped", flush=True)
        else:
            main()
    if not quick:
        from bench import summary

        if summary.write():
            print("wrote the summary of docs/benchmarks.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
