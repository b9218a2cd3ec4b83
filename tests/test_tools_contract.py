"""What every tool component promises: tool mode, argument schemas matching its inputs, the shared tool
params, a description for the model, and a place among the built-ins."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.components.base import TOOL_PARAMS, Component
from cluster.components.registry import default_registry
from cluster.components.tools.calculator import Calculator
from cluster.components.tools.current_date import CurrentDate
from cluster.components.tools.url_fetch import URLFetch
from cluster.components.tools.web_search import WebSearch
from cluster.engine import compile_flow

TOOLS: list[tuple[type[Component], dict[str, Any]]] = [
    (Calculator, {}),
    (CurrentDate, {}),
    (URLFetch, {"allowed_domains": ["example.com"]}),
    (WebSearch, {}),
]


@pytest.mark.parametrize(("cls", "params"), TOOLS)
def test_tool_contract(cls: type[Component], params: dict[str, Any]) -> None:
    assert default_registry().get(cls.type_name) is cls
    assert cls.tool_mode and len(cls.description) > 40
    schema = cls.params_schema
    assert schema["additionalProperties"] is False
    assert {name: schema["properties"][name] for name in TOOL_PARAMS} == TOOL_PARAMS
    arguments = cls.tool_parameters(params)
    assert arguments["type"] == "object" and arguments["additionalProperties"] is False
    ports = cls.ports(params)
    assert set(arguments["properties"]) == set(ports.inputs)
    assert set(arguments["required"]) == ports.required


@pytest.mark.parametrize(("cls", "params"), TOOLS)
async def test_each_tool_runs_as_an_ordinary_node_offline(
    cls: type[Component], params: dict[str, Any]
) -> None:
    """Fed from the run's inputs, in a dry-run compile (no runtime: nothing calls out)."""
    port = cls.ports(params).inputs[0]
    value = {"expression": "6 * 7", "timezone": "UTC", "url": "https://example.com/a", "query": "q"}[port]
    flow = {"nodes": [{"id": "tool", "type": cls.type_name, "params": params}], "edges": []}
    result = await compile_flow(flow).run({port: value})
    assert isinstance(result.outputs["tool"], str) and result.outputs["tool"]
