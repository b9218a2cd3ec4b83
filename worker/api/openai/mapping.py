"""How a flow looks through the OpenAI API: the model name, the run input a chat message feeds, and the
output that is the assistant's answer. Pure functions over a compiled flow (cluster.engine.CompiledFlow;
anything else that runs is read through `getattr`, as worker/api/native.py's `describe` does).

    parse_model("support_qa@6af6fe80")          # Model(flow="support_qa", version="6af6fe80")
    chat_input(compiled)                         # "question": the input the user's last message feeds
    answer_text(compiled, result.outputs)        # the first ChatOutput's text (JSON for other values)
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import orjson

from cluster.names import FLOW_NAME
from worker.api.openai.errors import ModelNotFound, OpenAIRequestError

logger = logging.getLogger(__name__)

TEXT_KINDS = ("message", "text")
T = TypeVar("T")


def per_version(describe: Callable[[Any], T]) -> Callable[[Any], T]:
    """`describe(compiled)`, computed once per compiled version and kept while the version lives: a
    version never changes, and requests should not walk its graph again. Keyed by the object's id,
    dropped by a finalizer when the version goes (before its id can be another's)."""
    known: dict[int, T] = {}  # values are never None

    def cached(compiled: Any) -> T:
        key = id(compiled)
        described = known.get(key)
        if described is not None:
            return described
        described = describe(compiled)  # a refusal raises, and is not kept
        try:
            weakref.finalize(compiled, known.pop, key, None)
        except TypeError:  # an object that takes no weak reference: not kept either
            return described
        known[key] = described
        return described

    cached.__doc__ = describe.__doc__
    return cached


class Model(NamedTuple):
    """A request's `model`: a flow, and optionally one version of it (`flow@<hash or prefix>`)."""

    name: str  # as the caller wrote it; answers echo it
    flow: str
    version: str | None = None


# Valid model names seen lately: requests name the same few flows over and over.
_MODELS: dict[str, Model] = {}
MODELS_KEPT = 1024


def parse_model(model: Any) -> Model:
    """>>> parse_model("qa@6af6fe80")
    Model(name='qa@6af6fe80', flow='qa', version='6af6fe80')
    """
    known = _MODELS.get(model) if type(model) is str else None
    if known is not None:
        return known
    if not isinstance(model, str) or not model:
        raise OpenAIRequestError("'model' must name a flow (`flow` or `flow@<version hash>`)", "model")
    flow, at, version = model.partition("@")
    if not FLOW_NAME.match(flow) or (at and not version):
        raise ModelNotFound(model)
    parsed = Model(model, flow, version or None)
    if len(_MODELS) >= MODELS_KEPT:  # names that only pass through (a version each) do not pile up
        _MODELS.clear()
    _MODELS[model] = parsed
    return parsed


@per_version
def chat_input(compiled: Any) -> str:
    """The run input the user's message feeds, in this order: the flow's only required input of kind
    message or text; else its only message input (a ChatInput); else the input named `input`; else its
    only required input. Refused (400) when none fits or another input is required too."""
    specs = tuple(getattr(compiled, "inputs", ()))
    required = [s for s in specs if s.required]
    candidates = (
        [s for s in required if s.kind in TEXT_KINDS],
        [s for s in specs if s.kind == "message"],
        [s for s in specs if s.name == "input"],
        required,
    )
    chosen: str | None = next((found[0].name for found in candidates if len(found) == 1), None)
    if chosen is None:
        listed = ", ".join(s.summary() for s in specs) or "no inputs"
        raise OpenAIRequestError(
            f"this flow cannot take a chat message: it takes {listed}; a flow called through the OpenAI "
            "API needs one message input (a ChatInput, a TextInput or an input named 'input')",
            "model",
            "flow_not_chat_compatible",
        )
    others = sorted(s.name for s in required if s.name != chosen)
    if others:
        raise OpenAIRequestError(
            f"this flow needs the input(s) {', '.join(others)} besides the message ({chosen}); the OpenAI "
            "API gives it only the message: call it through /v1/flows/{name}/run",
            "model",
            "flow_not_chat_compatible",
        )
    return chosen


def as_text(value: Any) -> str:
    """An output as the assistant's text: a string as it is, anything else as JSON."""
    if isinstance(value, str):
        return value
    text: str = orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    return text


@per_version
def answer_keys(compiled: Any) -> tuple[str, ...]:
    """The outputs that may hold the answer, in document order: the ChatOutputs, else every output."""
    outputs: tuple[tuple[int, str], ...] = tuple(getattr(compiled, "outputs", ()))
    steps = getattr(compiled, "steps", ())
    chat = tuple(key for index, key in outputs if steps[index].type_name == "ChatOutput")
    return chat or tuple(key for _, key in outputs)


def answer_text(compiled: Any, outputs: Mapping[str, Any]) -> str:
    """The answer of one run: the first of `answer_keys` the run produced (a Router skips branches);
    "" when it produced none of them."""
    for key in answer_keys(compiled):
        if key in outputs:
            value = outputs[key]
            return value if type(value) is str else as_text(value)
    if len(outputs) == 1 and not hasattr(compiled, "outputs"):  # a runnable that describes no outputs
        return as_text(next(iter(outputs.values())))
    return ""


@per_version
def answer_nodes(compiled: Any) -> frozenset[str]:
    """The nodes whose streamed tokens are the answer: those feeding an answer output through their
    default port (an LLM's or Agent's `text`), or the output node itself when it is a model (a flow
    without output nodes)."""
    outputs = dict((key, index) for index, key in getattr(compiled, "outputs", ()))
    steps = getattr(compiled, "steps", ())
    nodes: set[str] = set()
    for key in answer_keys(compiled):
        step = steps[outputs[key]]
        if not getattr(step.component, "is_output", False):
            nodes.add(step.node_id)
            continue
        for sources in step.feeds.values():
            nodes.update(steps[i].node_id for i, port in sources if port == steps[i].default_output)
    return frozenset(nodes)


class AnswerText:
    """What of the answer a stream has sent: the token events of one answer node (the first that
    speaks), and, once the run is done, whatever of the final answer they did not carry (all of it when
    the answer went through a parser, say), so that the streamed pieces always add up to the answer."""

    def __init__(self) -> None:
        self.nodes: frozenset[str] | None = None
        self.node: str | None = None
        self.parts: list[str] = []

    def delta(self, compiled: Any, event: Mapping[str, Any]) -> str | None:
        """The piece of the answer `event` carries, or None."""
        if event.get("event") != "token":
            return None
        node = event.get("node")
        if self.node is None:
            if self.nodes is None:
                self.nodes = answer_nodes(compiled)
            if node not in self.nodes:
                return None
            self.node = node
        elif node != self.node:
            return None
        piece = event.get("delta")
        if not isinstance(piece, str) or not piece:
            return None
        self.parts.append(piece)
        return piece

    def rest(self, final: str) -> str:
        """The end of `final` not streamed yet."""
        streamed = "".join(self.parts)
        if final.startswith(streamed):
            return final[len(streamed) :]
        # The node streamed text its final answer does not start with (an agent that talked before a
        # tool call, say): what went out cannot be taken back.
        logger.warning("streamed answer of node %s differs from its final answer", self.node)
        return ""
