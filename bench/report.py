"""Shared helpers for benchmarks: machine facts, JSON results and their section in docs/benchmarks.md."""

from __future__ import annotations

import ast
import datetime
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
DOC_HEADER = (
    "# Benchmarks\n\nEach section is written by one module of `bench/` (run them all with `make bench`, "
    "or one with `python -m bench.bench_<name>`); raw numbers are in `bench/results/`.\n"
)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    found = re.search(r"^Model name:\s*(.+)$", _output(["lscpu"]), re.MULTILINE)
    if found:
        model = found.group(1).strip()
    redis = re.search(r"v=(\S+)", _output(["redis-server", "--version"]))
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": redis.group(1) if redis else "not found",
        "system": f"{platform.system()} {platform.release()}",
        "stack": stack(),
    }


def stack() -> dict[str, Any]:
    """The server stack this environment runs replicas and the control plane on: what uvicorn's
    `loop="auto"` and `http="auto"` pick (uvloop and httptools when installed, else asyncio and h11),
    and whether redis-py parses replies with hiredis."""
    from redis.utils import HIREDIS_AVAILABLE

    def version(module: str) -> str | None:
        try:
            return str(__import__(module).__version__)
        except (ImportError, AttributeError):
            return None

    uvloop, httptools = version("uvloop"), version("httptools")
    return {
        "loop": f"uvloop {uvloop}" if uvloop else "asyncio",
        "http": f"httptools {httptools}" if httptools else "h11",
        "hiredis": bool(HIREDIS_AVAILABLE),
    }


def stack_line(facts: dict[str, Any] | None = None) -> str:
    """One sentence naming the stack, for a benchmark's output and its docs section."""
    s = facts or stack()
    hiredis = "with hiredis" if s["hiredis"] else "without hiredis"
    return f"Stack: uvicorn on {s['loop']}, HTTP parser {s['http']}, redis-py {hiredis}."


def _output(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        return ""


def _ram_gb() -> float | None:
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    return round(int(found.group(1)) / 1024**2, 1) if found else None


def scripts() -> dict[str, str]:
    """Each benchmark module's name and the first line of its docstring (what it measures)."""
    found = {}
    for path in sorted((ROOT / "bench").glob("bench_*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        found[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def about_markdown(facts: dict[str, Any], date: str, command: str) -> str:
    """The top of docs/benchmarks.md: how to run the benchmarks, what each measures, and the machine."""
    lines = [
        "## How to run, and the machine",
        "",
        "`make bench` runs every benchmark (`python -m bench`); `python -m bench <name>` or "
        "`python -m bench.bench_<name>` runs one. Each writes its raw numbers to `bench/results/<name>.json` "
        "and its own section below.",
        "",
        "| script | measures |",
        "| --- | --- |",
        *(f"| `bench/{name}.py` | {summary_line} |" for name, summary_line in scripts().items()),
        "",
        f"Last written by `{command}` on {date}, on this machine:",
        "",
        "| CPU | cores | RAM | kernel | Python | redis-server |",
        "| --- | ---: | ---: | --- | --- | --- |",
        f"| {facts['cpu']} | {facts['cores']} | {facts['ram_gb']} GB | {facts['kernel']} "
        f"| {facts['python']} | {facts['redis_server']} |",
    ]
    return "\n".join(lines)


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages: numbers taken on a busy machine say so."""
    return [round(x, 2) for x in os.getloadavg()]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def summary(samples_ms: list[float]) -> dict[str, float]:
    return {
        "min_ms": round(min(samples_ms), 3),
        "median_ms": round(statistics.median(samples_ms), 3),
        "runs": len(samples_ms),
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return path


def write_section(name: str, markdown: str, doc: Path = DOC, *, first: bool = False) -> None:
    """Replace this benchmark's section of docs/benchmarks.md (between its markers), keeping the others.

    A new section goes at the end, or, with `first`, before every other section."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else DOC_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    elif first and "<!-- bench:" in text:
        at = text.index("<!-- bench:")
        text = text[:at] + block + "\n\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
