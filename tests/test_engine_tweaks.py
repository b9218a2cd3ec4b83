"""Tweaked variants of a compiled flow: they run with the new params, are cached (bounded), re-checked like
the original, built with its runtime, and closed only once nothing can use them."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.registry import Registry, builtin_components
from cluster.egress.policy import Outbound, OutboundPolicy
from cluster.egress.runtime import Runtime
from cluster.engine import CompiledFlow, compile_flow
from cluster.engine.tweaks import MAX_VARIANTS
from cluster.errors import InvalidTweaks, TweakNotAllowed

BUILDS: dict[str, int] = {}
CLOSED: list[str] = []
GATES: dict[str, asyncio.Event] = {}
HOLDS: dict[str, tuple[threading.Event, threading.Event]] = {}


class Tag(Component):
    """Prefixes its input with params.prefix; records builds and closes by prefix; params.gate makes a run
    wait for GATES[gate] (after setting GATES[gate + ':started'])."""

    type_name = "Tag"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"prefix": {"type": "string", "maxLength": 20}, "gate": {"type": "string"}},
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.runtime = build.runtime
        self.prefix = params.get("prefix", "")
        BUILDS[self.prefix] = BUILDS.get(self.prefix, 0) + 1

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(
            inputs=("text",),
            required=frozenset({"text"}),
            default_input="text",
            outputs=("text",),
            default_output="text",
        )

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        gate = self.params.get("gate")
        if gate:
            GATES.setdefault(gate + ":started", asyncio.Event()).set()
            await GATES.setdefault(gate, asyncio.Event()).wait()
        return {"text": f"{self.prefix}{inputs['text']}"}

    async def aclose(self) -> None:
        CLOSED.append(self.prefix)


class Relay(Component):
    """From level 5 up it uses a secret, declared under `channel` (not a param): a listed one up to 8, an
    unlisted one from 9. With mode "direct" it reaches an address, declared under `mode` itself."""

    type_name = "Relay"
    params_schema = {
        "type": "object",
        "properties": {"level": {"type": "integer"}, "mode": {"type": "string"}},
    }

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        level = params.get("level", 0)
        uses = [Outbound("url", "mode", "https://relay.example/")] if params.get("mode") == "direct" else []
        if level >= 5:
            uses.append(Outbound("secret", "channel", "NOT_LISTED" if level >= 9 else "OPENAI_API_KEY"))
        return tuple(uses)

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        return {"text": inputs.get("text")}


class SlowBuild(Component):
    """With params.hold, its constructor signals HOLDS[hold][0] and blocks until HOLDS[hold][1] is set."""

    type_name = "SlowBuild"
    params_schema = {"type": "object", "properties": {"hold": {"type": "string"}}}

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        if "hold" in params:
            entered, release = HOLDS[params["hold"]]
            entered.set()
            assert release.wait(10)

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        return {"text": inputs.get("text")}


REGISTRY = Registry([*builtin_components(), Tag, Relay, SlowBuild])


def key() -> str:
    return uuid.uuid4().hex[:12]


def tag_flow(prefix: str, **tweakable: list[str]) -> CompiledFlow:
    document = {
        "name": "tagger",
        "nodes": [{"id": "tag", "type": "Tag", "params": {"prefix": prefix}}],
        "api": {"tweaks": tweakable or {"tag": ["prefix", "gate"]}},
    }
    return compile_flow(document, registry=REGISTRY)


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the event loop run (not waiting on time) until `condition` holds, in at most 1,000 turns."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


QA = {
    "name": "qa",
    "nodes": [
        {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Q: {question}"}},
        {"id": "llm", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
    ],
    "edges": [{"source": "prompt", "target": "llm"}],
    "api": {"tweaks": {"prompt": ["template"], "llm": ["model", "system", "temperature"]}},
}


async def test_a_variant_runs_with_the_tweaked_params_and_the_original_is_unchanged() -> None:
    compiled = compile_flow(QA, registry=REGISTRY)
    variant = await compiled.tweaked(
        {"llm": {"model": "echo-2", "system": "S"}, "prompt": {"template": "Z {question}"}}
    )
    assert (await variant.run({"question": "hi"})).outputs == {"llm": "[echo-2] (system: S) Z hi"}
    assert (await compiled.run({"question": "hi"})).outputs == {"llm": "[echo-1] Q: hi"}
    assert (variant.name, variant.digest, variant.api) == (compiled.name, compiled.digest, compiled.api)
    assert variant is not compiled and variant.variants is None and compiled.usage is None
    await compiled.aclose()


async def test_a_tweaked_template_may_change_the_run_inputs() -> None:
    compiled = compile_flow(QA, registry=REGISTRY)
    variant = await compiled.tweaked({"prompt": {"template": "{question} / {context}"}})
    assert variant.required_inputs == {"question", "context"}
    assert compiled.required_inputs == {"question"}
    result = await variant.run({"question": "q", "context": "c"})
    assert result.outputs == {"llm": "[echo-1] q / c"}


async def test_no_tweaks_give_the_flow_itself() -> None:
    compiled = compile_flow(QA, registry=REGISTRY)
    assert await compiled.tweaked(None) is compiled
    assert await compiled.tweaked({}) is compiled
    assert await compiled.tweaked({"llm": {}}) is compiled
    untweakable = compile_flow({k: v for k, v in QA.items() if k != "api"}, registry=REGISTRY)
    assert await untweakable.tweaked(None) is untweakable


async def test_variants_are_cached_by_the_canonical_form_of_the_tweaks() -> None:
    prefix = key()
    compiled = tag_flow("x")
    tweaks = [{"tag": {"prefix": prefix, "gate": ""}}, {"tag": {"gate": "", "prefix": prefix}}]
    first, second, third = await asyncio.gather(*(compiled.tweaked(t) for t in (*tweaks, tweaks[0])))
    assert first is second is third
    assert BUILDS[prefix] == 1  # three callers, one compile
    assert compiled.variants is not None and len(compiled.variants) == 1
    await compiled.aclose()


async def test_a_variant_is_built_with_the_original_runtime() -> None:
    runtime = Runtime.from_environ(OutboundPolicy(), {})
    document = {
        "nodes": [{"id": "tag", "type": "Tag", "params": {"prefix": "a"}}],
        "api": {"tweaks": {"tag": ["prefix"]}},
    }
    compiled = compile_flow(document, registry=REGISTRY, runtime=runtime)
    variant = await compiled.tweaked({"tag": {"prefix": key()}})
    assert variant.steps[0].component.runtime is runtime  # type: ignore[attr-defined]
    assert compiled.steps[0].component.runtime is runtime  # type: ignore[attr-defined]
    await compiled.aclose()


@pytest.mark.parametrize(
    ("tweaks", "path", "code"),
    [
        ({"llm": {"temperature": 5}}, "/nodes/1/params/temperature", "invalid_params"),
        ({"prompt": {"template": "{x.__class__}"}}, "/nodes/0/params/template", "unsafe_template"),
    ],
)
async def test_a_value_the_params_schema_refuses_is_a_422_naming_the_tweak(
    tweaks: dict[str, Any], path: str, code: str
) -> None:
    compiled = compile_flow(QA, registry=REGISTRY)
    with pytest.raises(InvalidTweaks) as info:
        await compiled.tweaked(tweaks)
    error = info.value
    assert (type(error), error.code, error.http_status) == (InvalidTweaks, "invalid_tweaks", 422)
    ((node, params),) = tweaks.items()
    (param,) = params
    assert error.message.startswith(f"tweak {node}.{param} ({path}): ")
    (problem,) = error.details["problems"]
    assert (problem["path"], problem["code"], problem["node"], problem["param"]) == (path, code, node, param)
    assert compiled.variants is not None and len(compiled.variants) == 0  # refusals are not cached


async def test_a_param_outside_the_allow_list_and_tweaks_on_a_flow_without_one() -> None:
    compiled = compile_flow(QA, registry=REGISTRY)
    with pytest.raises(TweakNotAllowed) as info:
        await compiled.tweaked({"llm": {"provider": "openai"}})
    assert info.value.details["param"] == "provider"
    untweakable = compile_flow({k: v for k, v in QA.items() if k != "api"}, registry=REGISTRY)
    with pytest.raises(TweakNotAllowed, match="tweaks are off for this flow"):
        await untweakable.tweaked({"llm": {"temperature": 1}})


async def test_secret_rules_hold_for_tweaked_params() -> None:
    document = {
        "nodes": [{"id": "relay", "type": "Relay", "params": {"level": 1, "mode": "relayed"}}],
        "api": {"tweaks": {"relay": ["level", "mode"]}},
    }
    compiled = compile_flow(document, registry=REGISTRY)
    variant = await compiled.tweaked({"relay": {"level": 2, "mode": "queued"}})
    assert (await variant.run({"text": "t"})).outputs == {"relay": "t"}
    with pytest.raises(InvalidTweaks) as info:  # the policy refuses the secret, as it would in a document
        await compiled.tweaked({"relay": {"level": 9}})
    assert type(info.value) is InvalidTweaks
    assert [(p["path"], p["code"]) for p in info.value.details["problems"]] == [
        ("/nodes/0/params/channel", "secret_not_allowed")
    ]
    with pytest.raises(TweakNotAllowed, match="would change what it reaches outside the flow") as refused:
        await compiled.tweaked({"relay": {"level": 5}})  # a listed secret, but one the flow did not use
    assert (refused.value.node, refused.value.param) == ("relay", "level")


async def test_a_value_that_makes_its_param_an_address_is_not_allowed() -> None:
    document = {
        "nodes": [{"id": "relay", "type": "Relay", "params": {"mode": "relayed"}}],
        "api": {"tweaks": {"relay": ["level", "mode"]}},
    }
    compiled = compile_flow(document, registry=REGISTRY)
    with pytest.raises(TweakNotAllowed) as info:
        await compiled.tweaked({"relay": {"mode": "direct"}})
    error = info.value
    assert (error.node, error.param, error.http_status) == ("relay", "mode", 422)
    expected = "param 'mode' of node 'relay' cannot be tweaked to this value: it is an address the node"
    assert error.message == expected + " connects to"


async def test_a_variant_cannot_be_tweaked_again() -> None:
    compiled = compile_flow(QA, registry=REGISTRY)
    variant = await compiled.tweaked({"llm": {"temperature": 1}})
    with pytest.raises(InvalidTweaks, match="cannot be tweaked again"):
        await variant.tweaked({"llm": {"temperature": 0.5}})
    assert await variant.tweaked(None) is variant


# --- cache bound and closing ------------------------------------------------------------------------------


async def test_the_cache_keeps_at_most_32_variants_and_closes_evicted_idle_ones() -> None:
    compiled = tag_flow(key())
    prefixes = [key() for _ in range(MAX_VARIANTS + 3)]
    for prefix in prefixes:
        variant = await compiled.tweaked({"tag": {"prefix": prefix}})
        assert (await variant.run({"text": "t"})).outputs == {"tag": f"{prefix}t"}
    assert compiled.variants is not None and len(compiled.variants) == MAX_VARIANTS
    await eventually(lambda: set(prefixes[:3]) <= set(CLOSED))
    assert not set(prefixes[3:]) & set(CLOSED)
    await compiled.aclose()
    assert set(prefixes) <= set(CLOSED)


async def evict(compiled: CompiledFlow) -> None:
    """Push every current variant out of the cache with new, run-once variants."""
    for _ in range(MAX_VARIANTS):
        await (await compiled.tweaked({"tag": {"prefix": key()}})).run({"text": ""})


async def test_an_evicted_variant_is_closed_only_after_its_last_run_ends() -> None:
    compiled = tag_flow(key())
    prefix, gate = key(), key()
    variant = await compiled.tweaked({"tag": {"prefix": prefix, "gate": gate}})
    running = asyncio.create_task(variant.run({"text": "t"}))
    await GATES.setdefault(gate + ":started", asyncio.Event()).wait()
    await evict(compiled)
    assert prefix not in CLOSED  # evicted, but a run is still using it
    GATES.setdefault(gate, asyncio.Event()).set()
    assert (await running).outputs == {"tag": f"{prefix}t"}
    await eventually(lambda: prefix in CLOSED)
    await compiled.aclose()


async def test_a_variant_handed_out_before_eviction_stays_open_for_its_run() -> None:
    compiled = tag_flow(key())
    prefix = key()
    variant = await compiled.tweaked({"tag": {"prefix": prefix}})
    await evict(compiled)
    for _ in range(20):  # a (wrongly) scheduled close would run in these turns of the loop
        await asyncio.sleep(0)
    assert prefix not in CLOSED
    assert (await variant.run({"text": "t"})).outputs == {"tag": f"{prefix}t"}
    await eventually(lambda: prefix in CLOSED)
    await compiled.aclose()


async def test_aclose_closes_the_original_and_every_variant_cached_or_evicted() -> None:
    original = key()
    compiled = tag_flow(original)
    never_run = key()
    await compiled.tweaked({"tag": {"prefix": never_run}})  # handed out, never run: only aclose closes it
    await evict(compiled)
    cached = key()
    variant = await compiled.tweaked({"tag": {"prefix": cached}})
    await variant.run({"text": ""})
    assert never_run not in CLOSED and cached not in CLOSED
    assert compiled.holds_resources
    await compiled.aclose()
    assert {original, never_run, cached} <= set(CLOSED)
    assert CLOSED.count(cached) == 1
    with pytest.raises(RuntimeError, match="closed"):
        await compiled.tweaked({"tag": {"prefix": key()}})
    with pytest.raises(RuntimeError, match="closed"):
        await variant.run({"text": ""})


async def test_holds_resources_counts_the_variants() -> None:
    compiled = compile_flow(QA, registry=REGISTRY)  # nothing in it holds a resource
    assert not compiled.holds_resources
    await compiled.tweaked({"llm": {"temperature": 1}})
    assert compiled.holds_resources  # a variant to close: the replica must call aclose
    await compiled.aclose()
    assert not compiled.holds_resources


async def test_a_caller_cancelled_while_its_variant_compiles_leaves_no_count_behind() -> None:
    hold = key()
    entered, release = HOLDS.setdefault(hold, (threading.Event(), threading.Event()))
    document = {
        "nodes": [{"id": "slow", "type": "SlowBuild"}],
        "api": {"tweaks": {"slow": ["hold"]}},
    }
    compiled = compile_flow(document, registry=REGISTRY)
    waiting = asyncio.create_task(compiled.tweaked({"slow": {"hold": hold}}))
    assert await asyncio.to_thread(entered.wait, 10)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    variant = await compiled.tweaked({"slow": {"hold": hold}})  # the compile finished and was cached
    assert variant.usage is not None and (variant.usage.handed_out, variant.usage.running) == (1, 0)
    await variant.run({"text": "t"})
    assert (variant.usage.handed_out, variant.usage.running) == (0, 0)
    await compiled.aclose()
