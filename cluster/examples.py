"""A flow document's examples (`tests`): static checks at validation, and dry runs before activation.

    {"name": "smoke", "inputs": {"input": "hi"}, "expect": {"answer": {"contains": "hi"}}}

An expectation's key names a run output or, failing that, a node id (whose default output is checked).
Checks: `equals` (any JSON value), `contains` / `not_contains` (substring of the value as text),
`matches` (a regular expression searched in the text), `present` (whether the value was produced).

Examples are dry runs: they run wherever a flow is checked (publish, `sync`, `validate`) on a flow compiled
without a runtime, so no node calls out or reads a secret. An LLM node answers as the `echo` provider does
(under its own model name), or with the text the example records for it in `replies`:

    {"name": "refund", "inputs": {"question": "refund?"}, "replies": {"llm": "Refunds take 5 days."},
     "expect": {"answer": {"contains": "5 days"}}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from cluster.errors import FlowfleetError, Problem
from cluster.model import Expectation, Flow, FlowTest
from cluster.validation import pointer, shorten

if TYPE_CHECKING:
    from cluster.engine import CompiledFlow

DEFAULT_EXAMPLE_TIMEOUT_S = 30.0
_MISSING = object()


def check_examples(flow: Flow, output_keys: Mapping[str, int], required: frozenset[str]) -> list[Problem]:
    """Static problems of the examples: duplicate names, missing required inputs, unknown targets,
    invalid regular expressions."""
    problems: list[Problem] = []
    names: dict[str, int] = {}
    node_ids = {node.id for node in flow.nodes}
    targets = set(output_keys) | node_ids
    for test in flow.tests:
        for node_id in test.replies:
            if node_id not in node_ids:
                message = f"replies names {node_id!r}, which is not a node of this flow"
                at = pointer("tests", test.index, "replies", node_id)
                problems.append(Problem(at, "unknown_reply_target", message))
        first = names.setdefault(test.name, test.index)
        if first != test.index:
            message = f"example name {test.name!r} is already used by /tests/{first}"
            problems.append(Problem(pointer("tests", test.index, "name"), "duplicate_test", message))
        missing = sorted(required - set(test.inputs))
        if missing:
            message = f"example {test.name!r} lacks required input(s): {', '.join(missing)}"
            problems.append(Problem(pointer("tests", test.index, "inputs"), "missing_input", message))
        for expectation in test.expect:
            at = pointer("tests", test.index, "expect", expectation.key)
            if expectation.key not in targets:
                outputs = ", ".join(sorted(output_keys)) or "none"
                message = f"{expectation.key!r} is neither an output (outputs are: {outputs}) nor a node id"
                problems.append(Problem(at, "unknown_expect_target", message))
            pattern = expectation.checks.get("matches")
            if isinstance(pattern, str):
                try:
                    re.compile(pattern)
                except re.error as e:
                    problems.append(
                        Problem(at + "/matches", "invalid_regex", f"invalid regular expression: {e}")
                    )
    return problems


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
