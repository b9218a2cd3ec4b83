"""Node, edge and param level differences between two flow documents (pure; no I/O).

>>> old = {"nodes": [{"id": "p", "type": "PromptTemplate", "params": {"template": "Hi {x}"}}], "edges": []}
>>> new = {"nodes": [{"id": "p", "type": "PromptTemplate", "params": {"template": "Hello {x}"}}], "edges": []}
>>> diff_documents(old, new).nodes_changed[0].params[0].as_dict()
{'path': '/template', 'kind': 'changed', 'old': 'Hi {x}', 'new': 'Hello {x}'}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Edge identity: which output of which node feeds which input of which node. Other edge fields
# (ids, styling carried over from editors) do not change what the flow computes.
EDGE_FIELDS = ("source", "source_output", "target", "target_input")
STRUCTURAL_KEYS = frozenset({"nodes", "edges"})
NODE_KEYS = frozenset({"id", "type", "params"})


@dataclass(frozen=True)
class ValueChange:
    """One leaf that differs; `path` is a JSON pointer relative to the compared object."""

    path: str
    kind: str  # "added" | "removed" | "changed"
    old: Any = None
    new: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class NodeChange:
    id: str
    old_type: Any
    new_type: Any
    params: tuple[ValueChange, ...]
    # Node keys besides id/type/params (editor positions, labels), paths relative to the node.
    other: tuple[ValueChange, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "params": [c.as_dict() for c in self.params]}
        if self.other:
            out["other"] = [c.as_dict() for c in self.other]
        if self.old_type != self.new_type:
            out["type"] = {"old": self.old_type, "new": self.new_type}
        return out


@dataclass(frozen=True)
class FlowDiff:
    nodes_added: tuple[dict[str, Any], ...] = ()
    nodes_removed: tuple[dict[str, Any], ...] = ()
    nodes_changed: tuple[NodeChange, ...] = ()
    edges_added: tuple[dict[str, Any], ...] = ()
    edges_removed: tuple[dict[str, Any], ...] = ()
    # Everything outside nodes/edges (name, description, tests ...), compared leaf by leaf.
    fields: tuple[ValueChange, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not (
            self.nodes_added
            or self.nodes_removed
            or self.nodes_changed
            or self.edges_added
            or self.edges_removed
            or self.fields
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": {
                "added": list(self.nodes_added),
                "removed": list(self.nodes_removed),
                "changed": [c.as_dict() for c in self.nodes_changed],
            },
            "edges": {"added": list(self.edges_added), "removed": list(self.edges_removed)},
            "fields": [c.as_dict() for c in self.fields],
            "empty": self.empty,
        }


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def diff_values(old: Any, new: Any, path: str = "") -> list[ValueChange]:
    """Leaf-level changes between two JSON values; objects by key, arrays by index.

    >>> [(c.path, c.kind) for c in diff_values({"a": [1, 2]}, {"a": [1, 3], "b": True})]
    [('/a/1', 'changed'), ('/b', 'added')]
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changes: list[ValueChange] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}/{_escape(str(key))}"
            if key not in new:
                changes.append(ValueChange(sub, "removed", old=old[key]))
            elif key not in old:
                changes.append(ValueChange(sub, "added", new=new[key]))
            else:
                changes.extend(diff_values(old[key], new[key], sub))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for i in range(max(len(old), len(new))):
            sub = f"{path}/{i}"
            if i >= len(new):
                changes.append(ValueChange(sub, "removed", old=old[i]))
            elif i >= len(old):
                changes.append(ValueChange(sub, "added", new=new[i]))
            else:
                changes.extend(diff_values(old[i], new[i], sub))
        return changes
    # bool is an int subclass in Python; True vs 1 is still a change in JSON.
    if type(old) is not type(new) or old != new:
        return [ValueChange(path, "changed", old=old, new=new)]
    return []


def _nodes_by_id(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    nodes = doc.get("nodes")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(nodes, list):
        for node in nodes:
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out[node["id"]] = node
    return out


def _edge_key(edge: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(edge.get(f, "")) for f in EDGE_FIELDS)


def _edges(doc: Mapping[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    edges = doc.get("edges")
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    if isinstance(edges, list):
        for edge in edges:
            if isinstance(edge, dict):
                out.setdefault(_edge_key(edge), {f: edge[f] for f in EDGE_FIELDS if f in edge})
    return out


def _node_changes(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[NodeChange]:
    changed: list[NodeChange] = []
    for node_id in sorted(set(old) & set(new)):
        a, b = old[node_id], new[node_id]
        params = diff_values(a.get("params", {}), b.get("params", {}))
        other = diff_values(
            {k: v for k, v in a.items() if k not in NODE_KEYS},
            {k: v for k, v in b.items() if k not in NODE_KEYS},
        )
        if params or other or a.get("type") != b.get("type"):
            changed.append(NodeChange(node_id, a.get("type"), b.get("type"), tuple(params), tuple(other)))
    return changed


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any]) -> FlowDiff:
    """What changed from `old` to `new`: nodes by id, edges by endpoints, params by JSON pointer."""
    old_nodes, new_nodes = _nodes_by_id(old), _nodes_by_id(new)
    old_edges, new_edges = _edges(old), _edges(new)
    old_rest = {k: v for k, v in old.items() if k not in STRUCTURAL_KEYS}
    new_rest = {k: v for k, v in new.items() if k not in STRUCTURAL_KEYS}
    return FlowDiff(
        nodes_added=tuple(new_nodes[i] for i in sorted(set(new_nodes) - set(old_nodes))),
        nodes_removed=tuple(old_nodes[i] for i in sorted(set(old_nodes) - set(new_nodes))),
        nodes_changed=tuple(_node_changes(old_nodes, new_nodes)),
        edges_added=tuple(new_edges[k] for k in sorted(set(new_edges) - set(old_edges))),
        edges_removed=tuple(old_edges[k] for k in sorted(set(old_edges) - set(new_edges))),
        fields=tuple(diff_values(old_rest, new_rest)),
    )
