"""Compiling and running flows: concurrency, timeouts, failures, cancellation, router skipping, traces."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from cluster.engine import CompiledFlow, compile_analysis, compile_flow, run_examples
from cluster.errors import FlowValidationError, NodeFailed, RunInputError, RunTimeout
from cluster.flow.hashing import content_address
from cluster.flow.validation import check_and_analyse
from tests.engine_components import BARRIERS, CALLS, CLOSED, EVENTS, edge, node, registry

REGISTRY = registry()


def compiled(document: dict[str, Any]) -> CompiledFlow:
    return compile_flow(document, registry=REGISTRY)


def key() -> str:
    return uuid.uuid4().hex


def event(name: str) -> asyncio.Event:
    return EVENTS.setdefault(name, asyncio.Event())


# --- compile ------------------------------------------------------------------------------------------


def test_compile_exposes_what_the_fleet_needs() -> None:
    document = {
        "name": "demo",
        "nodes": [node("a"), node("j", "Join"), node("o", "Out", name="answer")],
        "edges": [edge("a", "j", None, "a"), edge("j", "o")],
        "tests": [{"name": "t", "inputs": {"text": "x", "b": "y"}}],
    }
    flow = compiled(document)
    assert flow.name == "demo"
    assert flow.digest == content_address(document)[1]
    assert flow.node_count == 3
    assert flow.required_inputs == {"text", "b"}
    assert flow.input_names == {"text", "b", "c"}
    assert flow.output_names == ("answer",)
    assert [t.name for t in flow.tests] == ["t"]


async def test_compile_analysis_is_compile_flow_after_validation() -> None:
    document = {
        "nodes": [node("a"), node("j", "Join"), node("o", "Out", name="answer")],
        "edges": [edge("a", "j", None, "a"), edge("j", "o")],
    }
    analysis = check_and_analyse(document, registry=REGISTRY)
    split = compile_analysis(analysis, digest="d" * 64)
    whole = compiled(document)
    assert split.digest == "d" * 64
    assert [s.node_id for s in split.steps] == [s.node_id for s in whole.steps]
    assert (split.outputs, split.required_inputs, split.input_names) == (
        whole.outputs,
        whole.required_inputs,
        whole.input_names,
    )
    inputs = {"text": "x", "b": "y"}
    assert (await split.run(inputs)).outputs == (await whole.run(inputs)).outputs


def test_digest_ignores_key_order_and_spacing() -> None:
    one = {"nodes": [{"id": "a", "type": "Upper"}], "edges": []}
    two = {"edges": [], "nodes": [{"type": "Upper", "id": "a"}]}
    assert compiled(one).digest == compiled(two).digest


def test_compile_rejects_an_invalid_flow() -> None:
    with pytest.raises(FlowValidationError) as info:
        compiled({"nodes": [node("a", "Nope")]})
    assert [(p.path, p.code) for p in info.value.problems] == [("/nodes/0/type", "unknown_type")]


def test_compile_reports_a_component_that_cannot_be_built() -> None:
    with pytest.raises(FlowValidationError) as info:
        compiled({"nodes": [node("a", "Broken", where="init")]})
    (problem,) = info.value.problems
    assert (problem.path, problem.code) == ("/nodes/0", "build_failed")
    assert "API_KEY is not set" in problem.message


async def test_compiled_flow_does_not_see_later_changes_to_the_document() -> None:
    document = {"nodes": [node("a", "Const", value="one")]}
    flow = compiled(document)
    document["nodes"][0]["params"]["value"] = "two"
    assert (await flow.run({})).outputs == {"a": "one"}


async def test_components_are_built_once_per_compile_not_per_run() -> None:
    counter = key()
    flow = compiled({"nodes": [node("a", count=counter)]})
    for _ in range(3):
        await flow.run({"text": "x"})
    assert CALLS[counter] == 3  # reset to 0 in the one constructor call, then three runs


async def test_aclose_closes_every_component_even_if_one_fails(caplog: pytest.LogCaptureFixture) -> None:
    a, b = key(), key()
    document = {
        "nodes": [node(a, "Closing"), node("bad", "Closing", fail=True), node(b, "Closing")],
        "edges": [edge(a, "bad"), edge("bad", b)],
    }
    await compiled(document).aclose()
    assert [n for n in CLOSED if n in (a, b)] == [a, b]
    assert "closing node bad of flow None failed" in caplog.text


# --- running --------------------------------------------------------------------------------------------


async def test_run_chain_with_default_ports() -> None:
    flow = compiled({"nodes": [node("a"), node("b")], "edges": [edge("a", "b")]})
    result = await flow.run({"text": "hi"})
    assert result.outputs == {"b": "HI"}
    assert result.trace is None
    assert result.duration_ms >= 0


async def test_run_with_named_ports_and_run_inputs() -> None:
    document = {
        "nodes": [node("x", "Const", value="X"), node("j", "Join", sep="-"), node("o", "Out", name="answer")],
        "edges": [edge("x", "j", "value", "b"), edge("j", "o")],
    }
    flow = compiled(document)
    assert (await flow.run({"a": "A"})).outputs == {"answer": "A-X"}
    assert (await flow.run({"a": "A", "c": "C"})).outputs == {"answer": "A-X-C"}


async def test_an_input_the_flow_does_not_take_is_refused_with_what_it_takes() -> None:
    document = {
        "nodes": [node("x", "Const", value="X"), node("j", "Join", sep="-"), node("o", "Out", name="answer")],
        "edges": [edge("x", "j", "value", "b"), edge("j", "o")],
    }
    flow = compiled(document)
    with pytest.raises(RunInputError) as refused:
        await flow.run({"a": "A", "unused": 1, "also": 2})
    assert str(refused.value) == (
        "unknown input(s): also, unused; this flow takes a (any, required), c (any, optional)"
    )
    assert refused.value.details["unknown"] == ["also", "unused"]
    assert [spec["name"] for spec in refused.value.details["inputs"]] == ["a", "c"]
    first = {"name": "a", "type": "any", "required": True, "nodes": ["j"]}
    assert refused.value.details["inputs"][0] == first


async def test_independent_branches_run_concurrently() -> None:
    # Both Meet nodes wait on one two-party barrier: the run can only finish if they run at the same time.
    barrier = key()
    BARRIERS[barrier] = asyncio.Barrier(2)
    document = {
        "nodes": [node("m1", "Meet", key=barrier), node("m2", "Meet", key=barrier), node("j", "Join")],
        "edges": [edge("m1", "j", None, "a"), edge("m2", "j", None, "b")],
    }
    result = await compiled(document).run({"text": "t"}, timeout=10)
    assert result.outputs == {"j": "t+t"}


async def test_branches_after_a_shared_node_run_concurrently() -> None:
    # a -> (m1, m2) -> j: the two branches start only once a is done, and must then meet.
    barrier = key()
    BARRIERS[barrier] = asyncio.Barrier(2)
    document = {
        "nodes": [
            node("a"),
            node("m1", "Meet", key=barrier),
            node("m2", "Meet", key=barrier),
            node("j", "Join"),
        ],
        "edges": [edge("a", "m1"), edge("a", "m2"), edge("m1", "j", None, "a"), edge("m2", "j", None, "b")],
    }
    result = await compiled(document).run({"text": "t"}, timeout=10)
    assert result.outputs == {"j": "T+T"}


async def test_dependent_nodes_do_not_run_concurrently() -> None:
    # The control for the test above: in a chain the same barrier can never fill, so the run times out.
    barrier = key()
    BARRIERS[barrier] = asyncio.Barrier(2)
    document = {
        "nodes": [node("m1", "Meet", key=barrier), node("m2", "Meet", key=barrier)],
        "edges": [edge("m1", "m2")],
    }
    with pytest.raises(RunTimeout):
        await compiled(document).run({"text": "t"}, timeout=0.2)


async def test_concurrent_runs_share_one_compiled_flow() -> None:
    flow = compiled(
        {
            "nodes": [node("a"), node("b"), node("j", "Join")],
            "edges": [edge("a", "j", None, "a"), edge("b", "j", None, "b")],
        }
    )
    results = await asyncio.gather(*(flow.run({"text": f"r{i}"}) for i in range(50)))
    assert [r.outputs for r in results] == [{"j": f"R{i}+R{i}"} for i in range(50)]


async def test_run_context_carries_deadline_and_a_run_id() -> None:
    flow = compiled(
        {
            "nodes": [node("d", "Deadline"), node("o", "Out"), node("i", "Out")],
            "edges": [edge("d", "o"), edge("d", "i", "run_id")],
        }
    )
    first = await flow.run({}, timeout=30)
    second = await flow.run({})
    assert 0 < first.outputs["o"] <= 30
    assert second.outputs["o"] is None
    assert first.outputs["i"] != second.outputs["i"]


# --- inputs ------------------------------------------------------------------------------------------------


async def test_missing_required_inputs() -> None:
    flow = compiled({"nodes": [node("j", "Join")]})
    takes = r"this flow takes a \(any, required\), b \(any, required\), c \(any, optional\)"
    with pytest.raises(RunInputError, match=r"missing required input\(s\): a, b; " + takes):
        await flow.run({"c": 1})


@pytest.mark.parametrize("inputs", [["text"], "text", {1: "x"}])
async def test_inputs_must_be_a_mapping_of_names(inputs: Any) -> None:
    with pytest.raises(RunInputError):
        await compiled({"nodes": [node("a")]}).run(inputs)


# --- failures and timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("component", "upstream said no"),
        ("bug", "ZeroDivisionError: division by zero"),
        ("timeout", "TimeoutError: socket read timed out"),
        ("not_mapping", "returned str, not a mapping of output ports"),
        ("bad_port", "returned unknown output port(s): nope"),
    ],
)
async def test_failing_node_fails_the_run_with_its_id(kind: str, reason: str) -> None:
    flow = compiled({"nodes": [node("a"), node("boom", "Fail", kind=kind)], "edges": [edge("a", "boom")]})
    with pytest.raises(NodeFailed) as info:
        await flow.run({"text": "x"})
    assert (info.value.node_id, info.value.reason) == ("boom", reason)


async def test_flowfleet_errors_from_a_component_pass_through() -> None:
    flow = compiled(
        {"nodes": [node("a"), node("check", "Fail", kind="input")], "edges": [edge("a", "check")]}
    )
    with pytest.raises(RunInputError, match="input 'when' is not a date"):
        await flow.run({"text": "x"})


def test_output_keys_come_from_the_built_components() -> None:
    document = {
        "nodes": [node("a"), node("o1", "FixedName"), node("o2", "FixedName")],
        "edges": [edge("a", "o1"), edge("a", "o2")],
    }
    with pytest.raises(FlowValidationError) as info:
        compiled(document)
    assert [(p.path, p.code) for p in info.value.problems] == [("/nodes/2", "duplicate_output")]


async def test_failing_node_cancels_its_running_siblings() -> None:
    hang = key()
    document = {
        "nodes": [node("h", "Hang", key=hang), node("f", "Fail", after=hang + ":started"), node("j", "Join")],
        "edges": [edge("h", "j", None, "a"), edge("f", "j", None, "b")],
    }
    with pytest.raises(NodeFailed) as info:
        await compiled(document).run({"text": "x"}, timeout=10)
    assert info.value.node_id == "f"
    assert event(hang + ":cancelled").is_set()


async def test_node_timeout() -> None:
    hang = key()
    document = {
        "nodes": [node("a"), {**node("slow", "Hang", key=hang), "timeout_s": 0.05}],
        "edges": [edge("a", "slow")],
    }
    with pytest.raises(RunTimeout) as info:
        await compiled(document).run({"text": "x"}, timeout=30)
    assert (info.value.node_id, info.value.timeout_s) == ("slow", 0.05)
    assert "node 'slow' exceeded its timeout of 0.05s" in str(info.value)
    assert event(hang + ":cancelled").is_set()


async def test_run_timeout_cancels_every_running_node() -> None:
    one, two = key(), key()
    document = {
        "nodes": [node("h1", "Hang", key=one), node("h2", "Hang", key=two), node("j", "Join")],
        "edges": [edge("h1", "j", None, "a"), edge("h2", "j", None, "b")],
    }
    with pytest.raises(RunTimeout) as info:
        await compiled(document).run({"text": "x"}, timeout=0.05, trace=True)
    assert (info.value.node_id, info.value.timeout_s) == (None, 0.05)
    trace = info.value.details["trace"]
    assert sorted((e["node"], e["status"]) for e in trace) == [("h1", "cancelled"), ("h2", "cancelled")]
    assert event(one + ":cancelled").is_set() and event(two + ":cancelled").is_set()


async def test_a_node_ignoring_cancellation_does_not_hold_the_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("cluster.engine.scheduler.CANCEL_GRACE_S", 0.05)
    stubborn, other = key(), key()
    document = {
        "nodes": [node("s", "Stubborn", key=stubborn), node("h", "Hang", key=other), node("j", "Join")],
        "edges": [edge("s", "j", None, "a"), edge("h", "j", None, "b")],
    }
    with pytest.raises(RunTimeout):
        await compiled(document).run({"text": "x"}, timeout=0.05)
    assert "node s (Stubborn) ignored cancellation" in caplog.text
    assert event(other + ":cancelled").is_set()
    event(stubborn + ":release").set()
    await asyncio.wait_for(event(stubborn + ":finished").wait(), timeout=10)


@pytest.mark.parametrize("parallel", [False, True])
async def test_cancelling_the_caller_cancels_the_nodes(parallel: bool) -> None:
    one, two = key(), key()
    if parallel:
        document = {
            "nodes": [node("h1", "Hang", key=one), node("h2", "Hang", key=two), node("j", "Join")],
            "edges": [edge("h1", "j", None, "a"), edge("h2", "j", None, "b")],
        }
    else:
        document = {"nodes": [node("a"), node("h1", "Hang", key=one)], "edges": [edge("a", "h1")]}
    task = asyncio.create_task(compiled(document).run({"text": "x"}))
    await asyncio.wait_for(event(one + ":started").wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert event(one + ":cancelled").is_set()
    if parallel:
        assert event(two + ":cancelled").is_set()


# --- router skipping ------------------------------------------------------------------------------------

ROUTED = {
    "nodes": [
        node("route", "Switch", word="refund"),
        node("yes"),
        node("yes2"),
        node("no", "Picky"),
        node("out_yes", "Out", name="yes"),
        node("out_no", "Out", name="no"),
    ],
    "edges": [
        edge("route", "yes", "yes"),
        edge("yes", "yes2"),
        edge("yes2", "out_yes"),
        edge("route", "no", "no"),
        edge("no", "out_no"),
    ],
}


async def test_router_runs_only_the_chosen_branch_and_skips_the_rest_transitively() -> None:
    flow = compiled(ROUTED)
    taken = await flow.run({"text": "a refund please"}, trace=True)
    assert taken.outputs == {"yes": "A REFUND PLEASE"}
    assert taken.trace is not None
    status = {entry["node"]: entry["status"] for entry in taken.trace}
    assert status == {
        "route": "ok",
        "yes": "ok",
        "yes2": "ok",
        "out_yes": "ok",
        "no": "skipped",
        "out_no": "skipped",
    }
    other = await flow.run({"text": "hello"}, trace=True)
    assert other.outputs == {"no": "hello"}
    assert other.trace is not None
    assert {e["node"] for e in other.trace if e["status"] == "skipped"} == {"yes", "yes2", "out_yes"}


async def test_branches_may_merge_into_one_input() -> None:
    document = {
        "nodes": [node("route", "Switch", word="x"), node("a"), node("b", "Picky"), node("o", "Out")],
        "edges": [edge("route", "a", "yes"), edge("route", "b", "no"), edge("a", "o"), edge("b", "o")],
    }
    flow = compiled(document)
    assert (await flow.run({"text": "x marks"})).outputs == {"o": "X MARKS"}
    assert (await flow.run({"text": "plain"})).outputs == {"o": "plain"}


async def test_node_whose_required_input_was_skipped_is_skipped() -> None:
    # j.a comes from the skipped branch, j.b from a node that ran: j cannot run, and is skipped.
    document = {
        "nodes": [
            node("route", "Switch", word="x"),
            node("c", "Const", value="C"),
            node("j", "Join"),
            node("o", "Out"),
        ],
        "edges": [edge("route", "j", "yes", "a"), edge("c", "j", "value", "b"), edge("j", "o")],
    }
    flow = compiled(document)
    assert (await flow.run({"text": "x"})).outputs == {"o": "x+C"}
    assert (await flow.run({"text": "y"})).outputs == {}


async def test_two_values_for_one_input_fail_the_node() -> None:
    document = {"nodes": [node("a"), node("b"), node("o", "Out")], "edges": [edge("a", "o"), edge("b", "o")]}
    with pytest.raises(NodeFailed) as info:
        await compiled(document).run({"text": "x"})
    assert info.value.node_id == "o"
    assert "input 'value' got values from several edges (a.text, b.text)" in info.value.reason


# --- trace --------------------------------------------------------------------------------------------------


async def test_trace_has_per_node_duration_and_output_summary() -> None:
    long = "z" * 500
    document = {
        "nodes": [
            node("c", "Const", value=long),
            node("u"),
            node("d", "Const", value={"k": [1, 2]}),
            node("n", "Const", value=2.5),
            node("big", "Const", value=list(range(100))),
        ],
        "edges": [edge("c", "u", "value")],
    }
    result = await compiled(document).run({}, trace=True)
    assert result.trace is not None
    by_node = {entry["node"]: entry for entry in result.trace}
    assert set(by_node) == {"c", "u", "d", "n", "big"}
    for entry in result.trace:
        assert entry["status"] == "ok"
        assert entry["duration_ms"] >= 0 and entry["started_ms"] >= 0
    assert by_node["u"]["type"] == "Upper"
    assert by_node["u"]["outputs"]["text"] == "Z" * 200 + "... (500 chars)"
    assert by_node["d"]["outputs"] == {"value": {"k": [1, 2]}}
    assert by_node["n"]["outputs"] == {"value": 2.5}
    assert by_node["big"]["outputs"]["value"].endswith("... (291 chars)")
    assert by_node["u"]["started_ms"] >= by_node["c"]["started_ms"] + by_node["c"]["duration_ms"]


async def test_failed_run_carries_its_partial_trace() -> None:
    flow = compiled({"nodes": [node("a"), node("boom", "Fail")], "edges": [edge("a", "boom")]})
    with pytest.raises(NodeFailed) as info:
        await flow.run({"text": "x"}, trace=True)
    trace = info.value.details["trace"]
    assert [(e["node"], e["status"]) for e in trace] == [("a", "ok"), ("boom", "failed")]
    assert trace[1]["error"] == "node 'boom' failed: upstream said no"


# --- examples ---------------------------------------------------------------------------------------


def with_tests(*tests: dict[str, Any]) -> CompiledFlow:
    document = {
        "nodes": [node("a"), node("o", "Out", name="answer")],
        "edges": [edge("a", "o")],
        "tests": list(tests),
    }
    return compiled(document)


async def test_passing_examples() -> None:
    flow = with_tests(
        {
            "name": "contains",
            "inputs": {"text": "hi"},
            "expect": {"answer": {"contains": "HI", "not_contains": "hi"}},
        },
        {"name": "equals", "inputs": {"text": "x"}, "expect": {"answer": {"equals": "X", "matches": "^X$"}}},
        {"name": "node", "inputs": {"text": "x"}, "expect": {"a": {"equals": "X", "present": True}}},
        {"name": "no checks", "inputs": {"text": "x"}},
    )
    assert await run_examples(flow) == []


async def test_failing_examples_are_reported_with_paths() -> None:
    flow = with_tests(
        {"name": "t0", "inputs": {"text": "hi"}, "expect": {"answer": {"contains": "bye"}}},
        {
            "name": "t1",
            "inputs": {"text": "hi"},
            "expect": {"answer": {"equals": "hi"}, "a": {"present": False}},
        },
        {"name": "t2", "inputs": {"text": "hi"}, "expect": {"answer": {"matches": "^h"}}},
        {"name": "t3", "inputs": {"text": "hi"}, "expect": {"answer": {"not_contains": "H"}}},
    )
    found = await run_examples(flow)
    assert [(p.path, p.code) for p in found] == [
        ("/tests/0/expect/answer", "expectation_failed"),
        ("/tests/1/expect/answer", "expectation_failed"),
        ("/tests/1/expect/a", "expectation_failed"),
        ("/tests/2/expect/answer", "expectation_failed"),
        ("/tests/3/expect/answer", "expectation_failed"),
    ]
    assert found[0].message == "example 't0': 'answer' should contain 'bye', but is 'HI'"


async def test_example_whose_run_fails() -> None:
    document = {
        "nodes": [node("a"), node("boom", "Fail")],
        "edges": [edge("a", "boom")],
        "tests": [{"name": "t", "inputs": {"text": "x"}}],
    }
    (problem,) = await run_examples(compiled(document))
    assert (problem.path, problem.code) == ("/tests/0", "example_failed")
    assert "node 'boom' failed: upstream said no" in problem.message


async def test_example_output_of_a_skipped_branch_is_not_present() -> None:
    document = {
        **ROUTED,
        "tests": [
            {
                "name": "refund",
                "inputs": {"text": "refund"},
                "expect": {"no": {"present": False}, "yes": {"equals": "REFUND"}},
            },
            {"name": "wrong", "inputs": {"text": "other"}, "expect": {"yes": {"contains": "x"}}},
        ],
    }
    found = await run_examples(compiled(document))
    assert [(p.path, p.message) for p in found] == [
        ("/tests/1/expect/yes", "example 'wrong': 'yes' was not produced")
    ]
