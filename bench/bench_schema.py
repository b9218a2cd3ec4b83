"""JSON Schema checks of a 1,000-node flow: `cluster.flow.fastschema` against maintained libraries.

    python -m bench.bench_schema [--repeat 30] [--quick]

What `validate` asks of JSON Schema for a valid flow: the document against `DOCUMENT_SCHEMA`, then every
node's params against its component's `params_schema`. Flows: the 1,000-node chain and wide graphs of
`bench.bench_engine`. Every checker is built once, untimed (as flowfleet builds the document checker at
import and caches each component's), and answers only "valid or not" (a miss goes to `jsonschema` for
the messages in flowfleet, so messages are not part of the race). Columns:
- fastschema: the predicate `SchemaChecker` uses today (`compile_schema(schema)`);
- jsonschema-rs (optional, Rust): `jsonschema_rs.validator_for(schema).is_valid`;
- fastjsonschema (optional): `fastjsonschema.compile(schema, use_default=False, use_formats=False)`; it
  generates Python source from the schema and execs it, so it could only ever take flowfleet's own
  schemas, never a schema that arrives inside a flow; without `use_default=False` it would write
  defaults into the checked params, changing the document that is hashed;
- jsonschema: `Draft202012Validator(schema).is_valid`, the slow path, for scale.
The checkers take turns within each repetition so drift in a shared machine's load hits all alike.
Prints best / median ms and each one's best as a ratio to fastschema's; writes no file (the optional
libraries are not project dependencies; docs/benchmarks.md keeps the numbers of one run with them).
A missing optional library is skipped with a note.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.bench_engine import chain, wide
from bench.report import load, machine, now
from cluster.components.registry import default_registry
from cluster.flow.schema import DOCUMENT_SCHEMA
from cluster.flow.schemacheck import SchemaChecker

Check = Callable[[Any], bool]
Factory = Callable[[Any], Check]


def _fastschema(schema: Any) -> Check:
    """The fast path `SchemaChecker` takes today (jsonschema-rs; the hand-written one it replaced was
    measured at 2.50 / 3.97 ms on these flows)."""
    fast = SchemaChecker(schema, "bench").fast
    assert fast is not None, "the schema would not take the fast path"
    return fast


def _jsonschema(schema: Any) -> Check:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema).is_valid


def _jsonschema_rs(module: Any) -> Factory:
    return lambda schema: module.validator_for(schema).is_valid


def _fastjsonschema(module: Any) -> Factory:
    def factory(schema: Any) -> Check:
        validate = module.compile(schema, use_default=False, use_formats=False, detailed_exceptions=False)
        invalid = module.JsonSchemaValueException

        def check(value: Any) -> bool:
            try:
                validate(value)
            except invalid:
                return False
            return True

        return check

    return factory


def checkers() -> dict[str, Factory]:
    """The checkers to compare, by column name; an optional library that is not installed is left out."""
    found: dict[str, Factory] = {"fastschema": _fastschema}
    for column, module_name, wrap in (
        ("jsonschema-rs", "jsonschema_rs", _jsonschema_rs),
        ("fastjsonschema", "fastjsonschema", _fastjsonschema),
    ):
        try:
            found[column] = wrap(importlib.import_module(module_name))
        except ImportError:
            print(f"note: {module_name} is not installed; its column is skipped "
                  f"(pip install {column})")  # fmt: skip
    found["jsonschema"] = _jsonschema
    return found


def _flow_check(factory: Factory, document: dict[str, Any]) -> tuple[Callable[[], bool], float]:
    """A call that checks the whole flow (document, then each node's params) and the ms it took to
    build its checkers."""
    registry = default_registry()
    started = time.perf_counter()
    doc_check = factory(DOCUMENT_SCHEMA)
    by_type: dict[str, Check] = {}
    for node in document["nodes"]:
        if node["type"] not in by_type:
            cls = registry.get(node["type"])
            assert cls is not None
            by_type[node["type"]] = factory(cls.params_schema)
    built_ms = (time.perf_counter() - started) * 1000
    pairs = [(by_type[node["type"]], node.get("params", {})) for node in document["nodes"]]

    def check_flow() -> bool:
        return doc_check(document) and all(check(params) for check, params in pairs)

    return check_flow, built_ms


def measure(document: dict[str, Any], factories: dict[str, Factory], repeat: int) -> dict[str, Any]:
    calls, built = {}, {}
    for name, factory in factories.items():
        calls[name], built[name] = _flow_check(factory, document)
        assert calls[name](), f"{name} rejects {document['name']}"
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            gc.collect()
            started = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - started) * 1000)
    base = min(samples["fastschema"])
    return {
        name: {
            "best_ms": min(s),
            "median_ms": statistics.median(s),
            "ratio": min(s) / base,
            "build_ms": built[name],
        }
        for name, s in samples.items()
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(next(iter(results.values())))
    lines = [
        "| flow | " + " | ".join(f"{n} ms (best / median)" for n in names) + " | "
        + " | ".join(f"{n} / fastschema" for n in names[1:]) + " |",
        "| --- |" + " ---: |" * (2 * len(names) - 1),
    ]  # fmt: skip
    for flow, row in results.items():
        times = " | ".join(f"{row[n]['best_ms']:.2f} / {row[n]['median_ms']:.2f}" for n in names)
        ratios = " | ".join(f"{row[n]['ratio']:.2f}" for n in names[1:])
        lines.append(f"| {flow} | {times} | {ratios} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed checks per flow and checker")
    parser.add_argument("--quick", action="store_true", help="100-node flows, 3 repetitions")
    args = parser.parse_args(argv or [])
    size, repeat = (100, 3) if args.quick else (1000, args.repeat)
    facts = machine()
    print(f"{facts['cpu']}, {facts['cores']} cores, Python {facts['python']}; {now()}; load {load()}")
    factories = checkers()
    results = {f"{shape}-{size}": measure(build(size), factories, repeat) for shape, build in
               (("chain", chain), ("wide", wide))}  # fmt: skip
    print(f"document schema + every node's params schema, {repeat} repetitions:\n")
    print(table(results))
    builds = ", ".join(f"{n} {r['build_ms']:.1f}" for n, r in next(iter(results.values())).items())
    print(f"\nbuilding the checkers (document + 3 params schemas, once) ms: {builds}")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main(sys.argv[1:])
