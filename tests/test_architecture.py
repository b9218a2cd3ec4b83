"""The import rules between the parts (docs/architecture.md), read from the source: every import counts,
at module level, inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cluster", "worker", "control")
PURE_PARTS = ("cluster.flow", "cluster.engine", "cluster.components", "cluster.traffic", "cluster.langflow")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported_names(path: Path, name: str) -> Iterator[str]:
    """Every module name an import in the file names (`from a import b` yields a.b and a)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path, name):
            if imported in modules and imported != name:
                targets.add(imported)
            elif imported.split(".")[0] not in PACKAGES:
                targets.add(imported)  # third party: kept for the redis rules
        edges[name] = targets
    return edges


def in_part(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


EDGES = graph()


def violations(source_part: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in EDGES.items()
        if in_part(module, source_part)
        for target in targets
        if any(in_part(target, f) for f in forbidden)
    )


def test_the_graph_sees_the_project() -> None:
    assert len(EDGES) > 100
    assert "cluster.store.keys" in EDGES["cluster.store.store"]
    assert (
        "redis.asyncio" in EDGES["cluster.store.redis_conn"] or "redis" in EDGES["cluster.store.redis_conn"]
    )


@pytest.mark.parametrize("part", PURE_PARTS)
def test_the_flow_language_and_the_engine_never_touch_the_store_or_redis(part: str) -> None:
    assert violations(part, ("cluster.store", "redis")) == []


def test_only_the_store_imports_redis_in_cluster() -> None:
    offenders = [v for v in violations("cluster", ("redis",)) if not v.startswith("cluster.store")]
    assert offenders == []


def test_cluster_never_imports_worker_or_control() -> None:
    assert violations("cluster", ("worker", "control")) == []


def test_worker_never_imports_control() -> None:
    assert violations("worker", ("control",)) == []


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module are import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root] & edges.keys())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child] & edges.keys()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles() -> None:
    assert strongly_connected(EDGES) == []


def test_the_circle_finder_finds_circles() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_modules_stay_small() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in project_modules().items()}
    assert {name: n for name, n in sizes.items() if n > 300} == {}
