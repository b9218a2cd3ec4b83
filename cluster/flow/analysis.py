"""The semantic rules of a schema-valid flow document, and what the compiler needs from them.

Rules: unique node ids, known component types (with the closest known name suggested), params that fit
each component's schema and its own checks, secrets and URLs that the operator's outbound policy allows,
edges between existing nodes and ports, no cycles, at least one output, every node contributing to an
output, examples (`tests`) that name real outputs, and an `api.tweaks` allow-list naming real params
that callers may change (`cluster.flow.tweaks`). The edge rules are in `cluster.flow.wiring`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from cluster.components.base import Component, Ports
from cluster.egress.policy import Outbound, OutboundPolicy, secret_names, service_names
from cluster.errors import Problem
from cluster.flow.examples import check_examples
from cluster.flow.model import BoundEdge, Flow, parse_flow
from cluster.flow.schemacheck import SchemaChecker, pointer, shorten
from cluster.flow.tools import tool_wiring
from cluster.flow.tweaks import tweak_problems
from cluster.flow.wiring import Graph, bind_edges, dead_nodes, order_or_cycles, unfed_inputs

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
    # Tool nodes (cluster/flow/tools.py) and the edges that attach them; `edges` holds the others.
    tool_nodes: frozenset[int] = frozenset()
    tool_edges: tuple[BoundEdge, ...] = ()


@lru_cache(maxsize=256)
def params_checker(cls: type[Component]) -> SchemaChecker:
    """The (cached) checker of a component's params schema. Raises jsonschema's SchemaError, or
    whatever a broken plugin schema raises, when the schema is unusable."""
    return SchemaChecker(cls.params_schema, "invalid_params")


def warm_up(registry: ComponentRegistry | None = None) -> list[str]:
    """Do ahead of time what would otherwise slow down the first compile in a fresh process: load the
    registry (built-in component modules and plugins) and build every registered component's params
    validator. Returns the type names whose validator is ready. A component whose params schema is
    unusable is logged and left out; compiling a flow that uses it reports that as a problem, as ever.
    Safe to call more than once (a later call finds everything cached) and from any thread.
    """
    if registry is None:
        from cluster.components.registry import default_registry  # imports every built-in component

        registry = default_registry()
    ready: list[str] = []
    for name in registry.names():
        cls = registry.get(name)
        if cls is None:
            continue
        try:
            params_checker(cls)
        except Exception as e:  # a plugin's schema is code we do not control
            logger.warning("params schema of component %s is unusable: %s", name, e)
            continue
        ready.append(name)
    return ready


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


def output_key(node_id: str, params: Mapping[str, Any]) -> str:
    """The run-output key of an explicit output node: `params.name`, else the node id (as in
    `Component.output_name`)."""
    name = params.get("name")
    return name if isinstance(name, str) and name else node_id


def _outputs(
    flow: Flow,
    index_of: Mapping[str, int],
    classes: Sequence[type[Component] | None],
    g: Graph,
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


DEFAULT_POLICY = OutboundPolicy()


def analyse(
    document: Mapping[str, Any], registry: ComponentRegistry, policy: OutboundPolicy | None = None
) -> tuple[list[Problem], Analysis | None]:
    """Apply every semantic rule to a schema-valid document the caller no longer touches (the model
    keeps it), the nodes' secrets and URLs checked against `policy` (default: the default policy); the
    Analysis is returned only if no rule failed."""
    flow = parse_flow(document, copy=False)
    problems: list[Problem] = []
    index_of = _ids(flow, problems)
    classes, ports = _components(flow, registry, policy or DEFAULT_POLICY, problems)
    problems.extend(tweak_problems(document.get("api", {}).get("tweaks", {}), flow, index_of, classes))
    g = bind_edges(flow, index_of, ports, problems)
    order = order_or_cycles(flow, g, problems)
    outputs, keys = _outputs(flow, index_of, classes, g, problems)
    dead_nodes(flow, outputs, g, problems)
    tools = tool_wiring(flow, classes, ports, g.bound, problems)
    run_inputs, required, optional = unfed_inputs(ports, tools.data_edges, tools.nodes)
    problems.extend(check_examples(flow, keys, required))
    if problems or order is None:
        return problems, None
    analysis = Analysis(
        flow=flow,
        classes=tuple(c for c in classes if c is not None),
        ports=tuple(p for p in ports if p is not None),
        edges=tools.data_edges,
        order=order,
        output_nodes=tuple(outputs),
        run_inputs=tuple(run_inputs),
        required_inputs=required,
        optional_inputs=optional,
        tool_nodes=tools.nodes,
        tool_edges=tools.edges,
    )
    return [], analysis


def _uses(analysis: Analysis) -> list[Outbound]:
    nodes = zip(analysis.flow.nodes, analysis.classes, strict=True)
    return [use for node, cls in nodes for use in cls.outbound(node.params)]


def needed_secrets(analysis: Analysis) -> list[str]:
    """The names of the secrets a valid flow's nodes use."""
    return secret_names(_uses(analysis))


def needed_services(analysis: Analysis) -> list[str]:
    """The operator services (`web_search`) a valid flow's nodes use."""
    return service_names(_uses(analysis))
