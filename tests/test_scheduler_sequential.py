"""Flows in which no two nodes can run at once take the scheduler's sequential path; it must behave
exactly like the concurrent scheduler (outputs, skipping, traces, failures, timeouts, cancellation).
The run's time budget (cluster/engine/budget.py, inline in Execution.run) must behave like
`asyncio.timeout` on either path."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import pytest

from cluster.engine import CompiledFlow, compile_flow
from cluster.errors import NodeFailed, RunTimeout
from tests.engine_components import EVENTS, edge, node, registry

REGISTRY = registry()


def compiled(document: dict[str, Any]) -> CompiledFlow:
    return compile_flow(document, registry=REGISTRY)


def concurrent(flow: CompiledFlow) -> CompiledFlow:
    """The same flow forced through the concurrent scheduler."""
    return dataclasses.replace(flow, order=None)


def node_ids(flow: CompiledFlow) -> list[str]:
    assert flow.order is not None
    return [flow.steps[i].node_id for i in flow.order]


def test_a_chain_gets_its_dependency_order_whatever_the_document_order() -> None:
    flow = compiled({"nodes": [node("c"), node("a"), node("b")], "edges": [edge("a", "b"), edge("b", "c")]})
    assert node_ids(flow) == ["a", "b", "c"]
    assert node_ids(compiled({"nodes": [node("only")], "edges": []})) == ["only"]


@pytest.mark.parametrize(
    "document",
    [
        {"nodes": [node("a"), node("b")], "edges": []},  # two roots
        {  # fan-out after a shared node
            "nodes": [node("a"), node("b"), node("c"), node("j", "Join")],
            "edges": [edge("a", "b"), edge("a", "c"), edge("b", "j", None, "a"), edge("c", "j", None, "b")],
        },
        {  # a router's two branches
            "nodes": [node("r", "Switch", word="x"), node("y"), node("n")],
            "edges": [edge("r", "y", "yes"), edge("r", "n", "no")],
        },
    ],
)
def test_anything_that_fans_out_keeps_the_concurrent_scheduler(document: dict[str, Any]) -> None:
    assert compiled(document).order is None


def shape(trace: list[dict[str, Any]] | None) -> list[tuple[str, str, Any]]:
    assert trace is not None
    return [(e["node"], e["status"], e.get("outputs")) for e in trace]


@pytest.mark.parametrize("text", ["a refund please", "hello"])
async def test_a_chain_with_skipped_nodes_runs_as_the_concurrent_scheduler_would(text: str) -> None:
    # Switch -> (yes) Upper -> Out: without the word, the Switch emits only "no", so the rest is skipped.
    flow = compiled(
        {
            "nodes": [node("r", "Switch", word="refund"), node("u"), node("o", "Out", name="answer")],
            "edges": [edge("r", "u", "yes"), edge("u", "o")],
        }
    )
    assert node_ids(flow) == ["r", "u", "o"]
    fast = await flow.run({"text": text}, trace=True)
    slow = await concurrent(flow).run({"text": text}, trace=True)
    assert fast.outputs == slow.outputs
    assert shape(fast.trace) == shape(slow.trace)
    if "refund" in text:
        assert fast.outputs == {"answer": text.upper()}
    else:
        assert fast.outputs == {}
        assert [status for _, status, _ in shape(fast.trace)] == ["ok", "skipped", "skipped"]


async def test_a_failing_node_of_a_chain_fails_the_run_with_the_same_partial_trace() -> None:
    nodes = [node("a"), node("boom", "Fail"), node("c")]
    flow = compiled({"nodes": nodes, "edges": [edge("a", "boom"), edge("boom", "c")]})
    errors = []
    for candidate in (flow, concurrent(flow)):
        with pytest.raises(NodeFailed) as info:
            await candidate.run({"text": "x"}, trace=True)
        errors.append((info.value.node_id, shape(info.value.details["trace"])))
    assert errors[0] == errors[1]
    assert [status for _, status, _ in errors[0][1]] == ["ok", "failed"]


async def test_run_timeout_of_a_chain_cancels_the_running_node_and_keeps_the_trace() -> None:
    hang = uuid.uuid4().hex
    flow = compiled({"nodes": [node("a"), node("h", "Hang", key=hang)], "edges": [edge("a", "h")]})
    assert flow.order is not None
    with pytest.raises(RunTimeout) as info:
        await flow.run({"text": "x"}, timeout=0.05, trace=True)
    assert (info.value.node_id, info.value.timeout_s) == (None, 0.05)
    assert [(n, s) for n, s, _ in shape(info.value.details["trace"])] == [("a", "ok"), ("h", "cancelled")]
    assert EVENTS.setdefault(hang + ":cancelled", asyncio.Event()).is_set()


# --- the run's time budget ---------------------------------------------------------------------------

HANGING = {"nodes": [node("a"), node("h1", "Hang", key="{key}")], "edges": [edge("a", "h1")]}
PARALLEL = {
    "nodes": [node("h1", "Hang", key="{key}"), node("h2", "Hang", key="{key}-2"), node("j", "Join")],
    "edges": [edge("h1", "j", None, "a"), edge("h2", "j", None, "b")],
}


def hanging(document: dict[str, Any]) -> tuple[CompiledFlow, str]:
    hang = uuid.uuid4().hex
    nodes = [{**n, "params": {"key": n["params"]["key"].format(key=hang)}} if n["type"] == "Hang" else n
             for n in document["nodes"]]  # fmt: skip
    return compiled({**document, "nodes": nodes}), hang


@pytest.mark.parametrize("document", [HANGING, PARALLEL])
async def test_an_expired_budget_leaves_the_task_uncancelled(document: dict[str, Any]) -> None:
    flow, _ = hanging(document)
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(RunTimeout):
        await flow.run({"text": "x"}, timeout=0.02)
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # the task goes on as usual


@pytest.mark.parametrize("document", [HANGING, PARALLEL])
async def test_cancelling_a_run_with_a_budget_is_a_cancellation_not_a_timeout(
    document: dict[str, Any],
) -> None:
    flow, hang = hanging(document)
    task = asyncio.create_task(flow.run({"text": "x"}, timeout=30))
    await asyncio.wait_for(EVENTS.setdefault(hang + ":started", asyncio.Event()).wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert EVENTS[hang + ":cancelled"].is_set()


async def test_an_outer_timeout_that_expires_first_stays_the_callers() -> None:
    flow, _ = hanging(HANGING)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await flow.run({"text": "x"}, timeout=30)


@pytest.mark.parametrize("document", [HANGING, PARALLEL])
async def test_a_cancellation_arriving_with_the_expiry_stays_a_cancellation(document: dict[str, Any]) -> None:
    """The budget expires and someone else cancels the run in the same loop iteration: like
    `asyncio.timeout`, the run must end in CancelledError (the other cancellation wins), not RunTimeout."""
    flow, hang = hanging(document)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(flow.run({"text": "x"}, timeout=0.05))
    await asyncio.wait_for(EVENTS.setdefault(hang + ":started", asyncio.Event()).wait(), timeout=10)
    # Injected: hold the event loop past the budget's deadline, so the outside cancel queued now and the
    # budget's timer both run in the next iteration, before the run's task resumes.
    time.sleep(0.1)
    loop.call_soon(task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
