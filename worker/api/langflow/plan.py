"""How one LangFlow request maps onto the version that serves it: run inputs, tweaks and outputs.

Pure: reads what a compiled flow says of itself (its run inputs, steps and outputs) and never runs it.

- `input_value` goes to the flow's input of `input_type`'s kind (`chat`: a ChatInput's message, `text`: a
  TextInput's; other kinds when the flow has none of that one; `any`: every input): the only one, else
  the one named `input` (what the LangFlow import names a flow's single input), else the only required
  one; several candidates left is a 422 naming them. A flow without inputs ignores it, as LangFlow does.
- Tweaks are keyed by node id (imported flows keep LangFlow's component ids). A tweak that names a run
  input a node reads — `input_value` of a ChatInput / TextInput, a Prompt's variable — is that run
  input; LangFlow's names of a few params are read as flowfleet's (`ALIASES`); `stream` of a model is
  dropped (LangFlow sets it itself; here the request's `?stream=` decides). The rest are the flow's
  tweaks, checked against its `api.tweaks` allow-list when the run is prepared.
- `output_component` (a node id or output name) picks one output; otherwise `output_type` picks them as
  LangFlow does: `chat` ChatOutputs, `text` TextOutputs (or outputs whose node id contains the word),
  `any` and `debug` every output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from cluster.errors import BadRequest, FlowfleetError, InvalidTweaks, RunInputError
from cluster.flow.inputs import InputSpec
from worker.api.langflow.request import LangflowRequest

# LangFlow's field names for params flowfleet names otherwise, by flowfleet node type.
ALIASES: dict[str, dict[str, str]] = {
    "LLM": {
        "system_message": "system",
        "model_name": "model",
        "timeout": "timeout_s",
        "max_retries": "retries",
    },
    "Agent": {"model_name": "model", "timeout": "timeout_s", "max_retries": "retries"},
    "ChatInput": {"should_store_message": "store_message"},
    "ChatOutput": {"should_store_message": "store_message"},
}
MODEL_TYPES = frozenset({"LLM", "Agent", "StructuredOutput"})
INPUT_TYPES = frozenset({"ChatInput", "TextInput"})
KINDS = {"chat": frozenset({"message"}), "text": frozenset({"text"})}
DISPLAY_NAMES = {"ChatOutput": "Chat Output", "TextOutput": "Text Output"}
NO_SOURCE: Mapping[str, Any] = MappingProxyType({"id": None, "display_name": None, "source": None})


class OutputNotFound(FlowfleetError):
    """`output_component` names no output of the flow (LangFlow: a 404 for a vertex not found)."""

    code = "output_not_found"
    http_status = 404


@dataclass(frozen=True)
class OutputNode:
    """One run output as LangFlow shows it. `messages`: a ChatOutput that stores its message (LangFlow
    sends it as `add_message` events); `sources`: the nodes feeding it, whose tokens stream as its text;
    `source`: LangFlow's `properties.source` of its message (the node and model it came from)."""

    key: str
    node_id: str
    type_name: str
    sender_name: str | None = None
    messages: bool = False
    sources: tuple[str, ...] = ()
    source: Mapping[str, Any] = field(default_factory=lambda: NO_SOURCE)

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES.get(self.type_name, self.type_name or "Output")


@dataclass(frozen=True)
class ChatInputNode:
    """A ChatInput that stores its message: LangFlow announces the user's message with `add_message`."""

    node_id: str
    input_name: str
    sender_name: str
    default: Any = None


@dataclass(frozen=True)
class Plan:
    inputs: dict[str, Any]
    tweaks: dict[str, dict[str, Any]]
    outputs: tuple[OutputNode, ...]
    chat_inputs: tuple[ChatInputNode, ...]
    remembers: bool

    def streamed_as(self, node_id: str) -> OutputNode | None:
        """The selected message output whose text a node's tokens are, if any."""
        for output in self.outputs:
            if output.messages and node_id in output.sources:
                return output
        return None


def _steps(compiled: Any) -> tuple[Any, ...]:
    steps = getattr(compiled, "steps", ())
    return steps if isinstance(steps, tuple) else ()


def _params(step: Any) -> Mapping[str, Any]:
    params = getattr(getattr(step, "component", None), "params", None)
    return params if isinstance(params, Mapping) else {}


def output_nodes(compiled: Any) -> tuple[OutputNode, ...]:
    """Every output of a compiled flow, in document order (a runnable that shows no steps: by name)."""
    steps, outputs = _steps(compiled), getattr(compiled, "outputs", None)
    if not steps or not isinstance(outputs, tuple):
        return tuple(OutputNode(key, key, "") for key in getattr(compiled, "output_names", ()))
    nodes = []
    for index, key in outputs:
        step = steps[index]
        params = _params(step)
        feeding = [steps[source] for sources in step.feeds.values() for source, _ in sources]
        source: Mapping[str, Any] = NO_SOURCE
        if feeding:
            model = _params(feeding[0]).get("model")
            source = {"id": feeding[0].node_id, "display_name": feeding[0].type_name, "source": model}
        chat = step.type_name == "ChatOutput"
        nodes.append(
            OutputNode(
                key=key,
                node_id=step.node_id,
                type_name=step.type_name,
                sender_name=(params.get("sender_name") or "AI") if chat else None,
                messages=chat and params.get("store_message", True) is not False,
                sources=tuple(s.node_id for s in feeding),
                source=source,
            )
        )
    return tuple(nodes)


def chat_inputs(compiled: Any) -> tuple[ChatInputNode, ...]:
    found = []
    for step in _steps(compiled):
        params = _params(step)
        if step.type_name == "ChatInput" and params.get("store_message", True) is not False:
            name = params.get("name") or "input"
            found.append(
                ChatInputNode(step.node_id, name, params.get("sender_name") or "User", params.get("default"))
            )
    return tuple(found)


def node_types(compiled: Any) -> dict[str, str]:
    types = {step.node_id: step.type_name for step in _steps(compiled)}
    for component in getattr(compiled, "tool_components", ()):
        types[component.node_id] = type(component).type_name
    return types


def choose_input(specs: tuple[InputSpec, ...], input_type: str) -> InputSpec | None:
    """The run input `input_value` goes to (None: the flow takes none); RunInputError when ambiguous."""
    if not specs:
        return None
    kinds = KINDS.get(input_type)
    candidates = [s for s in specs if kinds is None or s.kind in kinds] or list(specs)
    if len(candidates) == 1:
        return candidates[0]
    named = [s for s in candidates if s.name == "input"]
    required = [s for s in candidates if s.required]
    chosen = named or (required if len(required) == 1 else [])
    if chosen:
        return chosen[0]
    listed = ", ".join(s.summary() for s in candidates)
    raise RunInputError(
        f"this flow takes several inputs ({listed}) and none is named 'input': give each as a tweak of "
        'the node that reads it, e.g. {"<node id>": {"input_value": "..."}}',
        inputs=[s.as_dict() for s in specs],
    )


def _run_input(node: str, param: str, node_type: str | None, specs: tuple[InputSpec, ...]) -> str | None:
    for spec in specs:
        if node in spec.nodes and (
            param == spec.name or (param == "input_value" and node_type in INPUT_TYPES)
        ):
            return spec.name
    return None


def split_tweaks(
    tweaks: Mapping[str, Any], specs: tuple[InputSpec, ...], types: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(run inputs given as tweaks, the flow's tweaks in flowfleet's param names)."""
    inputs: dict[str, Any] = {}
    rest: dict[str, dict[str, Any]] = {}
    for node, params in tweaks.items():
        if not isinstance(params, Mapping):
            raise InvalidTweaks(
                f"tweak {node!r} must be an object of param -> value: tweaks name a node, "
                '{"<node id>": {"<param>": value}} (LangFlow\'s tweak of one field in every node is not '
                "supported)",
                node=node,
            )
        node_type = types.get(node)
        aliases = ALIASES.get(node_type or "", {})
        for param, value in params.items():
            if not isinstance(param, str):
                raise InvalidTweaks(f"tweaks of node {node!r} are keyed by param name", node=node)
            name = _run_input(node, param, node_type, specs)
            if name is not None:
                inputs[name] = value
            elif not (param == "stream" and node_type in MODEL_TYPES):
                rest.setdefault(node, {})[aliases.get(param, param)] = value
    return inputs, rest


def _webhook_value(text: str) -> Any:
    """A webhook body for an input taking any value: its JSON, else `{"payload": text}` (LangFlow's
    Webhook component does the same)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"payload": text}


def select_outputs(nodes: tuple[OutputNode, ...], request: LangflowRequest) -> tuple[OutputNode, ...]:
    if request.output_component:
        chosen = [n for n in nodes if request.output_component in (n.node_id, n.key)]
        if not chosen:
            listed = ", ".join(n.node_id for n in nodes) or "none"
            raise OutputNotFound(
                f"output component {request.output_component!r} not found; this flow's outputs: {listed}",
                output_component=request.output_component,
            )
        return (chosen[0],)
    kind = request.output_type
    if kind not in KINDS:  # "any", "debug"
        return nodes
    wanted = {"chat": "ChatOutput", "text": "TextOutput"}[kind]
    return tuple(n for n in nodes if n.type_name == wanted or kind in n.node_id.lower())


def plan(request: LangflowRequest, compiled: Any) -> Plan:
    """The run of `request` on `compiled` (raises RunInputError, InvalidTweaks, OutputNotFound, or
    BadRequest for an input given both as `input_value` and as a tweak, as LangFlow refuses it)."""
    specs: tuple[InputSpec, ...] = tuple(getattr(compiled, "inputs", ()))
    inputs, tweaks = split_tweaks(request.tweaks, specs, node_types(compiled))
    if request.input_value is not None:
        spec = choose_input(specs, request.input_type)
        if spec is not None:
            if spec.name in inputs:
                which = {"message": "chat input", "text": "text input"}.get(spec.kind, "input")
                raise BadRequest(
                    f"If you pass an input_value to the {which}, you cannot pass a tweak with the same name.",
                    input=spec.name,
                )
            value = request.input_value
            inputs[spec.name] = _webhook_value(value) if request.webhook and spec.kind == "any" else value
    return Plan(
        inputs=inputs,
        tweaks=tweaks,
        outputs=select_outputs(output_nodes(compiled), request),
        chat_inputs=chat_inputs(compiled),
        remembers=bool(getattr(compiled, "remembers", False)),
    )
