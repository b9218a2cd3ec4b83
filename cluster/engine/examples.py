"""Running a flow's examples (`tests`) as dry runs: the checks of `cluster.flow.examples` applied to
the outputs of a flow compiled without a runtime, so nothing calls out or reads a secret."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from cluster.engine.compiler import CompiledFlow
from cluster.errors import FlowfleetError, Problem
from cluster.flow.model import Expectation, FlowTest
from cluster.flow.schemacheck import pointer, shorten

DEFAULT_EXAMPLE_TIMEOUT_S = 30.0
_MISSING = object()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, default=repr).decode()
    except TypeError:
        return repr(value)


def _failure(checks: Mapping[str, Any], value: Any) -> str | None:
    """Why `value` does not meet `checks`, or None when it does."""
    if "present" in checks and checks["present"] != (value is not _MISSING):
        return "was not produced" if checks["present"] else f"should not be produced, but is {_shown(value)}"
    if value is _MISSING:
        return None if set(checks) <= {"present"} else "was not produced"
    text = _text(value)
    if "equals" in checks and value != checks["equals"]:
        return f"should equal {_shown(checks['equals'])}, but is {_shown(value)}"
    if "contains" in checks and checks["contains"] not in text:
        return f"should contain {checks['contains']!r}, but is {_shown(value)}"
    if "not_contains" in checks and checks["not_contains"] in text:
        return f"should not contain {checks['not_contains']!r}, but is {_shown(value)}"
    if "matches" in checks and re.search(checks["matches"], text) is None:
        return f"should match {checks['matches']!r}, but is {_shown(value)}"
    return None


def _shown(value: Any) -> str:
    return shorten(_text(value) if not isinstance(value, str) else repr(value), 160)


async def _run_one(compiled: CompiledFlow, test: FlowTest, timeout_s: float | None) -> list[Problem]:
    try:
        results, _, _ = await compiled.execute(test.inputs, timeout=timeout_s, replies=test.replies)
    except FlowfleetError as e:
        message = f"example {test.name!r} failed: {e}"
        return [Problem(pointer("tests", test.index), "example_failed", shorten(message))]
    outputs = dict(compiled.outputs_of(results))
    node_values = {
        step.node_id: produced.get(step.default_output, _MISSING)
        for step, produced in zip(compiled.steps, results, strict=True)
        if produced is not None
    }
    problems = []
    for expectation in test.expect:
        problem = _check(test, expectation, outputs, node_values)
        if problem is not None:
            problems.append(problem)
    return problems


def _check(
    test: FlowTest, expectation: Expectation, outputs: Mapping[str, Any], node_values: Mapping[str, Any]
) -> Problem | None:
    key = expectation.key
    value = outputs[key] if key in outputs else node_values.get(key, _MISSING)
    why = _failure(expectation.checks, value)
    if why is None:
        return None
    message = f"example {test.name!r}: {key!r} {why}"
    return Problem(pointer("tests", test.index, "expect", key), "expectation_failed", message)


async def run_examples(
    compiled: CompiledFlow, *, timeout_s: float | None = DEFAULT_EXAMPLE_TIMEOUT_S
) -> list[Problem]:
    """Run every example of the flow, one after another; an empty list means every one passed."""
    problems: list[Problem] = []
    for test in compiled.tests:
        problems.extend(await _run_one(compiled, test, timeout_s))
    return problems
