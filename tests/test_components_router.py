"""Router: rule order, keywords as whole words, regexes, the default route, and refused patterns."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.components.regexes import MAX_PATTERN_CHARS, regex_problems
from cluster.components.router import Router
from cluster.engine import compile_flow
from tests.component_helpers import build, problems_of, run

RULES = {
    "rules": [
        {"route": "billing", "keywords": ["invoice", "refund", "credit card"]},
        {"route": "outage", "regex": r"\b(down|5\d\d)\b"},
        {"route": "billing", "regex": r"\$\d+"},
    ],
    "default": "general",
}


def test_one_output_per_route_plus_default() -> None:
    ports = Router.ports(RULES)
    assert ports.inputs == ("text",) and ports.default_input == "text" and ports.required == {"text"}
    assert ports.outputs == ("billing", "outage", "general")
    assert ports.default_output == "general"


def test_default_route_named_default_when_not_given() -> None:
    assert Router.ports({"rules": []}).outputs == ("default",)


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("Where is my INVOICE?", "billing"),
        ("pay by Credit Card", "billing"),
        ("the site is down", "outage"),
        ("got a 503", "outage"),
        ("charged $40", "billing"),
        ("refunding is not a keyword match", "general"),
        ("invoices are not a match", "general"),
        ("how do I log in", "general"),
        ("", "general"),
    ],
)
async def test_routes(text: str, route: str) -> None:
    component = build(Router, RULES)
    # Only the chosen port is returned, carrying the input unchanged.
    assert await run(component, {"text": text}) == {route: text}


async def test_first_matching_rule_wins() -> None:
    component = build(Router, RULES)
    assert await run(component, {"text": "refund, the site is down"}) == {
        "billing": "refund, the site is down"
    }


async def test_case_sensitive_rules() -> None:
    params = {"rules": [{"route": "shout", "keywords": ["HELP"], "case_sensitive": True}]}
    component = build(Router, params)
    assert await run(component, {"text": "HELP me"}) == {"shout": "HELP me"}
    assert await run(component, {"text": "help me"}) == {"default": "help me"}


async def test_regex_rules_ignore_case_by_default() -> None:
    component = build(Router, {"rules": [{"route": "r", "regex": "refund"}]})
    assert await run(component, {"text": "REFUND"}) == {"r": "REFUND"}


async def test_only_the_first_max_chars_are_examined() -> None:
    component = build(Router, {"rules": [{"route": "b", "keywords": ["invoice"]}], "max_chars": 20})
    late = "x" * 30 + " invoice"
    assert await run(component, {"text": late}) == {"default": late}


async def test_non_text_input_is_matched_as_json_but_passed_unchanged() -> None:
    component = build(Router, {"rules": [{"route": "b", "keywords": ["invoice"]}]})
    assert await run(component, {"text": {"topic": "invoice"}}) == {"b": {"topic": "invoice"}}


def test_invalid_regex_is_a_problem_at_its_path() -> None:
    params = {"rules": [{"route": "a", "keywords": ["x"]}, {"route": "b", "regex": "(unclosed"}]}
    problems = problems_of(Router, params)
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/rules/1/regex", "invalid_regex")]


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a*)*b", r"(\w+\s?)*$", "(x+x+)+y", "(a+){50}"])
def test_catastrophic_patterns_are_refused(pattern: str) -> None:
    problems = problems_of(Router, {"rules": [{"route": "a", "regex": pattern}]})
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/rules/0/regex", "unsafe_regex")]


@pytest.mark.parametrize(
    "pattern", [r"\b(refund|invoice)s?\b", r"(\d{1,3}\.){3}\d{1,3}", "(a|b)+", "(a++)+", "(a+){2}"]
)
def test_ordinary_patterns_pass(pattern: str) -> None:
    assert regex_problems(pattern, "/p") == []


def test_refused_pattern_would_really_have_been_slow() -> None:
    # Keeps the refusal honest: the same shape on a short input takes measurable time in `re`.
    import re

    started = time.perf_counter()
    re.search("(a+)+$", "a" * 22 + "!")
    assert time.perf_counter() - started > 0.05


def test_ambiguous_pattern_is_refused() -> None:
    (problem,) = regex_problems("[[a]", "/p")
    assert problem.code == "invalid_regex" and "nested set" in problem.message


def test_overlong_pattern() -> None:
    assert [p.code for p in regex_problems("a" * (MAX_PATTERN_CHARS + 1), "/p")] == ["too_long"]


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ({"route": "a"}, "/nodes/0/params/rules/0"),
        ({"route": "a", "keywords": ["x"], "regex": "x"}, "/nodes/0/params/rules/0"),
        ({"route": "a b", "keywords": ["x"]}, "/nodes/0/params/rules/0/route"),
        ({"route": "a", "keywords": []}, "/nodes/0/params/rules/0/keywords"),
    ],
)
def test_bad_rules(rule: dict[str, object], path: str) -> None:
    problems = problems_of(Router, {"rules": [rule]})
    assert [(p.path, p.code) for p in problems] == [(path, "invalid_params")]


async def test_only_the_chosen_branch_runs_in_a_flow() -> None:
    flow = compile_flow(
        {
            "nodes": [
                {"id": "q", "type": "ChatInput", "params": {"name": "question"}},
                {"id": "intent", "type": "Router", "params": RULES},
                {"id": "billing", "type": "PromptTemplate", "params": {"template": "BILLING {q}"}},
                {"id": "general", "type": "PromptTemplate", "params": {"template": "GENERAL {q}"}},
                {"id": "outage", "type": "PromptTemplate", "params": {"template": "OUTAGE {q}"}},
                {"id": "llm", "type": "LLM", "params": {}},
            ],
            "edges": [
                {"source": "q", "target": "intent"},
                {"source": "intent", "target": "billing", "source_output": "billing"},
                {"source": "intent", "target": "general", "source_output": "general"},
                {"source": "intent", "target": "outage", "source_output": "outage"},
                {"source": "billing", "target": "llm"},
                {"source": "general", "target": "llm"},
                {"source": "outage", "target": "llm"},
            ],
        }
    )
    result = await flow.run({"question": "my invoice is wrong"}, trace=True)
    assert result.outputs == {"llm": "[echo-1] BILLING my invoice is wrong"}
    assert result.trace is not None
    statuses = {entry["node"]: entry["status"] for entry in result.trace}
    assert statuses["billing"] == "ok"
    assert statuses["general"] != "ok" and statuses["outage"] != "ok"


@given(st.text(alphabet="ab(){}[]*+?|\\^$.:!<>=P0123456789,-", max_size=30))
@settings(max_examples=500, deadline=None)
def test_regex_checks_never_raise(pattern: str) -> None:
    for problem in regex_problems(pattern, "/p"):
        assert problem.code in {"invalid_regex", "unsafe_regex", "too_long"}


@given(st.text(max_size=200))
async def test_router_always_returns_exactly_one_known_port(text: str) -> None:
    component = build(Router, RULES)
    out = await run(component, {"text": text})
    assert len(out) == 1 and set(out) <= set(Router.ports(RULES).outputs)
    assert list(out.values()) == [text]
