"""LangFlow's Agent as a flowfleet `Agent`: its model, instructions, built-in tools and structured response.

The model is read as for language models (`cluster.langflow.models`); tools wired into `tools` are
mapped by `cluster.langflow.tools`. LangFlow's Agent adds two tools of its own, each unless a wired tool
already has its name: `add_current_date_tool` (on unless set to false) a CurrentDate node
`<id>.current_date`, `add_calculator_tool` (LangFlow 1.13; on when set) a Calculator node
`<id>.calculator`. Its `structured_response` output, when an edge reads it, becomes the Agent's
`output_schema` (from the `output_schema` table, as for StructuredOutput) and `format_instructions`,
read through the `data` port (cluster.components.agent_response).
"""

from __future__ import annotations

from typing import Any

from cluster.langflow.export import LfNode
from cluster.langflow.models import _flag, model_params, output_schema
from cluster.langflow.nodes import Converter, Mapped, NodeContext, Unsupported, fixed_prompt, text_field
from cluster.langflow.tools import TOOLS_FIELD, _number, _tool_outputs, tool_params

# The tools LangFlow's Agent adds itself (CurrentDateComponent's and CalculatorComponent's toolkits).
CURRENT_DATE_TOOL_NAME = "get_current_date"
CURRENT_DATE_DESCRIPTION = "Returns the current date and time in the selected timezone."
CALCULATOR_TOOL_NAME = "evaluate_expression"
CALCULATOR_DESCRIPTION = "Perform basic arithmetic operations on a given expression."

MAX_ITERATIONS = 50
# The chat history an Agent reads (flowfleet's Agent default is LangFlow's, 100 messages).
MAX_HISTORY_MESSAGES = 1000
DEFAULT_AGENT_HISTORY = 100
STRUCTURED_OUTPUT = "structured_response"


def _builtin_tools(node: LfNode, ctx: NodeContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The helper nodes and tool edges of the tools LangFlow's Agent adds itself. As in LangFlow, a
    tool is not added when a wired tool already has its name (model APIs refuse duplicate names)."""
    # LangFlow's date tool defaults to on: a missing or unset field means it is added. The calculator
    # option is newer: exports that predate it (no field) ran without one.
    wanted = [
        ("current_date", "CurrentDate", CURRENT_DATE_TOOL_NAME, CURRENT_DATE_DESCRIPTION)
        if node.fields.get("add_current_date_tool") is not False
        else None,
        ("calculator", "Calculator", CALCULATOR_TOOL_NAME, CALCULATOR_DESCRIPTION)
        if _flag(node.fields.get("add_calculator_tool"))
        else None,
    ]
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for suffix, flowfleet_type, name, description in filter(None, wanted):
        if name in ctx.tool_names:
            continue
        helper_id = f"{ctx.node_id}.{suffix}"
        params = {"tool_name": name, "tool_description": description}
        nodes.append({"id": helper_id, "type": flowfleet_type, "params": params})
        edges.append({"source": helper_id, "target": ctx.node_id, "target_input": TOOLS_FIELD})
    return nodes, edges


def _structured_response(
    node: LfNode, ctx: NodeContext, params: dict[str, Any], warnings: list[str]
) -> Unsupported | None:
    """`output_schema` / `format_instructions` when an edge reads `structured_response`. LangFlow's
    `response` ignores the schema, so it is left out when only `response` is read."""
    if STRUCTURED_OUTPUT not in ctx.outputs_used:
        return None
    schema = output_schema(node.fields.get("output_schema"))
    if isinstance(schema, str):
        return Unsupported(f"its {STRUCTURED_OUTPUT} output needs an output schema: {schema}")
    params["output_schema"] = schema
    instructions = text_field(node, "format_instructions")
    if instructions.strip():
        params["format_instructions"] = instructions
    warnings.append(
        f"node {node.id}: {STRUCTURED_OUTPUT} must be JSON that fits output_schema (an object, or a list "
        'of them as {"results": [...]}); an answer that does not fit fails the node, where LangFlow '
        "passes it on with a validation_error"
    )
    if "response" in ctx.outputs_used:
        warnings.append(
            f"node {node.id}: response and {STRUCTURED_OUTPUT} are both used; LangFlow runs the agent "
            f"once for each, flowfleet once: response is the {STRUCTURED_OUTPUT}'s JSON text"
        )
    return None


def _clamped(node: LfNode, name: str, low: int, high: int, warnings: list[str]) -> int | None:
    value = _number(node.fields.get(name))
    if value is None:
        return None
    clamped = max(low, min(high, int(value)))
    if clamped != value:
        warnings.append(f"node {node.id}: {name} {value:g} clamped to {clamped}")
    return clamped


def convert_agent(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """Agent → Agent: instructions (typed, or fed by an edge into `system_prompt`), max_iterations,
    n_messages, the model (as for LLM), the built-in tools and the structured response."""
    # Older exports pick the provider in `agent_llm` ("OpenAI", ..., "Custom" for a connected model).
    agent_llm = text_field(node, "agent_llm").strip() or None
    if agent_llm == "Custom" or "agent_llm" in ctx.connected:
        return Unsupported("a connected language model (agent_llm 'Custom') is not supported")
    result = model_params(node, ctx, provider=agent_llm)
    if isinstance(result, Unsupported):
        return result
    params, warnings = result
    params.update(tool_params(node, ctx))
    instructions = text_field(node, "system_prompt")
    # An edge into `system_prompt` (a Prompt Template's text, say) feeds the Agent's optional port of
    # that name, which exists only while the params fix no instructions: the typed value is dropped.
    if instructions.strip() and "system_prompt" not in ctx.connected:
        params["system_prompt"] = instructions
    iterations = _clamped(node, "max_iterations", 1, MAX_ITERATIONS, warnings)
    if iterations is not None:
        params["max_iterations"] = iterations
    n_messages = _clamped(node, "n_messages", 0, MAX_HISTORY_MESSAGES, warnings)
    if n_messages is not None and n_messages != DEFAULT_AGENT_HISTORY:
        params["n_messages"] = n_messages
    refused = _structured_response(node, ctx, params, warnings)
    if refused is not None:
        return refused
    nodes, edges = _builtin_tools(node, ctx)
    prompt = text_field(node, "input_value")
    if prompt and "input_value" not in ctx.connected:
        helper, edge = fixed_prompt(ctx.node_id, prompt, "input")
        nodes.insert(0, helper)
        edges.insert(0, edge)
    outputs = {"response": "text"}
    if "output_schema" in params:
        outputs[STRUCTURED_OUTPUT] = "data"
    main = {"id": ctx.node_id, "type": "Agent", "params": params}
    return Mapped(
        nodes=(main, *nodes),
        inputs={"input_value": "input", "system_prompt": "system_prompt", TOOLS_FIELD: "tools"},
        outputs=_tool_outputs(ctx, outputs),
        default_output="text",
        edges=tuple(edges),
        warnings=tuple(warnings),
    )


AGENT_CONVERTERS: dict[str, Converter] = {"Agent": convert_agent}
