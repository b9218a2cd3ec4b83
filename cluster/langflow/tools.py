"""LangFlow's tool-mode components as flowfleet tool nodes (the Agent itself: `cluster.langflow.agents`).

In LangFlow a component becomes a tool when its `component_as_tool` output (the "Toolset" handle of a
component in tool mode) is wired into an Agent's `tools` field; the converter turns such edges into
flowfleet tool edges (`target_input: "tools"`, no `source_output`). A tool's name and description come
from the component's `tools_metadata` (what the editor's tool-mode table edits), else the node id and
the component's description.

Mapped tools: `CalculatorComponent` → Calculator, `CurrentDateComponent` → CurrentDate, `URLComponent`
→ URLFetch (its `urls` give `allowed_domains`; no URLs give `["*"]`, any host, with a warning), the
search components → WebSearch, and an Agent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cluster.langflow.export import LfNode
from cluster.langflow.nodes import Converter, Mapped, NodeContext, Unsupported, text_field

# The output LangFlow adds to a component in tool mode; an edge from it into `tools` attaches a tool.
TOOL_OUTPUT = "component_as_tool"
# What `Mapped.outputs` maps TOOL_OUTPUT to: not a port, a marker for the edge mapping.
TOOL_SOURCE = "\x00tool"
TOOLS_FIELD = "tools"
MAX_TOOL_DESCRIPTION = 2000
MAX_SEARCH_RESULTS = 10
MAX_FETCH_TIMEOUT_S = 120.0
MAX_DOMAINS = 100
# URLFetch's `allowed_domains` entry for "any host the egress policy allows" (its ANY_HOST).
ANY_HOST = "*"
_TOOL_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")


def tool_name(text: str) -> str:
    """A flowfleet tool name (`^[A-Za-z0-9_-]{1,64}$`) from a LangFlow one; "" when nothing is left.

    >>> tool_name("Evaluate expression!"), tool_name("get.current:date")
    ('Evaluate_expression', 'get_current_date')
    """
    return _TOOL_NAME_BAD.sub("_", text).strip("_")[:64]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _tool_metadata(node: LfNode) -> Mapping[str, Any]:
    """The first enabled entry of `tools_metadata` (LangFlow's tool-mode table), or {}."""
    entries = node.fields.get("tools_metadata")
    if not isinstance(entries, list):
        return {}
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("status") is not False:
            return entry
    return {}


def tool_name_of(node: LfNode, node_id: str) -> str:
    """The `tool_name` a node gets as a tool: its `tools_metadata` name, else its flowfleet id."""
    raw_name = _tool_metadata(node).get("name")
    name = tool_name(raw_name) if isinstance(raw_name, str) else ""
    return name or tool_name(node_id) or "tool"


def tool_params(node: LfNode, ctx: NodeContext) -> dict[str, Any]:
    """`tool_name` / `tool_description` of a node used as a tool; {} when it is not one."""
    if not ctx.as_tool:
        return {}
    meta = _tool_metadata(node)
    params: dict[str, Any] = {"tool_name": tool_name_of(node, ctx.node_id)}
    raw_description = meta.get("description")
    description = raw_description if isinstance(raw_description, str) else ""
    description = description.strip() or node.description.strip()
    if description:
        params["tool_description"] = description[:MAX_TOOL_DESCRIPTION]
    return params


def _tool_outputs(ctx: NodeContext, outputs: Mapping[str, str]) -> dict[str, str]:
    return {**outputs, TOOL_OUTPUT: TOOL_SOURCE} if ctx.as_tool else dict(outputs)


def _only_as_tool(node: LfNode) -> Unsupported:
    return Unsupported(
        f"{node.type} is supported only in tool mode, wired into an Agent's tools (its {TOOL_OUTPUT} output)"
    )


def convert_calculator(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    main = {"id": ctx.node_id, "type": "Calculator", "params": tool_params(node, ctx)}
    return Mapped(
        nodes=(main,),
        inputs={"expression": "expression"},
        outputs=_tool_outputs(ctx, {"result": "result"}),
        default_output="result",
    )


def convert_current_date(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    params = tool_params(node, ctx)
    timezone = text_field(node, "timezone").strip()
    if timezone:
        params["timezone"] = timezone
    main = {"id": ctx.node_id, "type": "CurrentDate", "params": params}
    return Mapped(
        nodes=(main,),
        inputs={"timezone": "timezone"},
        outputs=_tool_outputs(ctx, {"current_date": "text"}),
        default_output="text",
    )


def _hosts(urls: list[str]) -> tuple[list[str], list[str]]:
    """(allowed domains, unreadable URLs) from LangFlow's URL list; a URL without scheme is https."""
    hosts: list[str] = []
    bad: list[str] = []
    for url in urls:
        text = url.strip()
        if not text:
            continue
        try:
            host = urlsplit(text if "://" in text else "https://" + text).hostname or ""
        except ValueError:
            host = ""
        host = host.rstrip(".").lower()
        if _HOST.match(host) and not host.replace(".", "").isdigit():
            if host not in hosts:
                hosts.append(host)
        else:
            bad.append(text)
    return hosts, bad


def convert_url(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """URL (tool mode) → URLFetch; the URLs typed into LangFlow are the hosts it may fetch, and without
    any, every host (`["*"]`, as LangFlow's tool fetches any URL the model chooses)."""
    if not ctx.as_tool:
        return _only_as_tool(node)
    raw = node.fields.get("urls")
    urls = [u for u in raw if isinstance(u, str)] if isinstance(raw, list) else []
    if isinstance(raw, str):
        urls = [raw]
    hosts, bad = _hosts(urls)
    if bad:
        shown = ", ".join(repr(u[:80]) for u in bad[:3])
        return Unsupported(f"URL(s) without a valid host name: {shown}")
    warnings: list[str] = []
    if not hosts:
        # LangFlow's URL tool then fetches whatever URL the model picks: the same, within the egress policy.
        hosts = [ANY_HOST]
        warnings.append(
            f"node {node.id}: no URLs are set, so URLFetch may fetch any host the egress policy allows "
            '(allowed_domains ["*"]); narrow allowed_domains to the hosts the agent needs'
        )
    if len(hosts) > MAX_DOMAINS:
        return Unsupported(f"{len(hosts)} hosts; URLFetch allows at most {MAX_DOMAINS} domains")
    params: dict[str, Any] = {**tool_params(node, ctx), "allowed_domains": hosts}
    timeout = _number(node.fields.get("timeout"))
    if timeout is not None and timeout > 0:
        params["timeout_s"] = min(timeout, MAX_FETCH_TIMEOUT_S)
    depth = _number(node.fields.get("max_depth"))
    if depth is not None and depth > 1:
        warnings.append(f"node {node.id}: max_depth {depth:g} ignored; URLFetch fetches one page per call")
    main = {"id": ctx.node_id, "type": "URLFetch", "params": params}
    return Mapped(
        nodes=(main,),
        inputs={},
        outputs=_tool_outputs(ctx, {}),
        default_output="text",
        warnings=tuple(warnings),
    )


def convert_search(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """A web search component (tool mode) → WebSearch; the search provider is the replicas' own."""
    if not ctx.as_tool:
        return _only_as_tool(node)
    params = tool_params(node, ctx)
    count = _number(node.fields.get("max_results"))
    if count is not None and count >= 1:
        params["max_results"] = min(int(count), MAX_SEARCH_RESULTS)
    warnings = [
        f"node {node.id}: {node.type} searches through the replicas' FLOWFLEET_SEARCH_PROVIDER; "
        "its provider settings and API key were not copied"
    ]
    main = {"id": ctx.node_id, "type": "WebSearch", "params": params}
    return Mapped(
        nodes=(main,),
        inputs={},
        outputs=_tool_outputs(ctx, {}),
        default_output="text",
        warnings=tuple(warnings),
    )


SEARCH_TYPES = (
    "UnifiedWebSearch",
    "WebSearchNoAPI",
    "WebSearch",
    "TavilySearchComponent",
    "SearchAPIComponent",
    "DuckDuckGoSearchComponent",
)

TOOL_CONVERTERS: dict[str, Converter] = {
    "CalculatorComponent": convert_calculator,
    "Calculator": convert_calculator,
    "CurrentDateComponent": convert_current_date,
    "CurrentDate": convert_current_date,
    "URLComponent": convert_url,
    "URL": convert_url,
    **dict.fromkeys(SEARCH_TYPES, convert_search),
}
