"""What components report about their calls out (tool calls, model rounds, tokens), as a Protocol the
replica implements with its Prometheus metrics; offline and in tests nothing is recorded."""

from __future__ import annotations

from typing import Protocol


class Meter(Protocol):
    def tool_call(self, flow: str, tool: str, outcome: str) -> None:
        """One tool call by an agent; outcome is ok, error, timeout, invalid_arguments or unknown_tool."""

    def model_rounds(self, flow: str, rounds: int) -> None:
        """How many model rounds one agent run took."""

    def tokens(self, flow: str, model: str, kind: str, count: int) -> None:
        """Tokens a provider reported using (`usage`): kind is prompt or completion."""


class NoMeter:
    def tool_call(self, flow: str, tool: str, outcome: str) -> None:
        return None

    def model_rounds(self, flow: str, rounds: int) -> None:
        return None

    def tokens(self, flow: str, model: str, kind: str, count: int) -> None:
        return None


NO_METER = NoMeter()
