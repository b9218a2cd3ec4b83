"""The JSON Schema (Draft 2020-12) of a flow document: its structure, not its meaning.

The schema checks shapes only (which fields exist, their types, identifier syntax). Whether edges point
at existing nodes and ports, whether the graph is acyclic and whether each node's params fit its
component is checked by `cluster.flow.validation`, which runs this schema first.

>>> DOCUMENT_SCHEMA["required"]
['nodes']
"""

from __future__ import annotations

from typing import Any

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Node ids end up in output keys, trace entries and log lines; LangFlow-style ids ("ChatInput-x1Y2z")
# fit this pattern.
NODE_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"
TYPE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$"
# The same rule as `cluster.names.FLOW_NAME`: a flow's name becomes part of its Redis keys.
FLOW_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
PORT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

# Free-form data an editor may keep (positions, colours); flowfleet ignores it but it is hashed.
_METADATA: dict[str, Any] = {"type": "object"}

NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": NODE_ID_PATTERN},
        "type": {"type": "string", "pattern": TYPE_NAME_PATTERN},
        "params": {"type": "object"},
        # Per-node time budget in seconds, enforced by the engine around the component's run.
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "metadata": _METADATA,
    },
}

EDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["source", "target"],
    "additionalProperties": False,
    "properties": {
        "source": {"type": "string", "pattern": NODE_ID_PATTERN},
        "target": {"type": "string", "pattern": NODE_ID_PATTERN},
        "source_output": {"type": "string", "pattern": PORT_PATTERN},
        "target_input": {"type": "string", "pattern": PORT_PATTERN},
        "metadata": _METADATA,
    },
}

# One expectation on one output: every given check must hold.
EXPECTATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "equals": True,
        "contains": {"type": "string"},
        "not_contains": {"type": "string"},
        "matches": {"type": "string", "maxLength": 1000},
        "present": {"type": "boolean"},
    },
}

TEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "inputs"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "inputs": {"type": "object"},
        # Offline dry runs: the reply an LLM node gives in this example instead of calling its model.
        "replies": {
            "type": "object",
            "propertyNames": {"pattern": NODE_ID_PATTERN},
            "additionalProperties": {"type": "string"},
        },
        "expect": {
            "type": "object",
            "propertyNames": {"pattern": NODE_ID_PATTERN},
            "additionalProperties": EXPECTATION_SCHEMA,
        },
    },
}

# What callers of the run API may choose per call (see cluster.flow.tweaks). Which params may be
# tweaked is the flow's choice, and checked against each component at validation.
API_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tweaks": {
            "type": "object",
            "propertyNames": {"pattern": NODE_ID_PATTERN},
            "additionalProperties": {
                "type": "array",
                "uniqueItems": True,
                "items": {"type": "string", "minLength": 1, "maxLength": 128},
            },
        },
        "version_selection": {"type": "boolean"},
    },
}

DOCUMENT_SCHEMA: dict[str, Any] = {
    "$schema": SCHEMA_DIALECT,
    "$id": "https://flowfleet.dev/schemas/flow.json",
    "title": "flowfleet flow document",
    "type": "object",
    "required": ["nodes"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": FLOW_NAME_PATTERN},
        "description": {"type": "string"},
        "nodes": {"type": "array", "items": NODE_SCHEMA},
        "edges": {"type": "array", "items": EDGE_SCHEMA},
        "tests": {"type": "array", "items": TEST_SCHEMA},
        "api": API_SCHEMA,
        "metadata": _METADATA,
    },
}
