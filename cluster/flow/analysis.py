"""The semantic rules of a schema-valid flow document, and what the compiler needs from them.

Rules: unique node ids, known component types (with the closest known name suggested), params that fit
each component's schema and its own checks, secrets and URLs that the operator's outbound policy allows,
edges between existing nodes and ports, no cycles, at least one output, every node contributing to an
output, and examples (`tests`) that name real outputs.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from cluster.components.base import Component, Ports
from cluster.egress.policy import OutboundPolicy
from cluster.errors import Problem
from cluster.flow import graph
from cluster.flow.examples import check_examples
from cluster.flow.model import BoundEdge, Flow, UnboundPort, bind_ports, parse_flow
from cluster.flow.schemacheck import SchemaChecker, pointer, shorten

logger = logging.getLogger(__name__)


class ComponentRegistry(Protocol):
    """What validation needs from `cluster.components.registry.Registry`."""

    def get(self, type_name: str) -> type[Component] | None: ...

    def names(self) -> list[str]: ...

    def suggest(self, name: str) -> str | None: ...


@dataclass(frozen=True)
class Analysis:
    """A valid flow, resolved: component classes, ports, bound edges and a topological order.

    `run_inputs[i]` maps each input port of node i that no edge feeds to the run input it reads (the
    same name); `output_nodes` are the explicit output nodes or, when there are none, the sinks.
    """

    flow: Flow
    classes: tuple[type[Component], ...]
    ports: tuple[Ports, ...]
    edges: tuple[BoundEdge, ...]
    order: tuple[int, ...]
    output_nodes: tuple[int, ...]
    run_inputs: tuple[Mapping[str, str], ...]
    required_inputs: frozenset[str]
    optional_inputs: frozenset[str]


@lru_cache(maxsize=256)
def params_checker(cls: type[Component]) -> SchemaChecker:
    """The (cached) checker of a component's params schema. Raises jsonschema's SchemaError, or
    whatever a broken plugin schema raises, when the schema is unusable."""
    return SchemaChecker(cls.params_schema, "invalid_params")


def _suggestion(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _check_ports(ports: Ports) -> str | None:
    if not isinstance(ports, Ports):
        return f"declared ports as {type(ports).__name__}, not Ports"
    if ports.default_input is not None and ports.default_input not in ports.inputs:
        return f"default input {ports.default_input!r} is not one of its inputs"
    if ports.default_output not in ports.outputs:
        return f"default output {ports.default_output!r} is not one of its outputs"
    if not ports.required.issubset(ports.inputs):
        return "declares required inputs that are not inputs"
    return None


def _node_problems(
    index: int, cls: type[Component], params: Mapping[str, Any], policy: OutboundPolicy
) -> tuple[list[Problem], Ports | None]:
    """Params schema, the component's own checks, then its ports; plugin bugs become problems."""
    path = f"/nodes/{index}/params"  # pointer("nodes", index, "params"): nothing here needs escaping
    try:
        problems = params_checker(cls).problems(params, "nodes", index, "params")
    except Exception as e:  # a plugin's schema (SchemaError, a bad regex) is code we do not control
        logger.warning("params schema of component %s is unusable: %s", cls.type_name, e)
        return [
            Problem(path, "component_error", shorten(f"{cls.type_name} has an unusable params schema: {e}"))
        ], None
    if problems:
        return problems, None
    try:
        problems = list(cls.check_params(params, path))
        problems.extend(policy.problems(cls.outbound(params), path))
        if problems:
            return problems, None  # ports of params with problems would only add noise
        ports = cls.ports(params)
        broken = _check_ports(ports)
    except Exception as e:
        logger.warning("component %s failed to check its params: %r", cls.type_name, e)
        return [
            Problem(path, "component_error", shorten(f"{cls.type_name} could not check its params: {e}"))
        ], None
    if broken:
        return [Problem(path, "component_error", f"{cls.type_name} {broken}")], None
    return [], ports


@dataclass
class _Graph:
    """Edges between existing nodes, as adjacency lists, plus the edges whose ports bound."""

    successors: list[list[int]]
    predecessors: list[list[int]]
    bound: list[BoundEdge]
    first_edge: dict[tuple[int, int], int]
    # Nodes on a cycle or named by an edge that points nowhere: they may look dead only because of
    # a problem already reported.
    half_connected: set[int]


def _ids(flow: Flow, problems: list[Problem]) -> dict[str, int]:
    index_of: dict[str, int] = {}
    for node in flow.nodes:
        first = index_of.setdefault(node.id, node.index)
        if first != node.index:
            message = f"node id {node.id!r} is already used by /nodes/{first}"
            problems.append(Problem(pointer("nodes", node.index, "id"), "duplicate_id", message))
    return index_of


def _components(
    flow: Flow, registry: ComponentRegistry, policy: OutboundPolicy, problems: list[Problem]
) -> tuple[list[type[Component] | None], list[Ports | None]]:
    classes: list[type[Component] | None] = []
    ports: list[Ports | None] = []
    for node in flow.nodes:
        cls = registry.get(node.type)
        classes.append(cls)
        if cls is None:
            close = registry.suggest(node.type)
            hint = f"; did you mean {close!r}?" if close else " (is the package that provides it installed?)"
            message = f"unknown component type {node.type!r}{hint}"
            problems.append(Problem(pointer("nodes", node.index, "type"), "unknown_type", message))
            ports.append(None)
            continue
        node_problems, node_ports = _node_problems(node.index, cls, node.params, policy)
        problems.extend(node_problems)
        ports.append(node_ports)
    return classes, ports


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


def _edges(
    flow: Flow, index_of: Mapping[str, int], ports: Sequence[Ports | None], problems: list[Problem]
) -> _Graph:
    count = len(flow.nodes)
    g = _Graph([[] for _ in range(count)], [[] for _ in range(count)], [], {}, set())
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


def _cycles(flow: Flow, g: _Graph, problems: list[Problem]) -> tuple[int, ...] | None:
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


def output_key(node_id: str, params: Mapping[str, Any]) -> str:
    """The run-output key of an explicit output node: `params.name`, else the node id (as in
    `Component.output_name`)."""
    name = params.get("name")
    return name if isinstance(name, str) and name else node_id


def _outputs(
    flow: Flow,
    index_of: Mapping[str, int],
    classes: Sequence[type[Component] | None],
    g: _Graph,
    problems: list[Problem],
) -> tuple[list[int], dict[str, int]]:
    if not flow.nodes:
        problems.append(Problem(pointer("nodes"), "no_nodes", "a flow needs at least one node"))
        return [], {}
    explicit = [i for i, cls in enumerate(classes) if cls is not None and cls.is_output]
    outputs = explicit or [i for i in range(len(flow.nodes)) if not g.successors[i]]
    if not outputs:
        message = "the flow has no output: add an output node, or leave a node that feeds no other"
        problems.append(Problem(pointer("nodes"), "no_outputs", message))
    keys: dict[str, int] = {}
    for i in outputs:
        node = flow.nodes[i]
        key = output_key(node.id, node.params) if explicit else node.id
        if key in keys and not (key == node.id and index_of[node.id] != i):  # duplicate id: reported
            at = pointer("nodes", i, "params", "name") if "name" in node.params else pointer("nodes", i, "id")
            message = f"output {key!r} is already written by node {flow.nodes[keys[key]].id!r}"
            problems.append(Problem(at, "duplicate_output", message))
        keys.setdefault(key, i)
        if explicit and not g.predecessors[i]:
            message = f"output node {node.id!r} has no incoming edge, so it has nothing to output"
            problems.append(Problem(pointer("nodes", i), "unconnected_output", message))
    return outputs, keys


def _dead_nodes(flow: Flow, outputs: Sequence[int], g: _Graph, problems: list[Problem]) -> None:
    if not outputs:
        return
    live = graph.reaching(outputs, g.predecessors)
    for node in flow.nodes:
        if node.index not in live and node.index not in g.half_connected:
            message = f"node {node.id!r} does not lead to any output, so it would never matter"
            problems.append(Problem(pointer("nodes", node.index), "dead_node", message))


def _run_inputs(
    ports: Sequence[Ports | None], bound: Sequence[BoundEdge]
) -> tuple[list[dict[str, str]], frozenset[str], frozenset[str]]:
    fed: list[set[str]] = [set() for _ in ports]
    for edge in bound:
        fed[edge.target].add(edge.target_input)
    run_inputs: list[dict[str, str]] = []
    required: set[str] = set()
    optional: set[str] = set()
    for i, node_ports in enumerate(ports):
        if node_ports is None:
            run_inputs.append({})
            continue
        unfed = [p for p in node_ports.inputs if p not in fed[i]]
        run_inputs.append({p: p for p in unfed})
        required.update(p for p in unfed if p in node_ports.required)
        optional.update(p for p in unfed if p not in node_ports.required)
    return run_inputs, frozenset(required), frozenset(optional - required)


_DEFAULT_POLICY: OutboundPolicy | None = None


def _default_policy() -> OutboundPolicy:
    global _DEFAULT_POLICY
    if _DEFAULT_POLICY is None:
        _DEFAULT_POLICY = OutboundPolicy()
    return _DEFAULT_POLICY


def analyse(
    document: Mapping[str, Any], registry: ComponentRegistry, policy: OutboundPolicy | None = None
) -> tuple[list[Problem], Analysis | None]:
    """Apply every semantic rule to a schema-valid document the caller no longer touches (the model
    keeps it), the nodes' secrets and URLs checked against `policy` (default: the default policy); the
    Analysis is returned only if no rule failed."""
    flow = parse_flow(document, copy=False)
    problems: list[Problem] = []
    index_of = _ids(flow, problems)
    classes, ports = _components(flow, registry, policy or _default_policy(), problems)
    g = _edges(flow, index_of, ports, problems)
    order = _cycles(flow, g, problems)
    outputs, keys = _outputs(flow, index_of, classes, g, problems)
    _dead_nodes(flow, outputs, g, problems)
    run_inputs, required, optional = _run_inputs(ports, g.bound)
    problems.extend(check_examples(flow, keys, required))
    if problems or order is None:
        return problems, None
    analysis = Analysis(
        flow=flow,
        classes=tuple(c for c in classes if c is not None),
        ports=tuple(p for p in ports if p is not None),
        edges=tuple(g.bound),
        order=order,
        output_nodes=tuple(outputs),
        run_inputs=tuple(run_inputs),
        required_inputs=required,
        optional_inputs=optional,
    )
    return [], analysis
