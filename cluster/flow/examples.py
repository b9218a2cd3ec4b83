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

from cluster.errors import Problem
from cluster.flow.model import Flow
from cluster.flow.schemacheck import pointer


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
