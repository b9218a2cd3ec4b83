"""Chat-completions messages as flowfleet reads them: the assistant's text, its tool calls and usage.

>>> reply = parse_reply(b'{"choices": [{"message": {"role": "assistant", "content": "hi"}}],'
...                     b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}')
>>> reply.content, reply.tool_calls, reply.usage
('hi', (), {'prompt_tokens': 3, 'completion_tokens': 1})
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cluster.errors import ComponentError

Message = dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for; `arguments` is the JSON text the model wrote (maybe malformed)."""

    id: str
    name: str
    arguments: str

    def as_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ChatReply:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Mapping[str, int] = field(default_factory=dict)

    def as_message(self) -> Message:
        """The assistant message to send back in the next round."""
        message: Message = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.as_message() for call in self.tool_calls]
        return message


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ComponentError("malformed response: tool_calls is not a list")
    calls = []
    for i, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ComponentError(f"malformed response: tool call {i} has no function name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send an object instead of JSON text
            arguments = orjson.dumps(arguments).decode()
        call_id = item.get("id") if isinstance(item.get("id"), str) else f"call_{i}"
        calls.append(ToolCall(call_id, function["name"], arguments if isinstance(arguments, str) else ""))
    return tuple(calls)


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k in ("prompt_tokens", "completion_tokens") and type(v) is int}


def parse_reply(body: bytes) -> ChatReply:
    """The assistant's message from a chat-completions body; raises ComponentError when it has neither
    text nor tool calls."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ComponentError("malformed response: body is not JSON") from e
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as e:
        raise ComponentError("malformed response: no choices[0].message") from e
    if not isinstance(message, dict):
        raise ComponentError("malformed response: choices[0].message is not an object")
    content = message.get("content")
    calls = _tool_calls(message.get("tool_calls"))
    if content is not None and not isinstance(content, str):
        raise ComponentError("malformed response: message content is not text")
    if content is None and not calls:
        raise ComponentError("malformed response: message content is null, not text")
    return ChatReply(content, calls, _usage(data.get("usage")))


def _chunk(data: bytes) -> dict[str, Any]:
    """One event's JSON; raises ComponentError for an error event or one that is not a JSON object."""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ComponentError("malformed stream: an event is not JSON") from e
    if not isinstance(chunk, dict):
        raise ComponentError("malformed stream: an event is not an object")
    if chunk.get("error") is not None:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ComponentError(f"upstream error in the stream: {str(message)[:300]}")
    return chunk


def _add_fragments(calls: dict[int, dict[str, str]], fragments: Any) -> None:
    """Assemble `delta.tool_calls` fragments by their index: the id and name come once, arguments in parts."""
    for fragment in fragments or ():
        if not isinstance(fragment, dict):
            raise ComponentError("malformed stream: a tool call fragment is not an object")
        index = fragment.get("index")
        call = calls.setdefault(index if isinstance(index, int) else len(calls), {})
        if isinstance(fragment.get("id"), str):
            call["id"] = fragment["id"]
        function = fragment.get("function")
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    call[key] = call.get(key, "") + function[key]


def _assembled(calls: dict[int, dict[str, str]]) -> tuple[ToolCall, ...]:
    assembled = []
    for i, (_, call) in enumerate(sorted(calls.items())):
        if not call.get("name"):
            raise ComponentError(f"malformed stream: tool call {i} has no function name")
        assembled.append(ToolCall(call.get("id", f"call_{i}"), call["name"], call.get("arguments", "")))
    return tuple(assembled)


async def event_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The lines of an event stream's body, read as it arrives (bytes, without their line ends).

    Lines end with LF, CRLF or CR, as the SSE format allows. A CRLF split between two chunks reads as
    one more, empty, line: an event boundary, which is all a blank line is to `read_stream`.

    >>> async def body():
    ...     for chunk in (b"data: a\\n\\nda", b"ta: b\\r\\n", b": ping\\r", b"data: c"):
    ...         yield chunk
    >>> async def lines():
    ...     return [line async for line in event_lines(body())]
    >>> import asyncio; asyncio.run(lines())
    [b'data: a', b'', b'data: b', b': ping', b'data: c']
    """
    parts: list[bytes] = []  # the start of a line not ended yet, kept as pieces: no quadratic joins
    async for chunk in chunks:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                parts.append(chunk)
            continue
        lines = chunk.split(b"\n")
        if parts:
            parts.append(lines[0])
            lines[0] = b"".join(parts)
        rest = lines.pop()
        parts = [rest] if rest else []
        for line in lines:
            yield line
    if parts:
        yield b"".join(parts)


async def read_stream(lines: AsyncIterator[bytes], sent: Callable[[str], None]) -> ChatReply:
    """The reply an OpenAI chat-completions event stream (its lines, `event_lines`) carries, its text
    handed to `sent` piece by piece; tool call fragments are assembled by index and the usage chunk is
    read. Stops at `data: [DONE]`. Raises ComponentError for an error event or a reply with neither text
    nor tool calls."""
    parts: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    usage: dict[str, int] = {}
    async for line in lines:
        if not line.startswith(b"data:"):
            continue  # blank separators, comments (keepalives), `event:` / `id:` lines
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = _chunk(data)
        usage.update(_usage(chunk.get("usage")))
        choices = chunk.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        delta = first.get("delta") if isinstance(first, dict) else None
        if not isinstance(delta, dict):
            continue  # the usage chunk has no choices
        _add_fragments(calls, delta.get("tool_calls"))
        content = delta.get("content")
        if isinstance(content, str) and content:
            parts.append(content)
            if not calls:  # text once a tool call began is not an answer: kept, not streamed
                sent(content)
    tool_calls = _assembled(calls)
    if not parts and not tool_calls:
        raise ComponentError("malformed stream: neither text nor tool calls")
    return ChatReply("".join(parts) if parts else None, tool_calls, usage)
