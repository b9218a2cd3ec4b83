"""Tool-mode components and helpers for the agent tests: a registry with them, replies with tool calls,
a recording meter."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cluster.components.base import TOOL_PARAMS, Component, Ports, RunContext
from cluster.components.registry import Registry, builtin_components
from cluster.errors import ComponentError


def _tool_ports(name: str) -> Ports:
    return Ports(
        inputs=(name,),
        required=frozenset({name}),
        default_input=name,
        outputs=("value",),
        default_output="value",
    )


class Lookup(Component):
    """Answers `value-of-<key>`; every call is recorded, and `wait_for` calls can be made to meet."""

    type_name = "Lookup"
    description = "Looks a key up."
    tool_mode = True
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"meet": {"type": "integer"}, **TOOL_PARAMS},
    }
    calls: list[dict[str, Any]] = []
    arrived: list[str] = []
    together: asyncio.Event | None = None

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return _tool_ports("key")

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        key = {"type": "string", "description": "what to look up"}
        return {
            "type": "object",
            "properties": {"key": key},
            "required": ["key"],
            "additionalProperties": False,
        }

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        Lookup.calls.append(dict(inputs))
        meet = self.params.get("meet")
        if meet:  # proves concurrency: returns only once `meet` calls are running at the same time
            Lookup.arrived.append(inputs["key"])
            if Lookup.together is None:
                Lookup.together = asyncio.Event()
            if len(Lookup.arrived) >= meet:
                Lookup.together.set()
            await asyncio.wait_for(Lookup.together.wait(), timeout=5)
        return {"value": f"value-of-{inputs['key']}"}


class Boom(Component):
    type_name = "Boom"
    description = "Always fails."
    tool_mode = True
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"crash": {"type": "boolean"}, **TOOL_PARAMS},
    }

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return _tool_ports("key")

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        if self.params.get("crash"):
            raise RuntimeError("a bug inside the tool")
        raise ComponentError("the backend is down")


class Sleepy(Component):
    """Never answers; records that it was cancelled."""

    type_name = "Sleepy"
    description = "Takes forever."
    tool_mode = True
    params_schema = {"type": "object", "additionalProperties": False, "properties": {**TOOL_PARAMS}}
    started = 0
    cancelled = 0
    running: asyncio.Event | None = None

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return _tool_ports("key")

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        Sleepy.started += 1
        if Sleepy.running is not None:
            Sleepy.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            Sleepy.cancelled += 1
            raise
        return {"value": "never"}


def reset() -> None:
    Lookup.calls, Lookup.arrived, Lookup.together = [], [], None
    Sleepy.started, Sleepy.cancelled, Sleepy.running = 0, 0, None


def registry() -> Registry:
    return Registry([*builtin_components(), Lookup, Boom, Sleepy])


def tool_calls(*calls: tuple[str, Any], usage: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A chat-completions body whose message asks for these (name, arguments) tool calls; arguments that
    are not a string are sent as JSON text."""
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else orjson.dumps(args).decode(),
                },
            }
            for i, (name, args) in enumerate(calls)
        ],
    }
    body: dict[str, Any] = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    if usage:
        body["usage"] = dict(usage)
    return body


@dataclass
class RecordingMeter:
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    rounds: list[tuple[str, int]] = field(default_factory=list)
    token_counts: list[tuple[str, str, str, int]] = field(default_factory=list)

    def tool_call(self, flow: str, tool: str, outcome: str) -> None:
        self.calls.append((flow, tool, outcome))

    def model_rounds(self, flow: str, rounds: int) -> None:
        self.rounds.append((flow, rounds))

    def tokens(self, flow: str, model: str, kind: str, count: int) -> None:
        self.token_counts.append((flow, model, kind, count))


def agent_flow(
    base_url: str | None, tools: list[tuple[str, str, dict[str, Any]]], **params: Any
) -> dict[str, Any]:
    """input -> agent -> answer, with `tools` (id, type, params) wired to the agent's tools port."""
    model = (
        {"provider": "openai", "model": "gpt-test", "base_url": base_url, "api_key_env": None}
        if base_url
        else {}
    )
    nodes: list[dict[str, Any]] = [{"id": "agent", "type": "Agent", "params": {**model, **params}}]
    nodes += [{"id": node_id, "type": kind, "params": p} for node_id, kind, p in tools]
    edges = [{"source": node_id, "target": "agent", "target_input": "tools"} for node_id, _, _ in tools]
    return {"name": "agentic", "nodes": nodes, "edges": edges}
