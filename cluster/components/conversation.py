"""A run's conversation, as components see it: the messages of earlier turns, and what this turn adds.

The replica injects one per run that names a conversation (`session_id`); the engine and components
never touch Redis. Reads go to the shared store; messages a run `remember`s are written together, in one
transaction, when the run has finished (the user's message and the final answer of a turn land
atomically, and a failed run stores nothing).

>>> import asyncio
>>> memory = InMemoryConversation("c1", [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")])
>>> [m.content for m in asyncio.run(memory.history(1))]
['hello']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

ROLES = ("user", "assistant")


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "user" or "assistant"
    content: str
    at: float = 0.0  # unix seconds when stored
    sender: str = ""  # who wrote it (LangFlow's sender name), informational

    def as_chat(self) -> dict[str, str]:
        """The message as a chat-completions message."""
        return {"role": self.role, "content": self.content}


class Conversation(Protocol):
    @property
    def id(self) -> str: ...

    async def history(self, limit: int) -> list[ChatMessage]:
        """The last `limit` messages of earlier turns, oldest first (empty when there are none, or when
        they could not be read: `degraded` then says so)."""
        ...

    def remember(self, message: ChatMessage) -> None:
        """Queue a message of this turn; it is stored with the others once the run has finished."""
        ...


@dataclass
class InMemoryConversation:
    """A conversation held in memory: for `flowfleet run` and tests."""

    id: str
    messages: list[ChatMessage] = field(default_factory=list)
    pending: list[ChatMessage] = field(default_factory=list)

    async def history(self, limit: int) -> list[ChatMessage]:
        return self.messages[-limit:] if limit > 0 else []

    def remember(self, message: ChatMessage) -> None:
        self.pending.append(message)

    def commit(self) -> list[ChatMessage]:
        """Move this turn's messages into the history; returns them."""
        added, self.pending = self.pending, []
        self.messages.extend(added)
        return added
