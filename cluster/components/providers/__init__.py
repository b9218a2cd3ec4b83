"""LLM providers: how an `LLM` node turns a prompt (and optional system message) into a reply.

A provider is built once per compiled flow (it may hold an HTTP client) and shared by concurrent runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cluster.components.providers.chat import ChatReply, Message

# Seconds left before the run's deadline, or None when the run has none.
Remaining = Callable[[], float | None]
# Called with each piece of the reply's text as it arrives (a streamed reply).
OnDelta = Callable[[str], None]


class Provider(Protocol):
    async def complete(self, prompt: str, system: str | None, remaining: Remaining) -> str:
        """The model's reply; raises ComponentError for an expected failure."""
        ...

    async def chat(
        self,
        messages: list[Message],
        remaining: Remaining,
        extra: Mapping[str, Any] | None = None,
        *,
        on_delta: OnDelta | None = None,
    ) -> ChatReply:
        """One chat-completions round: `extra` adds request fields (tools, tool_choice, response_format).
        With `on_delta` the reply is streamed and each piece of its text is handed to it as it arrives;
        callers pass it only for streamed runs (providers of plugins may not know it)."""
        ...

    async def aclose(self) -> None:
        """Release held resources (connections); the provider is not used afterwards."""
        ...
