"""The example flows in flows/: valid, compiled, their own examples pass, and they behave as documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cluster.engine import compile_flow, run_examples
from cluster.flow.validation import validate

FLOWS = Path(__file__).resolve().parent.parent / "flows"


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FLOWS / name).read_text())
    return document


@pytest.mark.parametrize("name", ["support_qa.json", "support_qa_v2.json", "rag_qa.json"])
async def test_flow_is_valid_and_its_examples_pass(name: str) -> None:
    document = load(name)
    assert validate(document) == []
    assert document["tests"], "every example flow carries examples"
    compiled = compile_flow(document)
    assert await run_examples(compiled) == []


async def test_design_note_flow_is_valid_and_runs_offline() -> None:
    """The design note's own flow, exactly as written there: no name, no examples, a HuggingFaceLLM."""
    document = load("design_note.json")
    assert validate(document) == []  # HF_TOKEN is one of the default flow secrets
    compiled = compile_flow(document)
    assert compiled.required_inputs == {"input"}
    result = await compiled.run({"input": "季度报告"})
    assert result.outputs == {"llm_1": "[qwen] 请总结以下内容季度报告"}


def test_both_support_versions_are_one_flow() -> None:
    v1, v2 = compile_flow(load("support_qa.json")), compile_flow(load("support_qa_v2.json"))
    assert v1.name == v2.name == "support_qa"
    assert v1.digest != v2.digest
    # Same contract for callers, so a hot swap between them is invisible to clients.
    assert v1.input_names == v2.input_names == {"question"}
    assert v1.output_names == v2.output_names == ("answer",)


async def test_support_v1_answer() -> None:
    result = await compile_flow(load("support_qa.json")).run({"question": "Can I export my data?"})
    assert result.outputs["answer"].startswith("[echo-1] (system: You are a helpful, concise support agent.)")
    assert result.outputs["answer"].endswith("Question: Can I export my data?")


@pytest.mark.parametrize(
    ("question", "branch", "skipped"),
    [
        ("I want a refund for last month", "billing_prompt", "general_prompt"),
        ("My credit card was declined", "billing_prompt", "general_prompt"),
        ("Is there a dark mode?", "general_prompt", "billing_prompt"),
    ],
)
async def test_support_v2_routes_by_intent(question: str, branch: str, skipped: str) -> None:
    result = await compile_flow(load("support_qa_v2.json")).run({"question": question}, trace=True)
    assert result.trace is not None
    status = {entry["node"]: entry["status"] for entry in result.trace}
    assert status[branch] == "ok" and status[skipped] != "ok"
    assert result.outputs["answer"].endswith(f"Question: {question}")


async def test_rag_retrieves_and_parses() -> None:
    compiled = compile_flow(load("rag_qa.json"))
    results, _, _ = await compiled.execute({"question": "Which regions does Acme Cloud run in?"})
    by_id = {step.node_id: produced for step, produced in zip(compiled.steps, results, strict=True)}
    assert by_id["docs"] is not None
    assert [d["id"] for d in by_id["docs"]["documents"]][0] == "regions"
    assert "Frankfurt" in by_id["llm"]["text"]
    assert by_id["answer"]["message"] == {
        "answer": "one or two sentences",
        "sources": ["id of each passage used"],
    }
