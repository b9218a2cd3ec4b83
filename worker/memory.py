"""Conversations on a replica: the per-run handle components read history from, and the turn's messages
written after the run — or kept in a bounded buffer while Redis is away, and written when it returns.

Serving never waits on a Redis outage: a history that cannot be read is an empty one, a turn that cannot
be written waits in the buffer (overflow is counted and logged), and the run's response says which
(`"memory": {"history": "unavailable", "stored": "buffered"}`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from cluster.components.conversation import ChatMessage
from cluster.store.conversations import ConversationRef, ConversationStore
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass
class RunConversation:
    """One run's conversation: what components see through `RunContext.conversation`."""

    ref: ConversationRef
    store: ConversationStore
    metrics: WorkerMetrics
    user_id: str | None = None
    pending: list[ChatMessage] = field(default_factory=list)
    history_failed: bool = False

    @property
    def id(self) -> str:
        return self.ref.id

    async def history(self, limit: int) -> list[ChatMessage]:
        self.metrics.history_reads.labels(self.ref.flow).inc()
        try:
            return await self.store.history(self.ref, limit)
        except (RedisError, OSError) as e:
            self.history_failed = True
            log.warning("conversation history of flow=%s unavailable: %s", self.ref.flow, e)
            return []

    def remember(self, message: ChatMessage) -> None:
        self.pending.append(message)


@dataclass(frozen=True)
class _Turn:
    ref: ConversationRef
    messages: tuple[ChatMessage, ...]
    user_id: str | None


class Conversations:
    """Opens run conversations and stores their turns, buffering (bounded) while Redis is away."""

    def __init__(
        self, store: ConversationStore, metrics: WorkerMetrics, *, buffer_size: int = 10_000
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.buffer: deque[_Turn] = deque()
        self.buffer_size = buffer_size
        self.dropped = 0

    def open(self, flow: str, principal: str, conversation_id: str, user_id: str | None) -> RunConversation:
        ref = ConversationRef(flow, principal, conversation_id)
        return RunConversation(ref, self.store, self.metrics, user_id)

    async def finish(self, run: RunConversation) -> dict[str, Any] | None:
        """Store the turn's messages; the `memory` part of the response when something degraded, else None."""
        report: dict[str, Any] = {}
        if run.history_failed:
            report["history"] = "unavailable"
            self.metrics.memory_failures.labels("read").inc()
        if run.pending:
            turn = _Turn(run.ref, tuple(run.pending), run.user_id)
            if self.buffer:  # keep the order of turns: older buffered turns go first
                self._buffer(turn)
                await self.flush()
                stored = not self.buffer
            else:
                stored = await self._write(turn)
                if not stored:
                    self._buffer(turn)
            if stored:
                self.metrics.messages_stored.labels(run.ref.flow).inc(len(turn.messages))
            else:
                report["stored"] = "buffered"
                self.metrics.memory_failures.labels("write").inc()
        return report or None

    async def _write(self, turn: _Turn) -> bool:
        try:
            await self.store.append(turn.ref, turn.messages, turn.user_id)
        except (RedisError, OSError) as e:
            log.warning("storing a turn of flow=%s failed (buffered): %s", turn.ref.flow, e)
            return False
        return True

    def _buffer(self, turn: _Turn) -> None:
        if len(self.buffer) >= self.buffer_size:
            self.buffer.popleft()
            self.dropped += 1
            self.metrics.memory_failures.labels("overflow").inc()
            log.error("conversation buffer full (%d turns): dropped the oldest turn", self.buffer_size)
        self.buffer.append(turn)

    async def flush(self) -> int:
        """Write buffered turns in order until one fails; returns how many were written."""
        written = 0
        while self.buffer:
            turn = self.buffer[0]
            if not await self._write(turn):
                break
            self.buffer.popleft()
            self.metrics.messages_stored.labels(turn.ref.flow).inc(len(turn.messages))
            written += 1
        if written:
            log.info("wrote %d buffered conversation turn(s); %d still waiting", written, len(self.buffer))
        return written
