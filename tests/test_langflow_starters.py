"""The yardstick: LangFlow 1.13's 27 starter projects, from the pinned `langflow-base` wheel.

Each one either imports with `--provider echo` and then validates, compiles without a runtime and runs
offline end to end, or is refused with an error naming every unsupported component. The wheel is
fetched once into a cache outside the repository (tests/langflow_starters.py); a failed fetch or a
hash mismatch fails these tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from cluster.engine import compile_flow
from cluster.flow.validation import validate
from cluster.langflow import LangflowImportError, translate
from tests.langflow_starters import starter_projects

# What imports today (docs/langflow.md has the table of all 27 and why the others are refused).
IMPORTS = frozenset(
    {
        "Basic Prompting",
        "Blog Writer",
        "Deep Research Agent",
        "Image Sentiment Analysis",
        "Instagram Copywriter",
        "Market Research",
        "Multi Agent Flow",
        "SEO Keyword Generator",
        "Sequential Tasks Agents",
        "Simple Agent",
        "Social Media Agent",
        "Travel Planning Agents",
        "Twitter Thread Generator",
    }
)
MIN_IMPORTS = 13
INPUT_TYPES = ("ChatInput", "TextInput")


@pytest.fixture(scope="module")
def starters() -> dict[str, dict[str, Any]]:
    return starter_projects()


def _outcomes(starters: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any] | LangflowImportError]:
    outcomes: dict[str, dict[str, Any] | LangflowImportError] = {}
    for name, doc in starters.items():
        try:
            outcomes[name] = translate(doc, provider="echo").document
        except LangflowImportError as e:
            outcomes[name] = e
    return outcomes


@pytest.fixture(scope="module")
def outcomes(starters: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any] | LangflowImportError]:
    return _outcomes(starters)


def test_the_wheel_has_the_27_starter_projects(starters: dict[str, dict[str, Any]]) -> None:
    assert len(starters) == 27
    assert IMPORTS <= set(starters)


def test_at_least_the_known_projects_import(outcomes: dict[str, Any]) -> None:
    imported = {name for name, result in outcomes.items() if isinstance(result, dict)}
    assert len(imported) >= MIN_IMPORTS
    assert IMPORTS <= imported, f"no longer importing: {sorted(IMPORTS - imported)}"


async def test_every_imported_project_validates_and_runs_offline(outcomes: dict[str, Any]) -> None:
    ran = []
    for name, flow in outcomes.items():
        if not isinstance(flow, dict):
            continue
        assert validate(flow) == [], name
        compiled = compile_flow(flow)  # no runtime: nothing calls out
        inputs = [n for n in flow["nodes"] if n["type"] in INPUT_TYPES]
        values = {inputs[0]["params"]["name"]: "Tell me about flowfleet."} if inputs else {}
        result = await compiled.run(values, timeout=30)
        assert result.outputs, name
        assert all(value not in (None, "") for value in result.outputs.values()), name
        ran.append(name)
    assert len(ran) >= MIN_IMPORTS


def test_every_other_project_is_refused_naming_its_unsupported_components(
    outcomes: dict[str, Any],
) -> None:
    for name, result in outcomes.items():
        if isinstance(result, dict):
            continue
        assert isinstance(result, LangflowImportError), name
        assert result.unsupported, f"{name}: refused without naming a component: {result}"
        message = str(result)
        for component in result.unsupported:
            assert f"{component.id} ({component.type}): {component.reason}" in message, name
