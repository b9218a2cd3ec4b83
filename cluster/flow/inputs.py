"""The run inputs a flow takes, described for its callers: name, kind, required or default, description.

A run input is an input port no edge feeds (cluster.flow.wiring.unfed_inputs); input nodes (`ChatInput`,
`TextInput`) are the usual ones and say more about theirs (a default, a description). A replica shows
these in `GET /v1/flows/{name}` and in the 422 that refuses an input the flow does not take.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Set
from dataclasses import dataclass
from typing import Any

from cluster.errors import RunInputError, json_type
from cluster.flow.analysis import Analysis

# What an input node's value is, by component type; any other unfed port takes any JSON value.
KINDS = {"ChatInput": "message", "TextInput": "text"}


@dataclass(frozen=True)
class InputSpec:
    name: str
    kind: str  # "message", "text" or "any"
    required: bool
    nodes: tuple[str, ...]  # the nodes that read it
    default: Any = None
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        described: dict[str, Any] = {"name": self.name, "type": self.kind, "required": self.required}
        if not self.required and self.default is not None:
            described["default"] = self.default
        if self.description:
            described["description"] = self.description
        described["nodes"] = list(self.nodes)
        return described

    def summary(self) -> str:
        """`question (message, required)` / `tone (text, default 'plain')` / `context (any, optional)`."""
        if self.required:
            state = "required"
        else:
            state = "optional" if self.default is None else f"default {self.default!r}"
        return f"{self.name} ({self.kind}, {state})"


def describe_inputs(analysis: Analysis) -> tuple[InputSpec, ...]:
    """Every run input of a valid flow, sorted by name."""
    readers: dict[str, list[int]] = {}
    for i, ports in enumerate(analysis.run_inputs):
        for name in ports.values():
            readers.setdefault(name, []).append(i)
    specs = []
    for name, nodes in sorted(readers.items()):
        required = name in analysis.required_inputs
        kind, default, description = "any", None, ""
        for i in nodes:
            node = analysis.flow.nodes[i]
            params: Mapping[str, Any] = node.params
            if node.type in KINDS:
                kind = KINDS[node.type]
                default = params.get("default", default)
                text = params.get("description")
                description = text if isinstance(text, str) else description
        ids = tuple(analysis.flow.nodes[i].id for i in nodes)
        specs.append(InputSpec(name, kind, required, ids, default, description))
    return tuple(specs)


def check_run_inputs(
    inputs: Mapping[str, Any], specs: Collection[InputSpec], required: Set[str], names: Set[str]
) -> None:
    """Raise RunInputError unless `inputs` is a mapping that gives every `required` input and nothing
    outside `names` (an unknown name is refused: a misspelt input must not go unnoticed). The message
    and details list what the flow takes."""
    if type(inputs) is not dict and not isinstance(inputs, Mapping):  # skip the ABC check for dicts
        raise RunInputError(f"run inputs must be an object of name -> value, not {json_type(inputs)}")
    keys = inputs.keys()
    if keys <= names and keys >= required:
        return
    bad = [k for k in inputs if not isinstance(k, str)]
    if bad:
        raise RunInputError(f"run input names must be strings, got {bad[0]!r}")
    takes = [spec.as_dict() for spec in specs]
    listed = ", ".join(spec.summary() for spec in specs) or "no inputs"
    unknown = sorted(keys - names)
    if unknown:
        message = f"unknown input(s): {', '.join(unknown)}; this flow takes {listed}"
        raise RunInputError(message, unknown=unknown, inputs=takes)
    missing = sorted(required - keys)
    message = f"missing required input(s): {', '.join(missing)}; this flow takes {listed}"
    raise RunInputError(message, missing=missing, inputs=takes)
