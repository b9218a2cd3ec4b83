"""A node as the scheduler sees it (`Step`), how a flow's analysis becomes steps, the order of steps
that can only run one at a time, and what a step's result or exception means for its run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cluster.components.base import Component
from cluster.errors import ComponentError, FlowfleetError, NodeFailed, RunTimeout
from cluster.flow.analysis import Analysis

logger = logging.getLogger(__name__)


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
    # (port, source step, source port, required) per fed port, when every fed port has one edge (the
    # usual node: the sequential scheduler then reads its inputs in one pass); None otherwise.
    edges: tuple[tuple[str, int, str, bool], ...] | None = None


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
            edges=_single_edges(fed, ports[node].required),
        )
        for i, (node, fed) in enumerate(zip(kept, feeds, strict=True))
    )


def _single_edges(
    fed: dict[str, list[tuple[int, str]]] | None, required: frozenset[str]
) -> tuple[tuple[str, int, str, bool], ...] | None:
    if fed is None:
        return ()
    if any(len(sources) != 1 for sources in fed.values()):
        return None
    return tuple((port, *sources[0], port in required) for port, sources in fed.items())


def bind_tools(analysis: Analysis, components: list[Component]) -> None:
    """Hand every node with a `tools` port the tool nodes wired to it, in document order."""
    tools: dict[int, list[Component]] = {}
    for edge in analysis.tool_edges:
        tools.setdefault(edge.target, []).append(components[edge.source])
    for target, attached in tools.items():
        components[target].bind_tools(attached)


def node_failure(step: Step, error: Exception, budget: asyncio.Timeout | None) -> FlowfleetError | None:
    """What a node's exception fails the run with; None when it already says what went wrong (a
    FlowfleetError such as RunInputError from an input node) and is raised as it is."""
    if isinstance(error, TimeoutError):
        timeout = step.timeout_s
        if timeout is not None and budget is not None and budget.expired():
            message = f"node {step.node_id!r} exceeded its timeout of {timeout:g}s"
            return RunTimeout(message, node_id=step.node_id, timeout_s=timeout)
        return NodeFailed(step.node_id, f"TimeoutError: {error}")
    if isinstance(error, ComponentError):
        return NodeFailed(step.node_id, str(error))
    if isinstance(error, FlowfleetError):
        return None
    logger.warning("node %s (%s) raised unexpectedly", step.node_id, step.type_name, exc_info=error)
    return NodeFailed(step.node_id, f"{type(error).__name__}: {error}")


def checked(step: Step, produced: Any) -> Mapping[str, Any]:
    """A node's result, refused (NodeFailed) unless it is a mapping of the node's own output ports."""
    if type(produced) is not dict and not isinstance(produced, Mapping):  # skip the ABC check for dicts
        raise NodeFailed(step.node_id, f"returned {type(produced).__name__}, not a mapping of output ports")
    if not step.outputs.issuperset(produced):
        unknown = produced.keys() - step.outputs
        raise NodeFailed(
            step.node_id, f"returned unknown output port(s): {', '.join(sorted(map(str, unknown)))}"
        )
    return produced
