"""The parsed flow: frozen dataclasses built from a schema-valid document, plus edge port binding.

>>> flow = parse_flow({"nodes": [{"id": "a", "type": "T"}], "edges": []})
>>> flow.nodes[0].id, dict(flow.nodes[0].params), flow.name
('a', {}, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from cluster.components.base import Ports


@dataclass(frozen=True)
class Node:
    """One component instance of the flow; `index` is its position in the document's `nodes`."""

    index: int
    id: str
    type: str
    params: Mapping[str, Any]
    timeout_s: float | None = None


@dataclass(frozen=True)
class Edge:
    """A connection as written; a missing port means "the default one" (see `bind_edge`)."""

    index: int
    source: str
    target: str
    source_output: str | None = None
    target_input: str | None = None


@dataclass(frozen=True)
class Expectation:
    """Checks on one output of an example run; unset checks are not applied."""

    key: str
    checks: Mapping[str, Any]


@dataclass(frozen=True)
class FlowTest:
    """An example run stored in the document: inputs and what the outputs must satisfy."""

    index: int
    name: str
    inputs: Mapping[str, Any]
    expect: tuple[Expectation, ...] = ()
    # node id -> the text an LLM node replies in this example's offline run (see cluster.flow.examples).
    replies: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowApi:
    """What callers of the run API may choose per call (the document's `api`).

    `tweaks`: node id -> the params of that node a caller may override for one run (no entry, or no
    params: none; an empty mapping: tweaks are off). `version_selection`: whether a caller may ask for a
    specific version of the flow.

    >>> FlowApi().tweaks_on, FlowApi(MappingProxyType({"llm": frozenset({"temperature"})})).tweaks_on
    (False, True)
    """

    tweaks: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    version_selection: bool = False

    @property
    def tweaks_on(self) -> bool:
        return bool(self.tweaks)


@dataclass(frozen=True)
class Flow:
    name: str | None
    description: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    tests: tuple[FlowTest, ...] = ()
    api: FlowApi = field(default_factory=FlowApi)


@dataclass(frozen=True)
class BoundEdge:
    """An edge with both ports resolved against the components' declared ports."""

    index: int
    source: int
    target: int
    source_output: str
    target_input: str


class UnboundPort(ValueError):
    """An edge names no port and the component declares no default for that side."""


def parse_flow(document: Mapping[str, Any], *, copy: bool = True) -> Flow:
    """Build the model from a document that passed `cluster.flow.schema.DOCUMENT_SCHEMA`.

    The model takes a private deep copy, so it never changes when the caller mutates the document;
    `copy=False` is for a caller that already holds one no one else can reach.
    """
    if copy:
        document = orjson.loads(orjson.dumps(document))
    nodes = tuple(
        Node(
            index=i,
            id=raw["id"],
            type=raw["type"],
            params=raw.get("params", {}),
            timeout_s=float(raw["timeout_s"]) if "timeout_s" in raw else None,
        )
        for i, raw in enumerate(document["nodes"])
    )
    edges = tuple(
        Edge(
            index=i,
            source=raw["source"],
            target=raw["target"],
            source_output=raw.get("source_output"),
            target_input=raw.get("target_input"),
        )
        for i, raw in enumerate(document.get("edges", ()))
    )
    tests = tuple(
        FlowTest(
            index=i,
            name=raw["name"],
            inputs=MappingProxyType(raw["inputs"]),
            replies=MappingProxyType(raw.get("replies", {})),
            expect=tuple(
                Expectation(key=key, checks=MappingProxyType(checks))
                for key, checks in raw.get("expect", {}).items()
            ),
        )
        for i, raw in enumerate(document.get("tests", ()))
    )
    return Flow(
        name=document.get("name"),
        description=document.get("description", ""),
        nodes=nodes,
        edges=edges,
        tests=tests,
        api=parse_api(document.get("api", {})),
    )


def parse_api(api: Mapping[str, Any]) -> FlowApi:
    """The model of a schema-valid `api` object; a node listing no params is left out of `tweaks`.

    >>> parse_api({"tweaks": {"llm": ["temperature"], "p": []}})
    FlowApi(tweaks=mappingproxy({'llm': frozenset({'temperature'})}), version_selection=False)
    """
    tweaks = {node_id: frozenset(params) for node_id, params in api.get("tweaks", {}).items() if params}
    return FlowApi(MappingProxyType(tweaks), bool(api.get("version_selection", False)))


def bind_ports(edge: Edge, source: Ports, target: Ports) -> tuple[str, str]:
    """Resolve an edge's ports: a missing `source_output` reads the source's default output, a missing
    `target_input` feeds the target's default input. Raises UnboundPort when the target has no default.

    >>> bind_ports(Edge(0, "a", "b"), Ports(), Ports(inputs=("prompt",), default_input="prompt"))
    ('output', 'prompt')
    """
    source_output = edge.source_output if edge.source_output is not None else source.default_output
    if edge.target_input is not None:
        return source_output, edge.target_input
    if target.default_input is None:
        raise UnboundPort(f"node {edge.target!r} has no default input; name one with target_input")
    return source_output, target.default_input
