"""Helpers for component tests: build a component from params, run it, and validate params in a flow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, RunContext
from cluster.errors import Problem
from cluster.validation import validate

BUILD = BuildContext(flow_name="test")


def build(cls: type[Component], params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Any:
    """A component built the way the engine builds it, after checking its params like validation does."""
    assert problems_of(cls, params) == [], problems_of(cls, params)
    return cls("node", params, BuildContext(flow_name="test", environ=dict(environ or {})))


async def run(
    component: Component, inputs: Mapping[str, Any], run_inputs: Mapping[str, Any] | None = None
) -> Any:
    return dict(await component.run(inputs, RunContext(inputs=dict(run_inputs or {}))))


def problems_of(cls: type[Component], params: Mapping[str, Any]) -> list[Problem]:
    """The problems full validation reports for one node of this type with these params.

    The node is wired input -> node -> output when the component has inputs, so only param problems
    (and no wiring problems) show up.
    """
    nodes: list[dict[str, Any]] = [{"id": "n", "type": cls.type_name, "params": dict(params)}]
    return [p for p in validate({"nodes": nodes, "edges": []}) if p.path.startswith("/nodes/0/params")]
