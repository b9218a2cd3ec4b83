"""How one LangFlow component becomes flowfleet nodes: inputs, outputs, prompts and parsers.

A converter receives the LangFlow node and a NodeContext and returns either `Mapped` (the flowfleet
node(s) plus how LangFlow's field and output names translate into flowfleet ports) or `Unsupported`
(why not). Language models live in `cluster.langflow.models`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cluster.langflow.export import LfNode
from cluster.langflow.prompt import TemplateSyntaxError, escape, parse_template, rebuild

Provider = Literal["openai", "echo"]
# The OpenAI model an OpenAI-provider component with no model set gets (LangFlow 1.13's starter projects
# leave it empty for the user to pick); `flowfleet import langflow --model` overrides it.
DEFAULT_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class NodeContext:
    """What a converter may know beyond the node itself."""

    node_id: str  # the flowfleet id of the main node
    connected: frozenset[str]  # LangFlow fields of this node that an edge feeds
    input_name: str  # for input components: the run input they read
    provider: Provider  # "openai" keeps OpenAI models, "echo" turns every model offline
    # True when an edge from the node's `component_as_tool` output makes it an agent's tool.
    as_tool: bool = False
    # The model an OpenAI component with an empty model gets (with a warning); unused with echo.
    model: str = DEFAULT_MODEL
    # LangFlow outputs of this node that an edge reads ("" for an edge that names none).
    outputs_used: frozenset[str] = frozenset()
    # The tool names of the components wired into this node's `tools` (for an Agent's built-in tools).
    tool_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Mapped:
    """The flowfleet side of one LangFlow node.

    `nodes[0]` is the node edges connect to; further nodes and `edges` are helpers it needs (e.g. a
    fixed prompt). `inputs` maps LangFlow field names to its input ports, `outputs` LangFlow output
    names to its output ports.
    """

    nodes: tuple[dict[str, Any], ...]
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    default_output: str
    edges: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Unsupported:
    reason: str


Converter = Callable[[LfNode, NodeContext], "Mapped | Unsupported"]


def text_field(node: LfNode, name: str) -> str:
    """A field's value as text; LangFlow writes unset fields as "", null or a missing key."""
    value = node.fields.get(name)
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def fixed_prompt(node_id: str, text: str, target_input: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A variable-free PromptTemplate node that supplies `text` to `target_input` of `node_id`.

    Used where LangFlow lets a value be typed into a field that flowfleet only feeds through a port.
    """
    helper_id = f"{node_id}.{target_input}"
    node = {"id": helper_id, "type": "PromptTemplate", "params": {"template": escape(text)}}
    edge = {"source": helper_id, "target": node_id, "source_output": "text", "target_input": target_input}
    return node, edge


def store_params(node: LfNode, default_sender: str) -> dict[str, Any]:
    """ChatInput / ChatOutput: `should_store_message` false → `store_message: false`; a `sender_name`
    other than flowfleet's default (LangFlow's: "User" / "AI") → `sender_name`."""
    params: dict[str, Any] = {}
    if node.fields.get("should_store_message") is False:
        params["store_message"] = False
    name = text_field(node, "sender_name").strip()[:200]
    if name and name != default_sender:
        params["sender_name"] = name
    return params


def _input(flowfleet_type: str, port: str) -> Converter:
    def convert(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
        params: dict[str, Any] = {"name": ctx.input_name}
        # LangFlow runs with the value typed into the component when the request carries none.
        default = text_field(node, "input_value")
        if default:
            params["default"] = default
        if flowfleet_type == "ChatInput":
            params.update(store_params(node, "User"))
        flowfleet_node = {"id": ctx.node_id, "type": flowfleet_type, "params": params}
        outputs = {"message": port, "text": port}
        return Mapped(nodes=(flowfleet_node,), inputs={}, outputs=outputs, default_output=port)

    return convert


def _output(flowfleet_type: str, port: str) -> Converter:
    def convert(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
        params = store_params(node, "AI") if flowfleet_type == "ChatOutput" else {}
        flowfleet_node = {"id": ctx.node_id, "type": flowfleet_type, "params": params}
        outputs = {"message": port, "text": port}
        return Mapped(
            nodes=(flowfleet_node,), inputs={"input_value": port}, outputs=outputs, default_output=port
        )

    return convert


def convert_prompt(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """Prompt: variables fed by edges become ports; a value typed into LangFlow is written into the
    template; any other variable is read from the run's inputs under its name."""
    try:
        template = parse_template(text_field(node, "template"))
    except TemplateSyntaxError as e:
        return Unsupported(f"template: {e}")
    fixed = {
        name: text_field(node, name)
        for name in template.variables
        if name not in ctx.connected and text_field(node, name)
    }
    params = {"template": rebuild(template, fixed)}
    inputs = {name: name for name in template.variables if name not in fixed}
    flowfleet_node = {"id": ctx.node_id, "type": "PromptTemplate", "params": params}
    return Mapped(nodes=(flowfleet_node,), inputs=inputs, outputs={"prompt": "text"}, default_output="text")


def convert_parser(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """Parser: "Stringify" passes the input on as text; "Parser" fills its template from the input.

    A template using only `{text}` (the text of an incoming message) becomes a PromptTemplate. Any
    other becomes OutputParser's `format` mode, which fills the template from each record of the
    incoming value (an object is one record, a list of objects a table of rows, a string the record
    `{"text": ...}`) and joins the results with the Parser's `sep`, as LangFlow does for Data and
    DataFrames; a field a record lacks is left empty.
    """
    mode = text_field(node, "mode") or "Parser"
    if mode == "Stringify":
        source = "{text}"
    elif mode == "Parser":
        # Renamed from "pattern" to "format" in later LangFlow versions.
        source = text_field(node, "format") or text_field(node, "pattern")
    else:
        return Unsupported(f"unknown parser mode {mode!r}")
    try:
        template = parse_template(source)
    except TemplateSyntaxError as e:
        return Unsupported(f"template: {e}")
    inputs, outputs = {"input_data": "text"}, {"parsed_text": "text"}
    if template.variables == ("text",):
        params: dict[str, Any] = {"template": rebuild(template, {})}
        flowfleet_node = {"id": ctx.node_id, "type": "PromptTemplate", "params": params}
        return Mapped(nodes=(flowfleet_node,), inputs=inputs, outputs=outputs, default_output="text")
    if not template.variables:
        return Unsupported("parser template uses no {field}")
    params = {"mode": "format", "template": rebuild(template, {})}
    # LangFlow's separator defaults to a newline, which is also OutputParser's default.
    sep = node.fields.get("sep")
    if isinstance(sep, str) and sep != "\n":
        params["sep"] = sep
    flowfleet_node = {"id": ctx.node_id, "type": "OutputParser", "params": params}
    return Mapped(nodes=(flowfleet_node,), inputs=inputs, outputs=outputs, default_output="text")


def convert_json_cleaner(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """JSON Cleaner: find the JSON an LLM wrote (fenced or bare) and pass on its text.

    LangFlow's cleaner outputs the JSON as a string, which is OutputParser's `text` output (the JSON
    fragment); its `parsed` output would be the decoded value instead.
    """
    flowfleet_node = {"id": ctx.node_id, "type": "OutputParser", "params": {"mode": "json"}}
    return Mapped(
        nodes=(flowfleet_node,),
        inputs={"json_str": "text"},
        outputs={"output": "text"},
        default_output="text",
    )


INPUT_TYPES = frozenset({"ChatInput", "TextInput"})

CONVERTERS: dict[str, Converter] = {
    "ChatInput": _input("ChatInput", "message"),
    "TextInput": _input("TextInput", "text"),
    "ChatOutput": _output("ChatOutput", "message"),
    "TextOutput": _output("TextOutput", "text"),
    "Prompt": convert_prompt,
    "Prompt Template": convert_prompt,
    # The Parser's class is ParserComponent; exports name its type after the component's `name`.
    "parser": convert_parser,
    "ParserComponent": convert_parser,
    "Parser": convert_parser,
    "JSONCleaner": convert_json_cleaner,
}
