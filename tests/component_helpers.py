"""Helpers for component tests: build a component from params, run it, and validate params in a flow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, RunContext
from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime
from cluster.errors import Problem
from cluster.flow.validation import validate
from tests.egress_support import loopback_policy

BUILD = BuildContext(flow_name="test")


def build(cls: type[Component], params: Mapping[str, Any], runtime: Runtime | None = None) -> Any:
    """A component built the way the engine builds it, after checking its params like validation does
    (against the runtime's policy, else a policy that lets flows reach loopback)."""
    policy = runtime.policy if runtime else loopback_policy()
    assert problems_of(cls, params, policy) == [], problems_of(cls, params, policy)
    return cls("node", params, BuildContext(flow_name="test", runtime=runtime))


async def run(
    component: Component, inputs: Mapping[str, Any], run_inputs: Mapping[str, Any] | None = None
) -> Any:
    return dict(await component.run(inputs, RunContext(inputs=dict(run_inputs or {}))))


def problems_of(
    cls: type[Component], params: Mapping[str, Any], policy: OutboundPolicy | None = None
) -> list[Problem]:
    """The problems full validation reports for one node of this type with these params.

    The node is wired input -> node -> output when the component has inputs, so only param problems
    (and no wiring problems) show up.
    """
    nodes: list[dict[str, Any]] = [{"id": "n", "type": cls.type_name, "params": dict(params)}]
    problems = validate({"nodes": nodes, "edges": []}, policy=policy)
    return [p for p in problems if p.path.startswith("/nodes/0/params")]
