"""Which request fields the OpenAI-compatible API honours, accepts and ignores, or refuses.

A flow is not a model: its author fixed its models, their sampling parameters and its instructions in
the flow document, so sampling parameters (`temperature`, `max_tokens`, ...) are accepted and ignored
(clients send them by default), while anything that asks for what a flow cannot give (client-side
tools, several choices, audio, a JSON response format) is refused with a 400 naming the field. A field
that is in neither OpenAI's request schema nor these tables is refused too (`unknown_parameter`): a
misspelt option must not go unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from cluster.errors import FlowfleetError
from cluster.traffic.canary import check_request_key
from worker.api.openai.errors import OpenAIRequestError
from worker.api.openai.mapping import Model, parse_model

Acceptable = Callable[[Any], bool]


def _absent(value: Any) -> bool:
    return value is None


def _no_tools(value: Any) -> bool:
    return value is None or value == []


def _no_tool_choice(value: Any) -> bool:
    return value in (None, "none", "auto")


def _text_only(value: Any) -> bool:
    return value is None or value == ["text"]


def _text_format(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and value.get("type") == "text")


def _text_config(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _text_format(value.get("format")))


def _off(value: Any) -> bool:
    return value in (None, False)


def _one(value: Any) -> bool:
    return value in (None, 1) and value is not True


TOOLS = "the flow's own tools are its nodes; a client's tools cannot be called by a flow"
# field -> (what it may be, why else not)
CHAT_REFUSED: dict[str, tuple[Acceptable, str]] = {
    "tools": (_no_tools, TOOLS),
    "functions": (_no_tools, TOOLS),
    "tool_choice": (_no_tool_choice, TOOLS),
    "function_call": (_no_tool_choice, TOOLS),
    "n": (_one, "a flow gives one answer per request: n must be 1"),
    "audio": (_absent, "flows answer text only"),
    "modalities": (_text_only, "flows answer text only"),
    "response_format": (_text_format, "the flow decides the format of its answer"),
    "logprobs": (_off, "flows give no log probabilities"),
    "web_search_options": (_absent, "web search is a node of the flow, not an option of the request"),
}
CHAT_IGNORED = frozenset(
    {
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty",
        "frequency_penalty", "seed", "logit_bias", "stop", "top_logprobs", "metadata", "store",
        "service_tier", "parallel_tool_calls", "reasoning_effort", "verbosity", "prediction",
        "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "safety_identifier",
        "moderation",
    }
)  # fmt: skip
CHAT_HONOURED = frozenset({"model", "messages", "stream", "stream_options", "user"})

RESPONSES_REFUSED: dict[str, tuple[Acceptable, str]] = {
    "tools": (_no_tools, TOOLS),
    "tool_choice": (_no_tool_choice, TOOLS),
    "prompt": (_absent, "stored prompts are not flows: name the flow in 'model'"),
    "conversation": (_absent, "continue a conversation with previous_response_id"),
    "background": (_off, "responses are not run in the background"),
    "text": (_text_config, "the flow decides the format of its answer"),
}
RESPONSES_IGNORED = frozenset(
    {
        "instructions", "temperature", "top_p", "max_output_tokens", "max_tool_calls", "top_logprobs",
        "parallel_tool_calls", "truncation", "service_tier", "reasoning", "include", "metadata",
        "stream_options", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
        "safety_identifier", "moderation", "context_management", "access_programs", "image",
        "background_options",
    }
)  # fmt: skip
RESPONSES_HONOURED = frozenset({"model", "input", "previous_response_id", "store", "stream", "user"})


class Common(NamedTuple):
    """What every OpenAI run request says the same way."""

    model: Model
    stream: bool
    user: str | None


def check_fields(
    body: Mapping[str, Any], known: frozenset[str], refused: Mapping[str, tuple[Acceptable, str]]
) -> None:
    """Refuse unknown fields, and refused fields with a value that asks for what a flow cannot give.
    `known` holds every field the request may name, the refused ones included."""
    if not known.issuperset(body):
        names = sorted(body.keys() - known)
        raise OpenAIRequestError(
            f"Unrecognized request argument supplied: {', '.join(names)}", names[0], "unknown_parameter"
        )
    if refused.keys().isdisjoint(body):
        return
    for name in body.keys() & refused.keys():
        acceptable, why = refused[name]
        if not acceptable(body[name]):
            raise OpenAIRequestError(f"'{name}' is not supported: {why}", name, "unsupported_parameter")


def flag(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise OpenAIRequestError(f"'{name}' must be true or false", name)
    return value


def common(body: Mapping[str, Any]) -> Common:
    user = body.get("user")
    if user is not None:
        try:
            user = check_request_key(user, "user")
        except FlowfleetError as e:
            raise OpenAIRequestError(e.message, "user") from e
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise OpenAIRequestError("'stream' must be true or false", "stream")
    return Common(parse_model(body.get("model")), stream is True, user)


def include_usage(body: Mapping[str, Any]) -> bool:
    """`stream_options.include_usage`: a last chunk with the usage of a streamed chat completion."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise OpenAIRequestError("'stream_options' must be an object", "stream_options")
    return flag(options, "include_usage")


CHAT_FIELDS = frozenset(CHAT_HONOURED | CHAT_IGNORED | CHAT_REFUSED.keys())
# A chat request naming only these asks for nothing `check_fields` and `common` could refuse but its
# model: no stream, no user, no refused field (the usual request: a model and its messages).
CHAT_USUAL = frozenset(CHAT_IGNORED | {"model", "messages"})
RESPONSES_FIELDS = frozenset(RESPONSES_HONOURED | RESPONSES_IGNORED | RESPONSES_REFUSED.keys())
