"""Tool edges: an edge into a node's `tools` port (Ports.tools) makes its source one of that node's tools.

A tool node runs only when the node it serves calls it, with the arguments the model chose as its inputs.
So a tool node must be a tool-mode component, feed nothing but `tools` ports, and take no edges except
the tools of its own (an agent can be another agent's tool); the tools of one node have distinct names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.components.base import TOOL_NAME_PATTERN, Component, Ports
from cluster.errors import Problem
from cluster.flow.model import BoundEdge, Flow
from cluster.flow.schemacheck import pointer

_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)


@dataclass(frozen=True)
class ToolWiring:
    nodes: frozenset[int]
    edges: tuple[BoundEdge, ...]  # tool edges, in document order
    data_edges: tuple[BoundEdge, ...]  # every other bound edge


def _is_tool_edge(edge: BoundEdge, ports: Sequence[Ports | None]) -> bool:
    target = ports[edge.target]
    return target is not None and target.tools is not None and edge.target_input == target.tools


def tool_name(flow: Flow, node: int) -> str:
    name = flow.nodes[node].params.get("tool_name")
    return name if isinstance(name, str) and name else flow.nodes[node].id


def tool_wiring(
    flow: Flow,
    classes: Sequence[type[Component] | None],
    ports: Sequence[Ports | None],
    bound: Sequence[BoundEdge],
    problems: list[Problem],
) -> ToolWiring:
    tool_edges = [e for e in bound if _is_tool_edge(e, ports)]
    if not tool_edges:
        return ToolWiring(frozenset(), (), tuple(bound))
    nodes = frozenset(e.source for e in tool_edges)
    data_edges = [e for e in bound if not _is_tool_edge(e, ports)]
    names: dict[tuple[int, str], int] = {}
    for edge in tool_edges:
        cls, node = classes[edge.source], flow.nodes[edge.source]
        at = pointer("edges", edge.index)
        if cls is not None and not cls.tool_mode:
            message = f"{node.id!r} ({cls.type_name}) cannot be a tool: it has no tool mode"
            problems.append(Problem(at, "not_a_tool", message))
            continue
        name = tool_name(flow, edge.source)
        if not _TOOL_NAME.match(name):
            message = f"tool name {name!r} is not 1-64 letters, digits, '_' or '-': set params.tool_name"
            problems.append(Problem(pointer("nodes", edge.source, "id"), "invalid_tool_name", message))
        first = names.setdefault((edge.target, name), edge.source)
        if first != edge.source:
            message = (
                f"{flow.nodes[edge.target].id!r} already has a tool named {name!r} ({flow.nodes[first].id!r})"
            )
            problems.append(Problem(at, "duplicate_tool", message))
    for edge in data_edges:
        if edge.source in nodes:
            message = (
                f"{flow.nodes[edge.source].id!r} is a tool: it answers the calls of the node it serves and "
                "cannot also feed a value through an edge"
            )
            problems.append(Problem(pointer("edges", edge.index), "tool_used_as_data", message))
        if edge.target in nodes:
            message = (
                f"{flow.nodes[edge.target].id!r} is a tool: its inputs are the arguments of each call, so no "
                "edge can feed it"
            )
            problems.append(Problem(pointer("edges", edge.index), "tool_with_inputs", message))
    return ToolWiring(nodes, tuple(tool_edges), tuple(data_edges))
