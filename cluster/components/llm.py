"""LLM: sends a prompt (and an optional system message) to a provider and outputs the reply as `text`.

    {"id": "llm", "type": "LLM", "params": {"provider": "openai", "model": "gpt-4o-mini",
     "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "temperature": 0.2}}

Inputs: `prompt` (default, required) and, unless `params.system` fixes the system message, `system`
(optional).
Providers: `echo` (offline, deterministic) and `openai` (any OpenAI-compatible endpoint). The key is a
secret the operator lists (FLOWFLEET_FLOW_SECRETS), every request goes through the egress policy
(cluster.egress), and in dry runs (no runtime) an `openai` node answers like `echo`, or with the reply an
example records for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.meter import NO_METER
from cluster.components.providers import OnDelta, Provider
from cluster.components.providers.chat import Message
from cluster.components.providers.echo import EchoProvider
from cluster.components.providers.openai import OpenAIConfig, OpenAIProvider
from cluster.egress.policy import OPENAI_DEFAULT_BASE_URL, Outbound
from cluster.errors import ComponentError, Problem
from cluster.flow.templates import to_text

MAX_HISTORY_MESSAGES = 1000


def token_sink(ctx: RunContext, node_id: str) -> OnDelta | None:
    """For a streamed run: a callback emitting each piece of a reply's text as the node's `token` event."""
    emit = ctx.stream
    if emit is None:
        return None
    return lambda delta: emit({"event": "token", "node": node_id, "delta": delta})


async def history_messages(ctx: RunContext, n_messages: int) -> list[Message]:
    """The last `n_messages` messages of the run's conversation as chat messages; [] (without awaiting
    anything) when there is no conversation or n_messages is 0."""
    conversation = ctx.conversation
    if conversation is None or n_messages <= 0:
        return []
    return [message.as_chat() for message in await conversation.history(n_messages)]


def build_provider(params: Mapping[str, Any], build: BuildContext) -> Provider:
    """The provider an LLM node's (valid) params describe. Without a runtime (dry runs: publish, sync,
    validate, examples) an `openai` node answers offline, as `echo` does, under its model's name."""
    if params.get("provider", "echo") == "echo":
        return EchoProvider(params.get("model", "echo-1"))
    runtime = build.runtime
    if runtime is None:
        return EchoProvider(params["model"])
    base_url = params.get("base_url") or runtime.policy.openai_base_url or OPENAI_DEFAULT_BASE_URL
    key_name = params.get("api_key_env", "OPENAI_API_KEY")
    config = OpenAIConfig(
        base_url=base_url,
        model=params["model"],
        temperature=params.get("temperature"),
        max_tokens=params.get("max_tokens"),
        timeout_s=float(params.get("timeout_s", 60.0)),
        retries=int(params.get("retries", 2)),
        backoff_s=float(params.get("backoff_s", 0.5)),
    )
    key = runtime.secret(key_name) if key_name else None
    return OpenAIProvider(config, key, runtime.http_client(timeout=config.timeout_s), runtime.redact)


class LLM(Component):
    type_name = "LLM"
    description = "Asks a language model: inputs `prompt` (default) and `system`; output `text`."
    # Reads the conversation when n_messages > 0; a class flag, so set for every LLM (opening a run's
    # conversation reads nothing until `history` is called).
    uses_conversation = True
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "provider": {"enum": ["echo", "openai"], "default": "echo"},
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
            "system": {"type": "string", "description": "system message, unless the `system` input is fed"},
            "base_url": {
                "type": "string",
                "pattern": "^https?://[^\\s]+$",
                "maxLength": 2000,
                "description": "default: the operator's OPENAI_BASE_URL, else " + OPENAI_DEFAULT_BASE_URL,
            },
            "api_key_env": {
                "description": "name of the secret holding the API key (one the operator lists in "
                "FLOWFLEET_FLOW_SECRETS); null for no key",
                "oneOf": [{"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}, {"type": "null"}],
                "default": "OPENAI_API_KEY",
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 600, "default": 60},
            "retries": {"type": "integer", "minimum": 0, "maximum": 10, "default": 2},
            "backoff_s": {"type": "number", "minimum": 0, "maximum": 30, "default": 0.5},
            "n_messages": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_HISTORY_MESSAGES,
                "default": 0,
                "description": "how many messages of the run's conversation (earlier turns) go before the "
                "prompt, as chat messages; 0: none",
            },
            "description": {"type": "string", "maxLength": 1000},
        },
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.provider = build_provider(params, build)
        self.flow, self.model = build.flow_name, params.get("model", "echo-1")
        self.meter = build.runtime.meter if build.runtime is not None else NO_METER
        self.n_messages = int(params.get("n_messages", 0))

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        # A system message fixed in the params cannot be replaced by an edge or, worse, by a run input.
        inputs = ("prompt",) if "system" in params else ("prompt", "system")
        return Ports(
            inputs=inputs,
            required=frozenset({"prompt"}),
            default_input="prompt",
            outputs=("text",),
            default_output="text",
        )

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        if params.get("provider", "echo") == "openai" and "model" not in params:
            return [Problem(f"{path}/model", "missing_param", "provider 'openai' needs a model name")]
        return []

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        if params.get("provider", "echo") != "openai":
            return ()
        uses = []
        key_name = params.get("api_key_env", "OPENAI_API_KEY")
        if key_name:
            uses.append(Outbound("secret", "api_key_env", key_name))
        if "base_url" in params:
            uses.append(Outbound("url", "base_url", params["base_url"]))
        return tuple(uses)

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        if ctx.replies and self.node_id in ctx.replies:  # an example's recorded reply (offline dry run)
            return {"text": ctx.replies[self.node_id]}
        system = inputs.get("system")
        system_text = to_text(system) if system is not None else self.params.get("system")
        messages: list[Message] = [{"role": "system", "content": system_text}] if system_text else []
        if self.n_messages and ctx.conversation is not None:
            messages += await history_messages(ctx, self.n_messages)
        messages.append({"role": "user", "content": to_text(inputs["prompt"])})
        on_delta = token_sink(ctx, self.node_id)
        if on_delta is None:
            reply = await self.provider.chat(messages, ctx.remaining)
        else:  # only streamed runs ask for a streamed reply (a plugin's provider may not know on_delta)
            reply = await self.provider.chat(messages, ctx.remaining, on_delta=on_delta)
        for kind in ("prompt", "completion"):
            count = reply.usage.get(f"{kind}_tokens")
            if count:
                self.meter.tokens(self.flow, self.model, kind, count)
        if reply.content is None:
            raise ComponentError("malformed response: the model answered with tool calls, not text")
        return {"text": reply.content}

    @property
    def holds_resources(self) -> bool:
        held: bool = getattr(self.provider, "holds_resources", True)
        return held

    async def aclose(self) -> None:
        await self.provider.aclose()
