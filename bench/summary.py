"""The summary at the top of docs/benchmarks.md: each claim of the README next to the numbers that back it,
read from bench/results/*.json (`python -m bench` writes it after a full run; `python -m bench.summary`
rewrites it alone)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from bench.report import DOC, DOC_HEADER, RESULTS

START, END = "<!-- bench:summary:start -->", "<!-- bench:summary:end -->"


def _load(name: str, results: Path) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _cutover(data: dict[str, Any]) -> list[str]:
    lines = []
    for run in data["runs"]:
        if not run["available"]:
            continue
        s, r, f = run["swaps"], run["swaps_from_record"], run["floor"]
        lines.append(
            f"- **Cutover, {run['replicas']} replicas ({run['mode']})**: the last replica swapped "
            f"{s['last_after_return_ms']['p50']:.1f} ms (p50) / {s['last_after_return_ms']['p99']:.1f} ms "
            f"(p99) after the activate call returned, {s['last_after_start_ms']['p50']:.1f} / "
            f"{s['last_after_start_ms']['p99']:.1f} ms after it was sent; skew "
            f"{s['skew_ms']['p50']:.1f} / {s['skew_ms']['p99']:.1f} ms. From the release record to the last "
            f"swap {r['last_after_start_ms']['p50']:.1f} / {r['last_after_start_ms']['p99']:.1f} ms (p50 / "
            f"p99) against {f['last_after_start_ms']['p50']:.1f} / {f['last_after_start_ms']['p99']:.1f} ms "
            f"for a bare PUBLISH to {run['replicas']} subscribers"
            + (
                f" on the idle machine, {fp['p50']:.1f} / {fp['p99']:.1f} ms under the same probes."
                if (fp := run.get("floor_under_probes", {}).get("last_after_start_ms", {})).get("n")
                else "."
            )
        )
    return lines


def _hotreload(data: dict[str, Any]) -> list[str]:
    r = data["run"]
    return [
        f"- **No failed request while switching**: {r['load']['requests']} runs through the shared address "
        f"in {r['duration_s']:.0f} s while {r['activations']} activations alternated two versions: "
        f"{r['load']['errors']} errors, {r['stale_after_convergence']} answers from an older generation "
        f"after convergence, {len(r['versions_seen'])} versions seen (the two activated)."
    ]


def _overhead(data: dict[str, Any]) -> list[str]:
    return [
        f"- **Request path, {row['concurrency']} connection(s)**: flowfleet "
        f"{row['flowfleet']['throughput_rps']:.0f} runs/s, p50 {row['flowfleet']['latency_ms']['p50']:.2f} ms"
        f" / p99 {row['flowfleet']['latency_ms']['p99']:.2f} ms against a bare Starlette endpoint's "
        f"{row['bare']['throughput_rps']:.0f} runs/s, {row['bare']['latency_ms']['p50']:.2f} / "
        f"{row['bare']['latency_ms']['p99']:.2f} ms: throughput ratio {row['throughput_ratio']:.2f}, "
        f"p50 ratio {row['p50_ratio']:.2f}."
        for row in data["runs"]
    ]


def _openai(data: dict[str, Any]) -> list[str]:
    lines = [
        f"- **OpenAI API, {row['concurrency']} connection(s)**: `/v1/chat/completions` "
        f"{row['openai']['throughput_rps']:.0f} runs/s against the native run API's "
        f"{row['native']['throughput_rps']:.0f} on the same flow: throughput ratio "
        f"{row['throughput_ratio']:.3f} (target >= {data['target_throughput_ratio']})."
        for row in data["runs"]
    ]
    timed = data.get("in_process")
    if timed:
        lines.append(
            f"- **OpenAI API in process** (no sockets): {timed['openai']['median_us']:.1f} µs per request "
            f"against {timed['native']['median_us']:.1f} µs native, rate ratio {timed['rate_ratio']:.3f}."
        )
    return lines


def _reload(data: dict[str, Any]) -> list[str]:
    parts = [f"{row['nodes']} nodes {row['replica']['logged_ms']['p50']:.1f} ms" for row in data["rows"]]
    return [f"- **Reload cost on a replica** (fetch + verify + compile + swap, p50): {', '.join(parts)}."]


def _memory(data: dict[str, Any]) -> list[str]:
    r = data["run"]
    if "after_first_batch_kib" not in r:
        return []
    mib = 1024
    return [
        f"- **Memory**: RSS {r['start_kib'] / mib:.1f} MiB at start, "
        f"{r['after_first_batch_kib'] / mib:.1f} MiB after {r['batch']} reloads, "
        f"{r['end_kib'] / mib:.1f} MiB after {r['reloads']} "
        f"({r['second_batch_growth_kib'] / mib:+.1f} MiB over the second {r['batch']})."
    ]


def _scale(data: dict[str, Any]) -> list[str]:
    lines = []
    for run in data["runs"]:
        swapped, floor = run["swaps"]["last_after_start_ms"], run["floor"]["last_after_start_ms"]
        lines.append(
            f"- **Fleet scale, {run['replicas']} replicas in one process**: all swapped {swapped['p50']:.0f} "
            f"ms p50 / {swapped['p99']:.0f} ms p99 after the activation was sent (bare PUBLISH floor: "
            f"{floor['p50']:.0f} ms p50)."
        )
    return lines


SECTIONS = {
    "cutover": _cutover,
    "hotreload": _hotreload,
    "overhead": _overhead,
    "openai": _openai,
    "reload": _reload,
    "memory": _memory,
    "scale": _scale,
}


def markdown(results: Path = RESULTS) -> str | None:
    lines: list[str] = []
    for name, render in SECTIONS.items():
        data = _load(name, results)
        if data is not None and not data.get("quick"):
            lines += render(data)
    if not lines:
        return None
    return "\n".join(
        [
            "## Summary",
            "",
            "Everything on loopback on one loaded 2-core machine, real redis-server, real replica "
            "processes; details and the baseline measured in the same run are in each section below. "
            "Reproduce: `make bench` (everything), `python -m bench cutover hotreload` (some), "
            "`python -m bench.bench_cutover --mode both` (one, with its options; `--help` lists them). "
            "`python -m bench --quick` is a smoke test with tiny sizes that leaves this page alone.",
            "",
            *lines,
        ]
    )


def write(results: Path = RESULTS, doc: Path = DOC) -> bool:
    """Put the summary under the title and the how-to-run section (replacing the previous summary);
    False if nothing to sum up."""
    text = markdown(results)
    if text is None:
        return False
    block = f"{START}\n{text}\n{END}"
    current = doc.read_text() if doc.exists() else DOC_HEADER
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    about_end = "<!-- bench:about:end -->"
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current)
    elif about_end in current:
        head, _, rest = current.partition(about_end)
        current = head + about_end + "\n\n" + block + "\n" + rest
    else:
        head, sep, rest = current.partition("\n<!-- bench:")
        current = head.rstrip("\n") + "\n\n" + block + "\n" + (sep + rest if sep else "")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(current)
    return True


if __name__ == "__main__":
    print("wrote the summary of docs/benchmarks.md" if write() else "no results to sum up")
