"""Agent: a model that calls tools until it can answer, over the chat-completions tool-calling API.

    {"id": "agent", "type": "Agent", "params": {"provider": "openai", "model": "gpt-4o-mini",
     "system_prompt": "You are a helpful assistant.", "max_iterations": 10, "tool_timeout_s": 20}}

Tools are other nodes wired to the agent's `tools` input (tool mode, cluster/flow/tools.py); an agent
is itself a tool (argument `input`), so agents nest. Each round sends the conversation and the tools'
schemas; the model's tool calls run concurrently, each within `tool_timeout_s` and the run's deadline,
and their results (or `error: ...` for a failure, a timeout, unknown tools or arguments that are not
valid JSON or do not fit the tool's schema) go back as `tool` messages. The first reply without tool
calls is the answer (`text`); no answer after `max_iterations` rounds fails the node. Cancelling the
run cancels the model call and every running tool. Rounds and tool calls go into the run's trace.
With `output_schema` (and optional `format_instructions`) the answer is also structured data, output
`data`, as LangFlow's `structured_response` (cluster.components.agent_response).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from cluster.components.agent_response import RESPONSE_PARAMS, response_problems, structured_response
from cluster.components.base import TOOL_PARAMS, BuildContext, Component, Ports, RunContext, ToolSpec
from cluster.components.llm import LLM, build_provider, history_messages, token_sink
from cluster.components.meter import NO_METER
from cluster.components.providers.chat import ChatReply, Message, ToolCall
from cluster.components.providers.echo import EchoProvider
from cluster.egress.policy import Outbound
from cluster.engine.trace import summarize
from cluster.errors import ComponentError, Problem
from cluster.flow.templates import to_text

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant that can use tools to answer questions and perform tasks."
)
# The model params an Agent shares with LLM (same schema, same meaning).
_MODEL_PARAMS: tuple[str, ...] = ("provider", "model", "base_url", "api_key_env", "temperature")
_MODEL_PARAMS += ("max_tokens", "timeout_s", "retries", "backoff_s")
# How many messages of the run's conversation go before the input (LangFlow's Agent default).
DEFAULT_N_MESSAGES = 100


@dataclass(frozen=True)
class _Tool:
    component: Component
    spec: ToolSpec
    output: str
    validator: Draft202012Validator


class Agent(Component):
    type_name = "Agent"
    description = "Answers `input` with a model that may call the tools wired to `tools`; output `text`."
    tool_mode = True
    uses_conversation = True  # reads its history (n_messages)
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **{name: LLM.params_schema["properties"][name] for name in _MODEL_PARAMS},
            "n_messages": {**LLM.params_schema["properties"]["n_messages"], "default": DEFAULT_N_MESSAGES},
            "system_prompt": {"type": "string", "maxLength": 100_000, "default": DEFAULT_SYSTEM_PROMPT},
            "max_iterations": {"type": "integer", "minimum": 1, "maximum": 50, "default": 15},
            "tool_timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 600, "default": 30},
            "max_result_chars": {"type": "integer", "minimum": 100, "maximum": 200_000, "default": 20_000},
            "description": {"type": "string", "maxLength": 1000},
            **RESPONSE_PARAMS,
            **TOOL_PARAMS,
        },
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.provider = build_provider(params, build)
        self.flow = build.flow_name
        self.model = params.get("model", "echo-1")
        self.meter = build.runtime.meter if build.runtime is not None else NO_METER
        self.system_prompt = params.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
        self.max_iterations = int(params.get("max_iterations", 15))
        self.tool_timeout_s = float(params.get("tool_timeout_s", 30))
        self.max_result_chars = int(params.get("max_result_chars", 20_000))
        self.n_messages = int(params.get("n_messages", DEFAULT_N_MESSAGES))
        self.tools: dict[str, _Tool] = {}
        self.extra: dict[str, Any] = {}
        self.response = structured_response(params, offline=isinstance(self.provider, EchoProvider))

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        # Instructions fixed in the params cannot be replaced by an edge or, worse, by a run input; else
        # an optional `system_prompt` input (a prompt template's text, say) overrides the default.
        system = () if "system_prompt" in params else ("system_prompt",)
        return Ports(
            inputs=("input", *system, "tools"),
            required=frozenset({"input"}),
            default_input="input",
            outputs=("text", "data") if "output_schema" in params else ("text",),
            default_output="text",
            tools="tools",
            edge_only=frozenset({"system_prompt"}),
        )

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        return [*LLM.check_params(params, path), *response_problems(params, path)]

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        return LLM.outbound(params)

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        task = {"type": "string", "description": "the task or question for this agent"}
        return {
            "type": "object",
            "properties": {"input": task},
            "required": ["input"],
            "additionalProperties": False,
        }

    def bind_tools(self, tools: list[Component]) -> None:
        for component in tools:
            spec = component.tool_spec()
            output = type(component).ports(component.params).default_output
            self.tools[spec.name] = _Tool(component, spec, output, Draft202012Validator(spec.parameters))
        self.extra = {"tools": [tool.spec.as_openai() for tool in self.tools.values()]} if self.tools else {}

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        if ctx.replies and self.node_id in ctx.replies:  # an example's recorded answer (offline dry run)
            return self._outputs(ctx.replies[self.node_id], recorded=True)
        system = inputs.get("system_prompt")
        instructions = self.system_prompt if system is None else to_text(system)
        question: Message = {"role": "user", "content": to_text(inputs["input"])}
        if self.response is not None and not self.tools:
            # As LangFlow: a tool-less agent asks for the schema directly, with instructions and input only.
            messages: list[Message] = [{"role": "system", "content": instructions}, question]
            reply = await self._round(messages, ctx, 1, self.response.request_fields())
            self.meter.model_rounds(self.flow, 1)
            return self._outputs(reply.content or "")
        if self.response is not None:
            instructions = self.response.instructions(instructions)
        messages = [{"role": "system", "content": instructions}]
        if self.n_messages and ctx.conversation is not None:
            messages += await history_messages(ctx, self.n_messages)
        messages.append(question)
        for round_number in range(1, self.max_iterations + 1):
            reply = await self._round(messages, ctx, round_number, self.extra)
            if not reply.tool_calls:
                self.meter.model_rounds(self.flow, round_number)
                return self._outputs(reply.content or "")
            messages.append(reply.as_message())
            # A failing tool becomes an error result, so only cancellation leaves this gather early,
            # and it cancels every tool still running.
            results = await asyncio.gather(*(self._call(call, ctx) for call in reply.tool_calls))
            messages += [
                {"role": "tool", "tool_call_id": call.id, "content": result}
                for call, result in zip(reply.tool_calls, results, strict=True)
            ]
        self.meter.model_rounds(self.flow, self.max_iterations)
        raise ComponentError(f"no answer after {self.max_iterations} model rounds (max_iterations)")

    def _outputs(self, answer: str, recorded: bool = False) -> Mapping[str, Any]:
        return {"text": answer} if self.response is None else self.response.outputs(answer, recorded)

    async def _round(
        self, messages: list[Message], ctx: RunContext, round_number: int, extra: Mapping[str, Any]
    ) -> ChatReply:
        started = time.perf_counter()
        on_delta = token_sink(ctx, self.node_id)
        if on_delta is None:
            reply = await self.provider.chat(messages, ctx.remaining, extra)
        else:
            reply = await self.provider.chat(messages, ctx.remaining, extra, on_delta=on_delta)
        for kind in ("prompt", "completion"):
            count = reply.usage.get(f"{kind}_tokens")
            if count:
                self.meter.tokens(self.flow, self.model, kind, count)
        if ctx.trace is not None:
            ctx.trace.append(
                {
                    "node": self.node_id,
                    "type": self.type_name,
                    "event": "model_round",
                    "round": round_number,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "tool_calls": [call.name for call in reply.tool_calls],
                    "usage": dict(reply.usage),
                }
            )
        return reply

    async def _call(self, call: ToolCall, ctx: RunContext) -> str:
        started = time.perf_counter()
        arguments: Any = call.arguments
        outcome, result = "ok", ""
        tool = self.tools.get(call.name)
        if ctx.stream is not None:
            ctx.stream(
                {
                    "event": "tool_call",
                    "node": self.node_id,
                    "id": call.id,
                    "tool": call.name,
                    "arguments": summarize(call.arguments),
                }
            )
        try:
            if tool is None:
                outcome, result = "unknown_tool", f"error: there is no tool named {call.name!r}"
            else:
                arguments = _arguments(call.arguments, tool)
                result = await self._invoke(tool, arguments, ctx)
        except _BadArguments as e:
            outcome, result = "invalid_arguments", f"error: {e}"
        except TimeoutError:
            outcome, result = "timeout", f"error: the tool did not answer within {self._timeout(ctx):g}s"
        except ComponentError as e:
            outcome, result = "error", f"error: {e}"
        except Exception as e:  # a tool's bug must not crash the run: the model hears it failed
            logger.warning("tool %s of agent %s failed", call.name, self.node_id, exc_info=True)
            outcome, result = "error", f"error: the tool failed ({type(e).__name__})"
        if len(result) > self.max_result_chars:
            result = result[: self.max_result_chars] + f"... (cut at {self.max_result_chars} characters)"
        self.meter.tool_call(self.flow, call.name if tool else "(unknown)", outcome)
        if ctx.stream is not None:
            ctx.stream(
                {
                    "event": "tool_result",
                    "node": self.node_id,
                    "id": call.id,
                    "tool": call.name,
                    "outcome": outcome,
                    "result": summarize(result),
                }
            )
        if ctx.trace is not None:
            ctx.trace.append(
                {
                    "node": self.node_id,
                    "type": self.type_name,
                    "event": "tool_call",
                    "tool": call.name,
                    "arguments": summarize(arguments),
                    "outcome": outcome,
                    "result": summarize(result),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
        return result

    def _timeout(self, ctx: RunContext) -> float:
        left = ctx.remaining()
        return self.tool_timeout_s if left is None else min(self.tool_timeout_s, left)

    async def _invoke(self, tool: _Tool, arguments: dict[str, Any], ctx: RunContext) -> str:
        async with asyncio.timeout(self._timeout(ctx)):
            produced = await tool.component.run(arguments, ctx)
        value = produced.get(tool.output)
        return value if isinstance(value, str) else orjson.dumps(value, default=repr).decode()

    @property
    def holds_resources(self) -> bool:
        held: bool = getattr(self.provider, "holds_resources", True)
        return held

    async def aclose(self) -> None:
        await self.provider.aclose()


class _BadArguments(Exception):
    pass


def _arguments(text: str, tool: _Tool) -> dict[str, Any]:
    """The call's arguments, parsed and checked against the tool's schema."""
    try:
        arguments = orjson.loads(text or "{}")
    except orjson.JSONDecodeError as e:
        raise _BadArguments("the arguments are not valid JSON") from e
    if not isinstance(arguments, dict):
        raise _BadArguments("the arguments must be a JSON object")
    error = next(iter(tool.validator.iter_errors(arguments)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise _BadArguments(f"invalid arguments{' at ' + where if where else ''}: {error.message[:300]}")
    return arguments
