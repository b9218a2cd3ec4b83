"""warm_up: what a fresh process would otherwise do during its first compile, done ahead of time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from cluster.components.base import Component, Ports, RunContext
from cluster.components.registry import Registry, builtin_components, default_registry
from cluster.engine import compile_flow, warm_up
from cluster.flow.analysis import params_checker
from cluster.flow.validation import validate

FLOW = {
    "nodes": [
        {"id": "in", "type": "ChatInput"},
        {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Q: {q}"}},
        {"id": "llm", "type": "LLM", "params": {"provider": "echo"}},
        {"id": "out", "type": "ChatOutput", "params": {"name": "answer"}},
    ],
    "edges": [
        {"source": "in", "target": "prompt", "source_output": "message"},
        {"source": "prompt", "target": "llm"},
        {"source": "llm", "target": "out"},
    ],
}


class Broken(Component):
    type_name = "Broken"
    params_schema = {"type": "no-such-type"}

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports()

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        return {}


def test_warm_up_builds_every_registered_params_validator() -> None:
    params_checker.cache_clear()
    registry = default_registry()
    assert warm_up() == registry.names()
    info = params_checker.cache_info()
    assert info.currsize == len(registry)
    # The first compile afterwards finds every validator it needs already built.
    compile_flow(FLOW)
    assert params_checker.cache_info().misses == info.misses
    # Calling it again changes nothing.
    assert warm_up(registry) == registry.names()
    assert params_checker.cache_info().misses == info.misses


def test_warm_up_leaves_out_a_component_with_an_unusable_schema(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry([*builtin_components(), Broken])
    ready = warm_up(registry)
    assert "Broken" not in ready
    assert ready == [name for name in registry.names() if name != "Broken"]
    assert "params schema of component Broken is unusable" in caplog.text
    # A flow using it still gets the ordinary problem, not a crash.
    problems = validate({"nodes": [{"id": "b", "type": "Broken"}]}, registry=registry)
    assert [p.code for p in problems] == ["component_error"]
