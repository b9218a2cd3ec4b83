"""A release event whose versions a replica holds compiled (a two-phase commit) is swapped inside the
event's own callback, and what the swap owes (log line, metrics, cache sweep) follows a moment later, in
order (real redis-server, toy compiler; worker/settle.py, `Loader.apply_held`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from cluster.store import redis_conn
from cluster.store.events import Prepare
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.test_store import next_messages
from tests.worker_support import ToyCompiler, publish_activate, toy_doc, wait_for
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.prepared import PreparedVersions, Preparer
from worker.settle import Settler
from worker.state import WorkerState
from worker.subscriber import Subscriber, Timing

FLOW = "qa"


@pytest.fixture
def store(redis_client: Any, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


class Replica:
    """A loader, a preparer and a subscriber that is fed events by hand (never run)."""

    def __init__(self, store: Store, settle_s: float = 0.02) -> None:
        self.state = WorkerState("r1")
        self.prepared = PreparedVersions()
        self.compiler = ToyCompiler()
        self.metrics = WorkerMetrics()
        self.loader = Loader(
            store, self.state, self.compiler, self.metrics, take_prepared=self.prepared.take,
            settle_s=settle_s,
        )  # fmt: skip
        self.preparer = Preparer(self.loader, self.state, self.prepared)
        self.sub = Subscriber(
            store.redis, store.keys.channel(), store, self.loader, self.state, self.metrics, Timing(),
            preparer=self.preparer,
        )  # fmt: skip

    def served(self) -> str | None:
        loaded = self.state.snapshot.get(FLOW)
        return loaded.hash if loaded else None

    def version_info(self, digest: str, generation: int) -> float | None:
        value: float | None = self.metrics.registry.get_sample_value(
            "flowfleet_workflow_version_info", {"flow": FLOW, "hash": digest, "generation": str(generation)}
        )
        return value


async def stored(store: Store, label: str) -> str:
    data, digest = toy_doc(label)
    await store.publish(FLOW, data, digest, author="t", message=label, node_count=1)
    return digest


async def activation_event(store: Store, digest: str) -> bytes:
    """The bytes the activation script publishes, as every replica receives them."""
    async with store.redis.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.channel())
        await store.activate(FLOW, digest, by="ci", reason="test")
        [raw] = await next_messages(pubsub, 1)
    assert isinstance(raw, bytes)
    return raw


async def held_commit(store: Store, replica: Replica) -> tuple[str, str, bytes]:
    """v1 serving, v2 prepared (held compiled), and the commit's event for v2."""
    v1, _ = await publish_activate(store, FLOW, "v1")
    release = await store.get_release(FLOW)
    assert release is not None
    await replica.loader.apply(release, triggered_by="test")
    v2 = await stored(store, "v2")
    reply = await replica.preparer.prepare(Prepare(FLOW, v2, "ro1", 2, "ci", 1.0))
    assert reply.ok
    return v1, v2, await activation_event(store, v2)


async def test_a_held_commit_swaps_inside_the_event_callback_and_reports_after(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.loader")
    replica = Replica(store)
    v1, v2, raw = await held_commit(store, replica)
    caplog.clear()

    replica.sub._on_event(raw)  # synchronous: no task, no await before the swap

    assert replica.served() == v2 and replica.state.snapshot.get(FLOW).generation == 2  # type: ignore[union-attr]
    assert replica.sub._tasks == set(), "no task was needed"
    assert replica.compiler.compiled == ["v1", "v2"], "the commit compiled nothing"
    assert replica.loader.cache.get(FLOW, v1) is not None, "the old version stays for pinned sessions"
    # Reported a moment later, not before the callback returned.
    assert "reload flow=qa" not in caplog.text and len(replica.loader.after_swap) == 2
    assert replica.version_info(v2, 2) is None and replica.version_info(v1, 1) == 1.0
    await wait_for(lambda: len(replica.loader.after_swap) == 0, what="the deferred bookkeeping")
    assert f"new_hash={v2}" in caplog.text and "triggered_by=event:activate" in caplog.text
    assert "result=loaded" in caplog.text
    assert replica.version_info(v2, 2) == 1.0 and replica.version_info(v1, 1) is None


async def test_a_release_whose_version_is_not_held_goes_the_usual_way(store: Store) -> None:
    replica = Replica(store)
    await publish_activate(store, FLOW, "v1")
    v2 = await stored(store, "v2")
    raw = await activation_event(store, v2)  # never prepared: it must be verified and compiled
    replica.sub._on_event(raw)
    assert replica.served() is None and len(replica.sub._tasks) == 1
    await wait_for(lambda: replica.served() == v2, what="the load in a task")
    assert replica.compiler.compiled == ["v2"]


async def test_a_failure_of_the_swap_in_the_callback_falls_back_to_the_usual_path(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    replica = Replica(store)
    _, v2, raw = await held_commit(store, replica)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    replica.loader.apply_held = broken  # type: ignore[method-assign]
    replica.sub._on_event(raw)  # the subscription survives: nothing raised here
    assert len(replica.sub._tasks) == 1 and "at once failed" in caplog.text
    await wait_for(lambda: replica.served() == v2, what="the release, applied in a task")
    assert replica.compiler.compiled == ["v1", "v2"], "the held version was still used"


async def test_apply_held_declines_and_changes_nothing(store: Store) -> None:
    replica = Replica(store)
    _, v2, _ = await held_commit(store, replica)
    loader = replica.loader
    release = await store.get_release(FLOW)
    assert release is not None and release.hash == v2
    before = replica.served()  # v1, unchanged by every refusal below

    # A reload of the flow is under way: it must finish first.
    async with loader._lock(FLOW):
        assert loader.apply_held(release, triggered_by="t") is None
    # Not news by generation.
    stale = type(release)(**{**release.__dict__, "generation": 1})
    assert loader.apply_held(stale, triggered_by="t") is None
    # A canary that is not held: the prepared stable version is not taken either.
    canary = type(release)(**{**release.__dict__, "canary_hash": "cd" * 32, "canary_percent": 10.0})
    assert loader.apply_held(canary, triggered_by="t") is None
    assert replica.served() == before and replica.prepared.take(FLOW, v2) is not None
    # Now nothing is held for v2 at all.
    assert loader.apply_held(release, triggered_by="t") is None
    assert replica.served() == before and len(loader.after_swap) == 0


async def test_a_failure_after_a_settled_swap_is_reported_after_it(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.loader")
    replica = Replica(store, settle_s=60.0)  # the deferred work would wait a minute
    _, v2, raw = await held_commit(store, replica)
    caplog.clear()
    replica.sub._on_event(raw)
    assert replica.served() == v2 and len(replica.loader.after_swap) == 2
    bad, digest = toy_doc("bad", broken=True)
    await store.publish(FLOW, bad, digest, author="t", message="bad", node_count=1)
    await store.activate(FLOW, digest, by="ci", reason="test")
    release = await store.get_release(FLOW)
    assert release is not None
    outcome = await replica.loader.apply(release, triggered_by="test")
    assert outcome.result == "failed" and len(replica.loader.after_swap) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reload ")]
    assert [("result=loaded" in line, "result=failed" in line) for line in lines] == [
        (True, False),
        (False, True),
    ]
    assert replica.served() == v2, "the bad version never replaces the good one"


# -- the settler ------------------------------------------------------------------------------------
async def test_the_settler_runs_later_work_in_order_after_its_delay() -> None:
    done: list[int] = []
    finished = asyncio.Event()
    settler = Settler(0.01)
    settler.later(lambda: done.append(1))
    settler.later(lambda: done.append(2))
    settler.later(finished.set)
    assert done == [] and len(settler) == 3
    await asyncio.wait_for(finished.wait(), timeout=5)
    assert done == [1, 2] and len(settler) == 0


async def test_work_run_now_runs_what_is_queued_first_and_a_failure_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []
    settler = Settler(60.0)

    def broken() -> None:
        raise RuntimeError("boom")

    settler.later(lambda: done.append("queued"))
    settler.later(broken)
    settler.later(lambda: done.append("after the failure"))
    settler.now(lambda: done.append("now"))
    assert done == ["queued", "after the failure", "now"] and len(settler) == 0
    assert "bookkeeping after a swap failed" in caplog.text


def test_without_an_event_loop_the_settler_runs_at_once() -> None:
    done: list[int] = []
    Settler(60.0).later(lambda: done.append(1))
    assert done == [1]


async def test_reading_a_reply_needs_an_open_subscription(redis_client: Any) -> None:
    pubsub = redis_client.pubsub()
    with pytest.raises(ConnectionError):
        await redis_conn.read_pubsub_reply(pubsub, 0.1)
    await pubsub.aclose()
