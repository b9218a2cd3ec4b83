"""A conversation as OpenAI clients send it, as a flow reads it: the user's last message (the flow's chat
input) and the turns before it (the run's `history`).

    turn = chat_turn([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}])
    turn.message, [m.role for m in turn.history]        # ('Bye', ['user', 'assistant'])

`system` and `developer` messages (and the Responses API's `instructions`) are accepted and left out:
a flow's instructions are its author's, fixed in the document, and a caller must not be able to replace
them (an LLM node's `system` param, an Agent's `system_prompt`, are never run inputs either). Content is
text: a string, or a list of text parts (joined); images, audio, files and tool messages are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from cluster.components.conversation import ChatMessage
from worker.api.openai.errors import OpenAIRequestError

INSTRUCTIONS = frozenset({"system", "developer"})
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


class Turn(NamedTuple):
    message: str
    history: tuple[ChatMessage, ...] = ()


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise OpenAIRequestError(f"'{param}' must be a string or a list of text parts", param)
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise OpenAIRequestError(
                f"'{param}[{i}]' is a {kind or 'malformed'} part: flows take text only", f"{param}[{i}]"
            )
    return "".join(texts)


def _turn(messages: Iterable[tuple[str, str]], param: str) -> Turn:
    """The last (role, text) must be the user's; the ones before it are the history."""
    said = list(messages)
    if not said or said[-1][0] != "user":
        raise OpenAIRequestError(
            "the last message (system and developer messages aside) must be the user's: it is the "
            "flow's input",
            param,
        )
    if len(said) == 1:
        return Turn(said[0][1])
    return Turn(said[-1][1], tuple(ChatMessage(role, text) for role, text in said[:-1]))


def chat_turn(messages: Any) -> Turn:
    """Chat Completions' `messages`."""
    if type(messages) is list and len(messages) == 1:  # the common case, without the general walk
        only = messages[0]
        if type(only) is dict and only.get("role") == "user" and type(only.get("content")) is str:
            if not only.get("tool_calls") and not only.get("function_call"):
                return Turn(only["content"])
    if not isinstance(messages, list) or not messages:
        raise OpenAIRequestError("'messages' must be a non-empty list of messages", "messages")
    said: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in INSTRUCTIONS:
            continue
        if role not in ("user", "assistant"):
            raise OpenAIRequestError(
                f"'messages[{i}]' has role {role!r}: flows take system, developer, user and assistant "
                "messages (a flow calls its own tools)",
                f"messages[{i}]",
            )
        assert isinstance(message, dict)
        if message.get("tool_calls") or message.get("function_call"):
            raise OpenAIRequestError(
                f"'messages[{i}]' calls tools: a flow calls its own tools", f"messages[{i}]"
            )
        content = message.get("content")
        said.append((role, content if type(content) is str else _text(content, f"messages[{i}].content")))
    return _turn(said, "messages")


def responses_turn(items: Any) -> Turn:
    """The Responses API's `input`: a string (the user's message), or a list of message items."""
    if isinstance(items, str):
        return Turn(items)
    if not isinstance(items, list) or not items:
        raise OpenAIRequestError("'input' must be a string or a non-empty list of messages", "input")
    said: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise OpenAIRequestError(f"'{where}' is a {kind} item: flows take message items only", where)
        role = item.get("role")
        if role in INSTRUCTIONS:
            continue
        if role not in ("user", "assistant"):
            raise OpenAIRequestError(f"'{where}' has role {role!r}", where)
        said.append((role, _text(item.get("content"), f"{where}.content")))
    return _turn(said, "input")
