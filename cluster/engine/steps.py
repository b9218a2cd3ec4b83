"""A node as the scheduler sees it (`Step`), how a flow's analysis becomes steps, and the order of steps
that can only run one at a time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cluster.components.base import Component
from cluster.flow.analysis import Analysis


@dataclass(frozen=True, eq=False)
class Step:
    """A node as the scheduler sees it: its component, where each input comes from, and what follows."""

    index: int
    node_id: str
    type_name: str
    component: Component
    # input port -> (source step index, source port) for every edge into it
    feeds: Mapping[str, tuple[tuple[int, str], ...]]
    # input port -> run input name, for the ports no edge feeds
    run_inputs: Mapping[str, str]
    required: frozenset[str]
    outputs: frozenset[str]
    default_output: str
    successors: tuple[int, ...]
    predecessor_count: int
    timeout_s: float | None = None


def sequential_order(steps: tuple[Step, ...]) -> tuple[int, ...] | None:
    """The order the scheduler runs `steps` in when it never has two of them ready at once (a chain,
    whatever is skipped: skipping settles a node like running it), or None when the graph fans out."""
    waiting = [step.predecessor_count for step in steps]
    ready = [step.index for step in steps if step.predecessor_count == 0]
    order: list[int] = []
    while ready:
        if len(ready) > 1:
            return None
        index = ready.pop()
        order.append(index)
        for successor in steps[index].successors:
            waiting[successor] -= 1
            if waiting[successor] == 0:
                ready.append(successor)
    return tuple(order) if len(order) == len(steps) else None


_NO_FEEDS: Mapping[str, tuple[tuple[int, str], ...]] = MappingProxyType({})


def build_steps(analysis: Analysis, components: list[Component], kept: list[int]) -> tuple[Step, ...]:
    """One step per node in `kept` (every node but the tools), numbered by position in `kept`."""
    count = len(kept)
    position = {node: i for i, node in enumerate(kept)} if count != len(components) else None
    feeds: list[dict[str, list[tuple[int, str]]] | None] = [None] * count
    # Dicts as ordered sets: several edges between two nodes still make one dependency.
    successors: list[dict[int, None]] = [{} for _ in range(count)]
    predecessor_count = [0] * count
    for edge in analysis.edges:
        source, target = (
            (edge.source, edge.target) if position is None else (position[edge.source], position[edge.target])
        )
        after = successors[source]
        if target not in after:
            after[target] = None
            predecessor_count[target] += 1
        into = feeds[target]
        if into is None:
            into = feeds[target] = {}
        into.setdefault(edge.target_input, []).append((source, edge.source_output))
    nodes, ports, run_inputs = analysis.flow.nodes, analysis.ports, analysis.run_inputs
    return tuple(
        Step(
            index=i,
            node_id=nodes[node].id,
            type_name=nodes[node].type,
            component=components[node],
            feeds=_NO_FEEDS if fed is None else MappingProxyType({port: tuple(s) for port, s in fed.items()}),
            run_inputs=run_inputs[node],
            required=ports[node].required,
            outputs=frozenset(ports[node].outputs),
            default_output=ports[node].default_output,
            successors=tuple(successors[i]),
            predecessor_count=predecessor_count[i],
            timeout_s=nodes[node].timeout_s,
        )
        for i, (node, fed) in enumerate(zip(kept, feeds, strict=True))
    )


def bind_tools(analysis: Analysis, components: list[Component]) -> None:
    """Hand every node with a `tools` port the tool nodes wired to it, in document order."""
    tools: dict[int, list[Component]] = {}
    for edge in analysis.tool_edges:
        tools.setdefault(edge.target, []).append(components[edge.source])
    for target, attached in tools.items():
        components[target].bind_tools(attached)
