"""Retired versions are closed (their components' HTTP clients) once no run can still be using them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cluster.engine import compile_flow
from tests.egress_support import loopback_runtime
from worker.versions import VersionCache


class Closable:
    def __init__(self, fail: bool = False) -> None:
        self.closed = asyncio.Event()
        self.fail = fail

    async def aclose(self) -> None:
        self.closed.set()
        if self.fail:
            raise RuntimeError("cleanup broke")


async def test_an_evicted_version_is_closed_after_the_run_bound_and_a_served_one_never() -> None:
    now = [0.0]
    cache = VersionCache(idle_s=10.0, clock=lambda: now[0], close_after_s=0.05)
    old, served = Closable(), Closable()
    cache.put("qa", "old", old)
    cache.put("qa", "new", served)
    now[0] = 100.0
    loop = asyncio.get_running_loop()
    evicted_at = loop.time()
    assert cache.sweep({("qa", "new")}) == [("qa", "old")]
    assert not old.closed.is_set()  # a run that took it before the eviction may still be going
    await asyncio.wait_for(old.closed.wait(), timeout=5.0)
    assert loop.time() - evicted_at >= 0.05
    assert not served.closed.is_set() and cache.get("qa", "new") is served


async def test_shutdown_closes_held_and_retiring_versions_at_once() -> None:
    now = [0.0]
    cache = VersionCache(idle_s=10.0, clock=lambda: now[0], close_after_s=3600.0)
    retiring, held = Closable(), Closable()
    cache.put("qa", "a", retiring)
    now[0] = 100.0
    cache.sweep(set())
    cache.put("qa", "b", held)
    await asyncio.wait_for(cache.aclose(), timeout=5.0)
    assert retiring.closed.is_set() and held.closed.is_set() and len(cache) == 0


async def test_a_failing_cleanup_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    cache = VersionCache(idle_s=10.0, close_after_s=3600.0)
    broken = Closable(fail=True)
    cache.put("qa", "a", broken)
    with caplog.at_level(logging.ERROR, logger="worker.versions"):
        await cache.aclose()
    assert broken.closed.is_set()
    assert "closing a retired version failed" in caplog.text


def test_without_a_close_delay_eviction_needs_no_event_loop() -> None:
    now = [0.0]
    cache = VersionCache(idle_s=1.0, clock=lambda: now[0])
    version = Closable()
    cache.put("qa", "a", version)
    now[0] = 5.0
    assert cache.sweep(set()) == [("qa", "a")]
    assert not version.closed.is_set()


async def test_a_version_with_nothing_to_close_is_not_kept_alive_after_eviction() -> None:
    now = [0.0]
    cache = VersionCache(idle_s=10.0, clock=lambda: now[0], close_after_s=3600.0)
    plain = Closable()
    plain.holds_resources = False  # type: ignore[attr-defined]
    cache.put("qa", "a", plain)
    now[0] = 100.0
    cache.sweep(set())
    await cache.aclose()  # would close everything still held or waiting
    assert not plain.closed.is_set()


async def test_compiled_flows_say_whether_closing_them_releases_anything() -> None:
    def llm_flow(provider: str) -> dict[str, object]:
        params: dict[str, object] = {"provider": provider, "model": "m"}
        if provider == "openai":
            params["base_url"] = "http://127.0.0.1:9/v1"
        return {"nodes": [{"id": "llm", "type": "LLM", "params": params}], "edges": []}

    assert not compile_flow(llm_flow("echo")).holds_resources
    openai = compile_flow(llm_flow("openai"), runtime=loopback_runtime({"OPENAI_API_KEY": "k"}))
    assert openai.holds_resources
    await openai.aclose()
