"""Convert a LangFlow export into a flowfleet flow document (pure: data in, data out).

>>> doc = {"name": "Hello", "data": {"nodes": [
...     {"id": "ChatInput-a", "data": {"type": "ChatInput", "node": {"template": {}}}},
...     {"id": "ChatOutput-b", "data": {"type": "ChatOutput", "node": {"template": {}}}}],
...   "edges": [{"source": "ChatInput-a", "target": "ChatOutput-b", "data": {
...       "sourceHandle": {"name": "message"}, "targetHandle": {"fieldName": "input_value"}}}]}}
>>> flow = convert(doc)
>>> flow["name"], [n["type"] for n in flow["nodes"]], flow["edges"][0]["target_input"]
('hello', ['ChatInput', 'ChatOutput'], 'message')
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster.langflow.agents import AGENT_CONVERTERS
from cluster.langflow.errors import LangflowImportError, UnsupportedNode
from cluster.langflow.export import ExportShapeError, LfEdge, LfFlow, is_langflow_export, read_export
from cluster.langflow.memory import MEMORY_CONVERTERS
from cluster.langflow.models import MODEL_TYPES, convert_model, convert_structured_output
from cluster.langflow.nodes import (
    CONVERTERS,
    DEFAULT_MODEL,
    INPUT_TYPES,
    Converter,
    Mapped,
    NodeContext,
    Provider,
)
from cluster.langflow.tools import TOOL_CONVERTERS, TOOL_OUTPUT, TOOL_SOURCE, TOOLS_FIELD, tool_name_of
from cluster.names import check_flow_name

logger = logging.getLogger(__name__)

ALL_CONVERTERS: dict[str, Converter] = {
    **CONVERTERS,
    **dict.fromkeys(MODEL_TYPES, convert_model),
    "StructuredOutput": convert_structured_output,
    **TOOL_CONVERTERS,
    **AGENT_CONVERTERS,
    **MEMORY_CONVERTERS,
}
PROVIDERS: tuple[Provider, ...] = ("openai", "echo")

_ID_BAD = re.compile(r"[^A-Za-z0-9_.:-]+")
_NAME_BAD = re.compile(r"[^a-z0-9_.-]+")
_INPUT_BAD = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True)
class Conversion:
    """The converted flowfleet document and what was dropped or approximated on the way."""

    document: dict[str, Any]
    warnings: tuple[str, ...]


def flow_name(title: str) -> str | None:
    """A flowfleet flow name from a LangFlow title: "Basic Prompting" → "basic_prompting"."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    slug = _NAME_BAD.sub("_", ascii_title).strip("_.-")[:128]
    return slug or None


def _node_ids(flow: LfFlow) -> dict[str, str]:
    """LangFlow id → flowfleet id; LangFlow's "Type-abc12" ids are kept, anything else made to fit."""
    taken: set[str] = set()
    ids: dict[str, str] = {}
    for node in flow.nodes:
        candidate = _ID_BAD.sub("_", node.id)[:100]
        if not candidate[0].isalnum() and candidate[0] != "_":
            candidate = "_" + candidate
        unique, n = candidate, 2
        while unique in taken:
            unique, n = f"{candidate}_{n}", n + 1
        taken.add(unique)
        ids[node.id] = unique
    return ids


def _input_names(flow: LfFlow, ids: Mapping[str, str]) -> dict[str, str]:
    """The run input each input component reads: "input" for a flow's only one, else from its id."""
    inputs = [n for n in flow.nodes if n.type in INPUT_TYPES]
    if len(inputs) == 1:
        return {inputs[0].id: "input"}
    names = {}
    for node in inputs:
        name = _INPUT_BAD.sub("_", ids[node.id]).strip("_") or "input"
        names[node.id] = name if not name[0].isdigit() else "_" + name
    return names


def _description(flow: LfFlow, keep_notes: bool) -> str:
    notes = [n.description.strip() for n in flow.notes if n.description.strip()] if keep_notes else []
    return "\n\n".join([flow.description.strip(), *notes]).strip()


def _map_nodes(
    flow: LfFlow, ids: Mapping[str, str], provider: Provider, model: str
) -> tuple[dict[str, Mapped], list[UnsupportedNode]]:
    connected: dict[str, set[str]] = {}
    used: dict[str, set[str]] = {}
    tools: set[str] = set()
    tool_names: dict[str, set[str]] = {}
    by_id = {node.id: node for node in flow.nodes}
    for edge in flow.edges:
        if edge.target_field:
            connected.setdefault(edge.target, set()).add(edge.target_field)
        used.setdefault(edge.source, set()).add(edge.source_output or "")
        if edge.source_output == TOOL_OUTPUT:
            tools.add(edge.source)
            if edge.target_field == TOOLS_FIELD and edge.source in by_id:
                name = tool_name_of(by_id[edge.source], ids[edge.source])
                tool_names.setdefault(edge.target, set()).add(name)
    input_names = _input_names(flow, ids)
    mapped: dict[str, Mapped] = {}
    unsupported: list[UnsupportedNode] = []
    for node in flow.nodes:
        shown_type = node.type or "(no type)"
        converter = ALL_CONVERTERS.get(node.type)
        if converter is None:
            unsupported.append(UnsupportedNode(node.id, shown_type, "no flowfleet equivalent"))
            continue
        if node.edited:
            # The built-in mapping would describe the stock component, not what this one's code does.
            unsupported.append(
                UnsupportedNode(node.id, shown_type, "its code was edited; embedded code is never run")
            )
            continue
        ctx = NodeContext(
            node_id=ids[node.id],
            connected=frozenset(connected.get(node.id, ())),
            input_name=input_names.get(node.id, "input"),
            provider=provider,
            as_tool=node.id in tools,
            model=model,
            outputs_used=frozenset(used.get(node.id, ())),
            tool_names=frozenset(tool_names.get(node.id, ())),
        )
        result = converter(node, ctx)
        if isinstance(result, Mapped):
            mapped[node.id] = result
        else:
            unsupported.append(UnsupportedNode(node.id, shown_type, result.reason))
    return mapped, unsupported


def _map_edge(
    edge: LfEdge, flow_ids: Mapping[str, str], mapped: Mapping[str, Mapped], types: Mapping[str, str]
) -> dict[str, Any] | str | None:
    """The flowfleet edge, a problem message, or None when an end is an already reported component."""
    where = f"edge {edge.index} ({edge.source} -> {edge.target})"
    for end in (edge.source, edge.target):
        if end not in flow_ids:
            return f"{where}: there is no node {end!r}"
    if edge.source not in mapped or edge.target not in mapped:
        return None
    source, target = mapped[edge.source], mapped[edge.target]
    output = source.outputs.get(edge.source_output) if edge.source_output else source.default_output
    if output is None:
        return f"{where}: output {edge.source_output!r} of {types[edge.source]} has no flowfleet equivalent"
    result: dict[str, Any] = {"source": flow_ids[edge.source], "target": flow_ids[edge.target]}
    port = target.inputs.get(edge.target_field) if edge.target_field is not None else None
    if edge.target_field is not None and port is None:
        return f"{where}: field {edge.target_field!r} of {types[edge.target]} cannot be fed by an edge"
    if output == TOOL_SOURCE or port == "tools":
        # A tool edge attaches its source as a tool: no value flows, so it names no output.
        if output != TOOL_SOURCE or port != "tools":
            return (
                f"{where}: only a component's {TOOL_OUTPUT!r} output may feed an Agent's tools, "
                "and it may feed nothing else"
            )
        result["target_input"] = port
        return result
    result["source_output"] = output
    if port is not None:
        result["target_input"] = port
    return result


def _map_edges(
    flow: LfFlow, ids: Mapping[str, str], mapped: Mapping[str, Mapped]
) -> tuple[list[dict[str, Any]], list[str]]:
    types = {n.id: n.type for n in flow.nodes}
    edges: list[dict[str, Any]] = []
    problems: list[str] = []
    fed: dict[tuple[str, str], int] = {}
    for edge in flow.edges:
        result = _map_edge(edge, ids, mapped, types)
        if result is None:
            continue
        if isinstance(result, str):
            problems.append(result)
            continue
        port = (result["target"], result.get("target_input", ""))
        # A tools port takes any number of tool edges; every other input takes one edge.
        if "source_output" in result and port in fed:
            problems.append(
                f"edge {edge.index}: field {edge.target_field!r} of {edge.target} is already fed by edge "
                f"{fed[port]}; a flowfleet input takes one edge"
            )
            continue
        fed[port] = edge.index
        edges.append(result)
    return edges, problems


def translate(
    doc: Any,
    *,
    name: str | None = None,
    provider: Provider = "openai",
    keep_notes: bool = False,
    model: str = DEFAULT_MODEL,
) -> Conversion:
    """Convert a LangFlow export; raises LangflowImportError listing every unsupported component.

    `name` overrides the flow name derived from the export's; `provider="echo"` turns every language
    model into flowfleet's offline echo model (for trying an export without an API key);
    `keep_notes` appends the text of LangFlow's note nodes to the description; `model` is the OpenAI
    model of a language model, Agent or StructuredOutput whose model is empty (LangFlow 1.13's starter
    projects leave it to be picked when the flow is opened), each such use reported in the warnings.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model must be a non-empty model name")
    if name is not None:
        check_flow_name(name)
    if not is_langflow_export(doc):
        raise LangflowImportError(problems=["not a LangFlow export: expected `data.nodes` or `nodes`"])
    try:
        flow = read_export(doc)
    except ExportShapeError as e:
        raise LangflowImportError(problems=e.problems) from None
    problems = list(flow.problems)
    if not flow.nodes and not problems:
        problems.append("the export has no components (only notes or nothing)")
    seen: set[str] = set()
    for node in flow.nodes:
        if node.id in seen:
            problems.append(f"node id {node.id!r} is used more than once")
        seen.add(node.id)
    ids = _node_ids(flow)
    mapped, unsupported = _map_nodes(flow, ids, provider, model.strip())
    edges, edge_problems = _map_edges(flow, ids, mapped)
    problems.extend(edge_problems)
    if unsupported or problems:
        raise LangflowImportError(unsupported, problems)
    document: dict[str, Any] = {}
    title = name or (flow_name(flow.name) if flow.name else None)
    if title:
        document["name"] = title
    description = _description(flow, keep_notes)
    if description:
        document["description"] = description
    document["nodes"] = [n for m in mapped.values() for n in m.nodes]
    document["edges"] = [e for m in mapped.values() for e in m.edges] + edges
    warnings = tuple(w for m in mapped.values() for w in m.warnings)
    for warning in warnings:
        logger.info("langflow import: %s", warning)
    return Conversion(document=document, warnings=warnings)


def convert(
    doc: Any,
    *,
    name: str | None = None,
    provider: Provider = "openai",
    keep_notes: bool = False,
    model: str = DEFAULT_MODEL,
) -> dict[str, Any]:
    """The flowfleet document for a LangFlow export; see `translate` for the options and errors.

    The control API and `flowfleet publish`/`sync` convert with the defaults: provider openai and
    DEFAULT_MODEL for an empty model (the warnings are logged)."""
    return translate(doc, name=name, provider=provider, keep_notes=keep_notes, model=model).document
