"""Plain-text rendering for people: aligned tables, short hashes, UTC times, readable diffs (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

SHORT = 12


def short(digest: Any) -> str:
    return str(digest)[:SHORT] if digest else "-"


def when(ts: Any) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(seconds: Any) -> str:
    """How long ago, for people: tenths under 10 s, then whole seconds, minutes, hours.

    >>> [age(x) for x in (0.42, 12.6, 125, 7300, None)]
    ['0.4s', '13s', '2m05s', '2h01m', '-']
    """
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    # One row per record, always: a newline in a message would break the column layout.
    return " ".join(text.split())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned table; the last column is not padded.

    >>> print(table(["A", "BB"], [["x", 1], ["long", None]]))
    A     BB
    x     1
    long  -
    """
    cells = [[cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *cells]:
        padded = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def pretty_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def value_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def edge_text(edge: Mapping[str, Any]) -> str:
    src = str(edge.get("source", "?")) + (f".{edge['source_output']}" if edge.get("source_output") else "")
    dst = str(edge.get("target", "?")) + (f".{edge['target_input']}" if edge.get("target_input") else "")
    return f"{src} -> {dst}"


def change_lines(changes: Sequence[Mapping[str, Any]], indent: str) -> list[str]:
    lines = []
    for c in changes:
        kind, where = c.get("kind"), c.get("path") or "/"
        if kind == "added":
            lines.append(f"{indent}+ {where}: {value_text(c.get('new'))}")
        elif kind == "removed":
            lines.append(f"{indent}- {where}: {value_text(c.get('old'))}")
        else:
            lines.append(f"{indent}~ {where}: {value_text(c.get('old'))} -> {value_text(c.get('new'))}")
    return lines


def diff_text(diff: Mapping[str, Any]) -> str:
    """The API's diff object as lines: + added, - removed, ~ changed."""
    if diff.get("empty"):
        return "no differences"
    nodes, edges = diff.get("nodes", {}), diff.get("edges", {})
    lines = [f"+ node {n.get('id')} ({n.get('type')})" for n in nodes.get("added", [])]
    lines += [f"- node {n.get('id')} ({n.get('type')})" for n in nodes.get("removed", [])]
    for n in nodes.get("changed", []):
        kind = n.get("type")
        retyped = f" (type {kind['old']} -> {kind['new']})" if isinstance(kind, Mapping) else ""
        lines.append(f"~ node {n.get('id')}{retyped}")
        lines += change_lines(n.get("params", []), "    params ")
        lines += change_lines(n.get("other", []), "    ")
    lines += [f"+ edge {edge_text(e)}" for e in edges.get("added", [])]
    lines += [f"- edge {edge_text(e)}" for e in edges.get("removed", [])]
    lines += change_lines(diff.get("fields", []), "")
    return "\n".join(lines)
