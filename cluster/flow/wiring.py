"""The edge rules of a flow: edges bind existing nodes and ports, once each, with no cycle or dead node."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cluster.components.base import Ports
from cluster.errors import Problem
from cluster.flow import graph
from cluster.flow.model import BoundEdge, Flow, UnboundPort, bind_ports
from cluster.flow.schemacheck import pointer


def _suggestion(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


@dataclass
class Graph:
    """Edges between existing nodes, as adjacency lists, plus the edges whose ports bound."""

    successors: list[list[int]]
    predecessors: list[list[int]]
    bound: list[BoundEdge]
    first_edge: dict[tuple[int, int], int]
    # Nodes on a cycle or named by an edge that points nowhere: they may look dead only because of
    # a problem already reported.
    half_connected: set[int]


_PortSets = tuple[frozenset[str], frozenset[str]]  # (inputs, outputs): a join may have 1,000 inputs


class _PortLookup:
    """Port sets of each node, built the first time an edge names one of its ports."""

    def __init__(self, ports: Sequence[Ports | None]) -> None:
        self.ports = ports
        self._sets: dict[int, _PortSets] = {}

    def sets(self, node: int) -> _PortSets:
        found = self._sets.get(node)
        if found is None:
            ports = self.ports[node]
            assert ports is not None
            found = self._sets[node] = (frozenset(ports.inputs), frozenset(ports.outputs))
        return found


def _edge_ports(
    flow: Flow, edge_index: int, source: int, target: int, lookup: _PortLookup
) -> tuple[list[Problem], tuple[str, str] | None]:
    edge = flow.edges[edge_index]
    source_ports, target_ports = lookup.ports[source], lookup.ports[target]
    if source_ports is None or target_ports is None:
        return [], None  # the node's own problem is already reported
    problems = []
    if edge.source_output is not None and edge.source_output not in lookup.sets(source)[1]:
        message = (
            f"node {edge.source!r} has no output {edge.source_output!r} "
            f"(outputs are: {_listing(source_ports.outputs)})"
        )
        problems.append(Problem(pointer("edges", edge_index, "source_output"), "unknown_port", message))
    if edge.target_input is not None and edge.target_input not in lookup.sets(target)[0]:
        message = (
            f"node {edge.target!r} has no input {edge.target_input!r} "
            f"(inputs are: {_listing(target_ports.inputs)})"
        )
        problems.append(Problem(pointer("edges", edge_index, "target_input"), "unknown_port", message))
    try:
        bound = bind_ports(edge, source_ports, target_ports)
    except UnboundPort as e:
        message = f"{e} (inputs are: {_listing(target_ports.inputs)})"
        problems.append(Problem(pointer("edges", edge_index), "no_default_input", message))
        return problems, None
    return problems, None if problems else bound


def bind_edges(
    flow: Flow, index_of: Mapping[str, int], ports: Sequence[Ports | None], problems: list[Problem]
) -> Graph:
    """Bind every edge to its nodes and ports, reporting the edges that do not bind or repeat one."""
    count = len(flow.nodes)
    g = Graph([[] for _ in range(count)], [[] for _ in range(count)], [], {}, set())
    seen: set[tuple[int, str, int, str]] = set()
    lookup = _PortLookup(ports)
    for edge in flow.edges:
        source, target = index_of.get(edge.source), index_of.get(edge.target)
        if source is None or target is None:
            for side, node_id, found in (("source", edge.source, source), ("target", edge.target, target)):
                if found is None:
                    message = f"no node has id {node_id!r}{_suggestion(node_id, list(index_of))}"
                    problems.append(Problem(pointer("edges", edge.index, side), "unknown_node", message))
                else:
                    g.half_connected.add(found)
            continue
        g.successors[source].append(target)
        g.predecessors[target].append(source)
        g.first_edge.setdefault((source, target), edge.index)
        edge_problems, bound = _edge_ports(flow, edge.index, source, target, lookup)
        if edge_problems:
            problems.extend(edge_problems)
        if bound is None:
            continue
        key = (source, bound[0], target, bound[1])
        if key in seen:
            message = f"edge {edge.source}.{bound[0]} -> {edge.target}.{bound[1]} appears twice"
            problems.append(Problem(pointer("edges", edge.index), "duplicate_edge", message))
            continue
        seen.add(key)
        g.bound.append(BoundEdge(edge.index, source, target, bound[0], bound[1]))
    return g


def order_or_cycles(flow: Flow, g: Graph, problems: list[Problem]) -> tuple[int, ...] | None:
    """The topological order, or None after reporting every cycle."""
    order = graph.topological_order(len(flow.nodes), g.successors)
    if order is not None:
        return tuple(order)
    cycles = graph.find_cycles(len(flow.nodes), g.successors)
    for cycle in cycles:
        g.half_connected.update(cycle)  # a node on a cycle is reported once, as part of it
        names = [flow.nodes[i].id for i in cycle]
        edge_index = g.first_edge[(cycle[0], cycle[1 % len(cycle)])]
        message = "cycle: " + " -> ".join([*names, names[0]])
        problems.append(Problem(pointer("edges", edge_index), "cycle", message))
    return None


def dead_nodes(flow: Flow, outputs: Sequence[int], g: Graph, problems: list[Problem]) -> None:
    """Report the nodes from which no output can be reached."""
    if not outputs:
        return
    live = graph.reaching(outputs, g.predecessors)
    for node in flow.nodes:
        if node.index not in live and node.index not in g.half_connected:
            message = f"node {node.id!r} does not lead to any output, so it would never matter"
            problems.append(Problem(pointer("nodes", node.index), "dead_node", message))


def unfed_inputs(
    ports: Sequence[Ports | None], bound: Sequence[BoundEdge], tool_nodes: frozenset[int] = frozenset()
) -> tuple[list[dict[str, str]], frozenset[str], frozenset[str]]:
    """Each node's input ports that no bound edge feeds (read from the run inputs of the same name),
    and which of those run inputs are required and which optional. Tool nodes read no run input (their
    inputs are each call's arguments), nor does a `tools` port or an edge-only one."""
    fed: list[set[str]] = [set() for _ in ports]
    for edge in bound:
        fed[edge.target].add(edge.target_input)
    run_inputs: list[dict[str, str]] = []
    required: set[str] = set()
    optional: set[str] = set()
    for i, node_ports in enumerate(ports):
        if node_ports is None or i in tool_nodes:
            run_inputs.append({})
            continue
        unfed = [
            p
            for p in node_ports.inputs
            if p not in fed[i] and p != node_ports.tools and p not in node_ports.edge_only
        ]
        run_inputs.append({p: p for p in unfed})
        required.update(p for p in unfed if p in node_ports.required)
        optional.update(p for p in unfed if p not in node_ports.required)
    return run_inputs, frozenset(required), frozenset(optional - required)
