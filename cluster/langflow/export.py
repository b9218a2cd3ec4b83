"""Reading a LangFlow export: its nodes, field values and edges, as plain frozen data.

LangFlow writes two shapes. The full export (what "Export" in the editor saves) is
``{"name", "description", "data": {"nodes": [...], "edges": [...]}}`` where each node is a React Flow
node ``{"id", "type": "genericNode", "position", "data": {"id", "type": "ChatInput", "node": {...}}}``.
The slim form carries only the ``data`` dictionaries: ``{"nodes": [{"id", "type", "node"}], "edges":
[...]}``. Edges name their ports in ``data.sourceHandle.name`` / ``data.targetHandle.fieldName`` or, in
older or hand-trimmed files, only in the ``sourceHandle`` / ``targetHandle`` strings, which are JSON
with ``œ`` in place of every double quote.

Nothing here runs or keeps component code: ``template.code`` is never read.

>>> parse_handle('{œfieldNameœ: œinput_valueœ, œidœ: œLLM-1œ}')
{'fieldName': 'input_value', 'id': 'LLM-1'}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# React Flow's node type for annotations; the inner `data.type` is "note" in recent exports and
# missing altogether in older ones.
NOTE_TYPES = frozenset({"noteNode", "note"})
# Template keys that are not fields: the component's class source and LangFlow's own marker.
_NOT_FIELDS = frozenset({"code", "_type"})


class ExportShapeError(ValueError):
    """The document is not shaped like a LangFlow export; `problems` says where and why."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class LfNode:
    """One LangFlow component: `fields` maps each template field to its value (never `code`)."""

    id: str
    type: str
    display_name: str
    fields: Mapping[str, Any]
    # Field names whose value LangFlow loads from a global variable of that name (`load_from_db`).
    from_variables: frozenset[str] = frozenset()
    # True when the user changed the component's code in the editor: its behaviour is no longer the
    # built-in one, so it cannot be mapped onto a flowfleet component.
    edited: bool = False
    description: str = ""


@dataclass(frozen=True)
class LfEdge:
    """One connection: `source_output` is the output name, `target_field` the input field name."""

    index: int
    source: str
    target: str
    source_output: str | None
    target_field: str | None


@dataclass(frozen=True)
class LfFlow:
    name: str | None
    description: str
    nodes: tuple[LfNode, ...]
    notes: tuple[LfNode, ...]
    edges: tuple[LfEdge, ...]
    # Nodes whose shape is too broken to read (no id, data not an object); reported, not guessed at.
    problems: tuple[str, ...] = field(default=())


def parse_handle(value: Any) -> dict[str, Any]:
    """Decode a handle: already a dict, or LangFlow's string with ``œ`` for ``"``; {} when unreadable."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str) or not value:
        return {}
    try:
        decoded = json.loads(value.replace("œ", '"'))
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def graph_of(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The mapping holding `nodes` and `edges`: `doc["data"]` for a full export, else `doc` itself."""
    data = doc.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("nodes"), list):
        return data
    if isinstance(doc.get("nodes"), list):
        return doc
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _looks_like_langflow_node(node: Any) -> bool:
    if not isinstance(node, Mapping):
        return False
    data = node.get("data")
    # Full form: a React Flow node around a data dict; slim form: the data dict with its `node`.
    return isinstance(data, Mapping) or isinstance(node.get("node"), Mapping)


def is_langflow_export(doc: Any) -> bool:
    """Whether `doc` has the shape of a LangFlow export (full or slim) rather than a flowfleet flow.

    A flowfleet document never has a top-level `data` and its nodes carry `params`, never `data` or
    `node`, so the two cannot be confused.

    >>> is_langflow_export({"data": {"nodes": [], "edges": []}})
    True
    >>> is_langflow_export({"nodes": [{"id": "a", "type": "LLM", "params": {}}]})
    False
    """
    if not isinstance(doc, Mapping):
        return False
    data = doc.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("nodes"), list):
        return True
    nodes = doc.get("nodes")
    return isinstance(nodes, list) and any(_looks_like_langflow_node(n) for n in nodes)


def _field_values(template: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    values: dict[str, Any] = {}
    from_variables: set[str] = set()
    for key, spec in template.items():
        if key in _NOT_FIELDS or not isinstance(spec, Mapping):
            continue
        values[key] = spec.get("value")
        if spec.get("load_from_db") is True:
            from_variables.add(key)
    return values, frozenset(from_variables)


def _read_node(raw: Any, position: int) -> LfNode | str:
    """An LfNode, or a message saying why the node at `position` cannot be read."""
    if not isinstance(raw, Mapping):
        return f"nodes[{position}] is not an object"
    data = _mapping(raw.get("data")) if isinstance(raw.get("data"), Mapping) else raw
    node = _mapping(data.get("node"))
    node_id = raw.get("id") if isinstance(raw.get("id"), str) else data.get("id")
    if not isinstance(node_id, str) or not node_id:
        return f"nodes[{position}] has no id"
    outer_type = raw.get("type") if "data" in raw else None
    inner_type = data.get("type")
    template = _mapping(node.get("template"))
    if outer_type in NOTE_TYPES or inner_type in NOTE_TYPES:
        component_type = "note"
    elif isinstance(inner_type, str) and inner_type:
        component_type = inner_type
    elif not any(isinstance(v, Mapping) for v in template.values()):
        # Older exports write notes without any type; a note's template holds only its colour.
        component_type = "note"
    else:
        component_type = ""
    values, from_variables = _field_values(template)
    display = node.get("display_name") or data.get("display_name") or ""
    description = node.get("description") or data.get("description") or ""
    return LfNode(
        id=node_id,
        type=component_type,
        display_name=display if isinstance(display, str) else "",
        fields=values,
        from_variables=from_variables,
        edited=node.get("edited") is True,
        description=description if isinstance(description, str) else "",
    )


def _read_edge(raw: Any, index: int) -> LfEdge | str:
    if not isinstance(raw, Mapping):
        return f"edges[{index}] is not an object"
    data = _mapping(raw.get("data"))
    source_handle = parse_handle(data.get("sourceHandle")) or parse_handle(raw.get("sourceHandle"))
    target_handle = parse_handle(data.get("targetHandle")) or parse_handle(raw.get("targetHandle"))
    # The slim form may drop `source`/`target`; the handles carry the same node ids.
    source = raw.get("source") or source_handle.get("id")
    target = raw.get("target") or target_handle.get("id")
    if not isinstance(source, str) or not isinstance(target, str) or not source or not target:
        return f"edges[{index}] does not name its source and target nodes"
    output = source_handle.get("name")
    field_name = target_handle.get("fieldName")
    return LfEdge(
        index=index,
        source=source,
        target=target,
        source_output=output if isinstance(output, str) and output else None,
        target_field=field_name if isinstance(field_name, str) and field_name else None,
    )


def read_export(doc: Mapping[str, Any]) -> LfFlow:
    """Read a LangFlow export into an LfFlow; raises ExportShapeError when it has no nodes list."""
    graph = graph_of(doc)
    if graph is None:
        raise ExportShapeError(["not a LangFlow export: expected `data.nodes` or `nodes` to be a list"])
    raw_edges = graph.get("edges", [])
    if not isinstance(raw_edges, list):
        raise ExportShapeError(["`edges` must be a list"])
    problems: list[str] = []
    nodes: list[LfNode] = []
    notes: list[LfNode] = []
    for position, raw in enumerate(graph["nodes"]):
        read = _read_node(raw, position)
        if isinstance(read, str):
            problems.append(read)
        elif read.type == "note":
            notes.append(read)
        else:
            nodes.append(read)
    edges: list[LfEdge] = []
    for index, raw in enumerate(raw_edges):
        edge = _read_edge(raw, index)
        if isinstance(edge, str):
            problems.append(edge)
        else:
            edges.append(edge)
    name = doc.get("name")
    description = doc.get("description")
    return LfFlow(
        name=name if isinstance(name, str) and name.strip() else None,
        description=description if isinstance(description, str) else "",
        nodes=tuple(nodes),
        notes=tuple(notes),
        edges=tuple(edges),
        problems=tuple(problems),
    )
