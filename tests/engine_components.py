"""Small components for engine and validation tests, independent of the built-in ones.

Synchronisation helpers (barriers, events) are looked up by a key given in params, because params are
JSON and cannot carry objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.registry import Registry
from cluster.errors import ComponentError, Problem, RunInputError

BARRIERS: dict[str, asyncio.Barrier] = {}
EVENTS: dict[str, asyncio.Event] = {}
CALLS: dict[str, int] = {}


class Const(Component):
    type_name = "Const"
    params_schema = {"type": "object", "required": ["value"], "properties": {"value": {}}}

    @classmethod
    def ports(cls, params):
        return Ports(outputs=("value",), default_output="value")

    async def run(self, inputs, ctx):
        return {"value": self.params["value"]}


class Upper(Component):
    type_name = "Upper"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"count": {"type": "string"}},
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        if "count" in params:
            CALLS[params["count"]] = 0

    @classmethod
    def ports(cls, params):
        return Ports(
            inputs=("text",),
            required=frozenset({"text"}),
            default_input="text",
            outputs=("text",),
            default_output="text",
        )

    async def run(self, inputs, ctx):
        if "count" in self.params:
            CALLS[self.params["count"]] += 1
        return {"text": str(inputs["text"]).upper()}


class Join(Component):
    """Inputs a, b required; c optional; no default input."""

    type_name = "Join"
    params_schema = {"type": "object", "properties": {"sep": {"type": "string"}}}

    @classmethod
    def ports(cls, params):
        return Ports(
            inputs=("a", "b", "c"), required=frozenset({"a", "b"}), outputs=("text",), default_output="text"
        )

    async def run(self, inputs, ctx):
        parts = [inputs["a"], inputs["b"]] + ([inputs["c"]] if "c" in inputs else [])
        return {"text": self.params.get("sep", "+").join(map(str, parts))}


class Meet(Component):
    """Passes its input through after every party of the barrier params.key has arrived."""

    type_name = "Meet"
    params_schema = {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}

    @classmethod
    def ports(cls, params):
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    async def run(self, inputs, ctx):
        await BARRIERS[self.params["key"]].wait()
        return {"text": inputs.get("text")}


class Hang(Component):
    """Never finishes on its own; sets EVENTS[key:started], and EVENTS[key:cancelled] when cancelled."""

    type_name = "Hang"
    params_schema = {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}

    @classmethod
    def ports(cls, params):
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    async def run(self, inputs, ctx):
        key = self.params["key"]
        EVENTS.setdefault(key + ":started", asyncio.Event()).set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            EVENTS.setdefault(key + ":cancelled", asyncio.Event()).set()
            raise
        return {}  # pragma: no cover


class Stubborn(Component):
    """Ignores cancellation until EVENTS[key:release] is set (a broken plugin); sets key:started and
    key:finished."""

    type_name = "Stubborn"
    params_schema = {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}

    @classmethod
    def ports(cls, params):
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    async def run(self, inputs, ctx):
        key = self.params["key"]
        EVENTS.setdefault(key + ":started", asyncio.Event()).set()
        release = EVENTS.setdefault(key + ":release", asyncio.Event())
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        EVENTS.setdefault(key + ":finished", asyncio.Event()).set()
        return {"text": "late"}


class Fail(Component):
    type_name = "Fail"
    params_schema = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["component", "bug", "not_mapping", "bad_port", "timeout", "input"]},
            "after": {"type": "string"},
        },
    }

    @classmethod
    def ports(cls, params):
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    async def run(self, inputs, ctx):
        kind = self.params.get("kind", "component")
        if "after" in self.params:  # fail only once another node is known to be running
            await EVENTS.setdefault(self.params["after"], asyncio.Event()).wait()
        if kind == "component":
            raise ComponentError("upstream said no")
        if kind == "bug":
            raise ZeroDivisionError("division by zero")
        if kind == "timeout":
            raise TimeoutError("socket read timed out")
        if kind == "input":
            raise RunInputError("input 'when' is not a date")
        if kind == "not_mapping":
            return "oops"  # type: ignore[return-value]
        return {"nope": 1}


class Switch(Component):
    """A router: emits its input on port `yes` when it contains params.word, else on port `no`."""

    type_name = "Switch"
    params_schema = {"type": "object", "required": ["word"], "properties": {"word": {"type": "string"}}}

    @classmethod
    def ports(cls, params):
        return Ports(
            inputs=("text",),
            required=frozenset({"text"}),
            default_input="text",
            outputs=("yes", "no"),
            default_output="yes",
        )

    async def run(self, inputs, ctx):
        text = str(inputs["text"])
        return {"yes": text} if self.params["word"] in text else {"no": text}


class Out(Component):
    type_name = "Out"
    is_output = True
    params_schema = {"type": "object", "properties": {"name": {"type": "string"}}}

    @classmethod
    def ports(cls, params):
        return Ports(
            inputs=("value",),
            required=frozenset({"value"}),
            default_input="value",
            outputs=("value",),
            default_output="value",
        )

    async def run(self, inputs, ctx):
        return {"value": inputs["value"]}


class Picky(Component):
    """Rejects params.forbidden words through check_params, like a template checker would."""

    type_name = "Picky"
    params_schema = {"type": "object", "properties": {"word": {"type": "string"}}}

    @classmethod
    def check_params(cls, params, path):
        if params.get("word") == "bad":
            return [Problem(f"{path}/word", "bad_word", "the word may not be 'bad'")]
        return []

    @classmethod
    def ports(cls, params):
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    async def run(self, inputs, ctx):
        return {"text": inputs.get("text")}


class Broken(Component):
    """A plugin with bugs: its ports() raises, or its constructor raises, depending on params.where."""

    type_name = "Broken"
    params_schema = {
        "type": "object",
        "properties": {
            "where": {"enum": ["ports", "init", "check", "defaults", "output", "required", "not_ports"]}
        },
    }

    def __init__(self, node_id, params, build):
        super().__init__(node_id, params, build)
        if params.get("where") == "init":
            raise ComponentError("environment variable API_KEY is not set")

    @classmethod
    def check_params(cls, params, path):
        if params.get("where") == "check":
            raise KeyError("oops")
        return []

    @classmethod
    def ports(cls, params):
        if params.get("where") == "ports":
            raise RuntimeError("ports exploded")
        if params.get("where") == "defaults":
            return Ports(inputs=("a",), default_input="b")
        if params.get("where") == "not_ports":
            return {"inputs": ["a"]}
        if params.get("where") == "output":
            return Ports(outputs=("a",), default_output="b")
        if params.get("where") == "required":
            return Ports(inputs=("a",), required=frozenset({"b"}))
        return Ports(inputs=("text",), default_input="text")

    async def run(self, inputs, ctx):
        return {"output": inputs.get("text")}


class BadSchema(Component):
    type_name = "BadSchema"
    params_schema = {"type": "no-such-type"}

    @classmethod
    def ports(cls, params):
        return Ports()

    async def run(self, inputs, ctx):  # pragma: no cover
        return {}


class FixedName(Out):
    """An output node whose key ignores params: two of them clash only once built."""

    type_name = "FixedName"

    def output_name(self) -> str:
        return "fixed"


CLOSED: list[str] = []


class Closing(Component):
    """Records its node id in CLOSED when closed; params.fail makes aclose raise instead."""

    type_name = "Closing"
    params_schema = {"type": "object", "properties": {"fail": {"type": "boolean"}}}

    @classmethod
    def ports(cls, params):
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    async def run(self, inputs, ctx):
        return {"text": inputs.get("text")}

    async def aclose(self) -> None:
        if self.params.get("fail"):
            raise OSError("socket already gone")
        CLOSED.append(self.node_id)


class Deadline(Component):
    """Reports the run context it got: the remaining budget and the run id."""

    type_name = "Deadline"
    params_schema = {"type": "object"}

    @classmethod
    def ports(cls, params):
        return Ports(outputs=("remaining", "run_id"), default_output="remaining")

    async def run(self, inputs, ctx: RunContext):
        return {"remaining": ctx.remaining(), "run_id": ctx.run_id}


def node(node_id: str, type_name: str = "Upper", **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_name, "params": params}


def edge(
    source: str, target: str, source_output: str | None = None, target_input: str | None = None
) -> dict[str, Any]:
    e = {"source": source, "target": target}
    if source_output:
        e["source_output"] = source_output
    if target_input:
        e["target_input"] = target_input
    return e


ALL = [
    Stubborn,
    FixedName,
    Closing,
    Const,
    Upper,
    Join,
    Meet,
    Hang,
    Fail,
    Switch,
    Out,
    Picky,
    Broken,
    BadSchema,
    Deadline,
]


def registry() -> Registry:
    return Registry(ALL)
