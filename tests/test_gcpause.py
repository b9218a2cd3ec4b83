"""The collector is paused while a flow is validated and compiled on the main thread, and left as it was
afterwards; from any other thread it is not touched (gc.disable() would stop it for the whole process)."""

from __future__ import annotations

import doctest
import gc
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from cluster import gcpause
from cluster.components.base import Component, Ports, RunContext
from cluster.components.registry import Registry, builtin_components
from cluster.engine import compile_flow
from cluster.errors import Problem
from cluster.flow.validation import validate
from cluster.gcpause import paused_gc

SEEN: list[bool] = []


class Probe(Component):
    """Records whether the collector was enabled while its params were checked."""

    type_name = "Probe"

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        SEEN.append(gc.isenabled())
        return []

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports()

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        return {"output": 1}


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.enable()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_paused_gc_restores_the_collector_even_after_an_error(collector_enabled: None) -> None:
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_nested_pauses_re_enable_only_at_the_outermost(collector_enabled: None) -> None:
    with paused_gc():
        with paused_gc():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_process_stays_off(collector_enabled: None) -> None:
    gc.disable()
    with paused_gc():
        pass
    assert not gc.isenabled()


def test_validate_and_compile_run_with_the_collector_paused(collector_enabled: None) -> None:
    registry = Registry([*builtin_components(), Probe])
    document = {"nodes": [{"id": "p", "type": "Probe"}]}
    SEEN.clear()
    assert validate(document, registry=registry) == []
    compile_flow(document, registry=registry)
    assert SEEN == [False, False]
    assert gc.isenabled()


def test_a_pause_from_another_thread_leaves_the_process_collector_alone(collector_enabled: None) -> None:
    """A compile handed to a thread (asyncio.to_thread, as the control plane and large reloads do) must
    not stop collection for the event loop thread serving requests meanwhile."""
    inside: list[bool] = []
    loop_thread_saw: list[bool] = []
    started, release = threading.Event(), threading.Event()

    def compile_in_a_thread() -> None:
        with paused_gc():
            inside.append(gc.isenabled())
            started.set()
            release.wait(5)

    worker = threading.Thread(target=compile_in_a_thread)
    worker.start()
    assert started.wait(5)
    loop_thread_saw.append(gc.isenabled())
    release.set()
    worker.join(5)
    assert inside == [True] and loop_thread_saw == [True] and gc.isenabled()

    registry = Registry([*builtin_components(), Probe])
    SEEN.clear()
    thread = threading.Thread(target=compile_flow, args=({"nodes": [{"id": "p", "type": "Probe"}]},),
                              kwargs={"registry": registry})  # fmt: skip
    thread.start()
    thread.join(10)
    assert SEEN == [True]


def test_module_examples(collector_enabled: None) -> None:
    assert doctest.testmod(gcpause).failed == 0
