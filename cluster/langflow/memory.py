"""LangFlow's chat memory components as flowfleet `MessageHistory` nodes.

`Memory` ("Message History", also exported as `MessageHistory`) → MessageHistory: `mode` Retrieve/Store
→ `mode`, `n_messages` → `n_messages` (clamped to 1–1,000), `sender_type` Machine/User/Machine and User
(store mode: `sender`) → `sender` assistant/user/all, `sender_name` → `sender_name`, `order`
Ascending/Descending → `order`, `template` → `template` (only `{sender_name}`, `{text}`, `{role}`); its
`messages_text` output → `text`, `dataframe` (older: `messages`) → `messages`, `stored_messages` → `text`.
The conversation is the one the request names (`session_id`): a `session_id` typed into the component is
ignored with a warning, and an external `memory` (a LangChain chat history) is unsupported.

`MemoryBase` (1.13's "Memory Base": semantic search over long-term memories, used as an Agent's tool)
→ a MessageHistory tool returning the conversation's recent messages, with a warning. With
`filter_by_session` on (the current session's memories) that is the session LangFlow would search; with
it off (recall across every session of the end user) it is still only the run's own conversation, since
a flowfleet conversation is one session: a run that names none gets an empty history, as LangFlow's
anonymous callers do. A second warning says so.
"""

from __future__ import annotations

from typing import Any

from cluster.langflow.export import LfNode
from cluster.langflow.nodes import Converter, Mapped, NodeContext, Unsupported, text_field
from cluster.langflow.prompt import TemplateSyntaxError, parse_template, rebuild
from cluster.langflow.tools import _number, _only_as_tool, _tool_outputs, tool_params

MAX_MESSAGES = 1000
DEFAULT_TEMPLATE = "{sender_name}: {text}"
TEMPLATE_VARIABLES = ("sender_name", "text", "role")
SENDERS = {"Machine": "assistant", "AI": "assistant", "User": "user", "Machine and User": "all"}
ORDERS = {"Ascending": "ascending", "Descending": "descending"}
MEMORY_TOOL_DESCRIPTION = (
    "Returns the most recent messages of this conversation (sender name and text, one per line)."
)


def _n_messages(node: LfNode, warnings: list[str]) -> int | None:
    value = _number(node.fields.get("n_messages"))
    if value is None:
        return None
    clamped = max(1, min(MAX_MESSAGES, int(value)))
    if clamped != value:
        warnings.append(f"node {node.id}: n_messages {value:g} clamped to {clamped}")
    return clamped


def _template(node: LfNode) -> str | None | Unsupported:
    """The `template` param: None for LangFlow's default (also flowfleet's)."""
    source = text_field(node, "template")
    if not source or source == DEFAULT_TEMPLATE:
        return None
    try:
        template = parse_template(source)
    except TemplateSyntaxError as e:
        return Unsupported(f"template: {e}")
    unknown = [v for v in template.variables if v not in TEMPLATE_VARIABLES]
    if unknown:
        return Unsupported(
            f"template variable(s) {', '.join(repr(v) for v in unknown)}; a message template may use "
            f"only {', '.join('{' + v + '}' for v in TEMPLATE_VARIABLES)}"
        )
    return rebuild(template, {})


def convert_memory(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """Message History (`Memory`) → MessageHistory."""
    if "memory" in ctx.connected:
        return Unsupported(
            "an external memory (the `memory` input) is not supported; flowfleet keeps "
            "the conversation the request's session_id names"
        )
    mode = (text_field(node, "mode") or "Retrieve").strip()
    if mode not in ("Retrieve", "Store"):
        return Unsupported(f"unknown mode {mode!r}")
    warnings: list[str] = []
    params: dict[str, Any] = {}
    if mode == "Store":
        params["mode"] = "store"
        sender = text_field(node, "sender") or text_field(node, "sender_type")
    else:
        sender = text_field(node, "sender_type")
        n_messages = _n_messages(node, warnings)
        if n_messages is not None:
            params["n_messages"] = n_messages
    if sender and sender not in SENDERS:
        return Unsupported(f"unknown sender {sender!r}")
    if SENDERS.get(sender, "all") != "all":
        params["sender"] = SENDERS[sender]
    name = text_field(node, "sender_name").strip()
    if name:
        params["sender_name"] = name[:200]
    order = text_field(node, "order")
    if order and order not in ORDERS:
        return Unsupported(f"unknown order {order!r}")
    if ORDERS.get(order) == "descending":
        params["order"] = "descending"
    template = _template(node)
    if isinstance(template, Unsupported):
        return template
    if template is not None:
        params["template"] = template
    if text_field(node, "session_id").strip() or "session_id" in ctx.connected:
        warnings.append(
            f"node {node.id}: session_id ignored; the conversation is the one the request's session_id names"
        )
    main = {"id": ctx.node_id, "type": "MessageHistory", "params": params}
    outputs = {"messages_text": "text", "dataframe": "messages", "messages": "messages"}
    outputs["stored_messages"] = "text"
    return Mapped(
        nodes=(main,),
        inputs={"message": "message"} if mode == "Store" else {},
        outputs=outputs,
        default_output="text",
        warnings=tuple(warnings),
    )


def filters_by_session(value: Any) -> bool:
    """LangFlow's reading of `filter_by_session`: the usual false strings are off, other text is on,
    anything else counts by truth (a missing field is LangFlow's default, on)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def convert_memory_base(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """Memory Base (tool mode) → a MessageHistory tool over the run's conversation."""
    if not ctx.as_tool:
        return _only_as_tool(node)
    params = tool_params(node, ctx)
    params["tool_description"] = MEMORY_TOOL_DESCRIPTION
    warnings = [
        f"node {node.id}: the Memory Base's semantic search (search_query, top_k) over long-term memory "
        "became the conversation's most recent messages (MessageHistory); the Agent already receives "
        "them as chat history (n_messages)"
    ]
    if not filters_by_session(node.fields.get("filter_by_session", True)):
        warnings.append(
            f"node {node.id}: recall across sessions (filter_by_session off) reads only the run's own "
            "conversation: a flowfleet conversation is one session, and a run without a session_id has "
            "none (the tool then returns nothing)"
        )
    main = {"id": ctx.node_id, "type": "MessageHistory", "params": params}
    return Mapped(
        nodes=(main,),
        inputs={},
        outputs=_tool_outputs(ctx, {"retrieve_data": "messages"}),
        default_output="text",
        warnings=tuple(warnings),
    )


MEMORY_CONVERTERS: dict[str, Converter] = {
    "Memory": convert_memory,
    "MessageHistory": convert_memory,
    "MemoryBase": convert_memory_base,
}
