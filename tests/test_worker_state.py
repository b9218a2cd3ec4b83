"""Pure tests of the replica's snapshot, failure bookkeeping and readiness rules."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from worker.state import (
    BACKOFF_CAP_S,
    FlowHealth,
    LoadedFlow,
    LoadError,
    Snapshot,
    WorkerState,
    backoff_delay,
)

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


@dataclass(frozen=True)
class T:
    flow: str
    hash: str
    generation: int


def loaded(flow: str, digest: str, generation: int) -> LoadedFlow:
    return LoadedFlow(flow, object(), digest, generation, 100.0)  # type: ignore[arg-type]


def error(flow: str, digest: str, generation: int, reason: str = "invalid_document") -> LoadError:
    return LoadError(flow, digest, generation, reason, "bad", 5.0)


def test_snapshot_replace_returns_a_new_snapshot_and_leaves_the_old_one_alone():
    first = Snapshot().replace(loaded("qa", H1, 1))
    second = first.replace(loaded("qa", H2, 2))
    assert first.get("qa").hash == H1
    assert second.get("qa").hash == H2
    with pytest.raises(TypeError):
        second.flows["qa"] = loaded("qa", H3, 3)  # type: ignore[index]


def test_commit_swaps_one_reference_and_returns_the_old_version():
    state = WorkerState("r1")
    held = state.snapshot
    assert state.commit(loaded("qa", H1, 1)) is None
    old = state.commit(loaded("qa", H2, 2))
    assert old is not None and old.hash == H1
    assert state.snapshot.get("qa").hash == H2
    assert held.get("qa") is None  # a run that took the earlier snapshot is unaffected


@pytest.mark.parametrize(("n", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (9, 300.0), (100, 300.0)])
def test_backoff_doubles_and_is_capped(n, expected):
    assert backoff_delay(n) == expected
    assert backoff_delay(n) <= BACKOFF_CAP_S


def test_failed_hash_is_not_retried_until_its_backoff_expires():
    health = FlowHealth().failed(error("qa", H2, 2), now=10.0)
    assert health.consecutive_failures == 1
    assert not health.may_attempt(T("qa", H2, 2), now=11.0)
    assert health.may_attempt(T("qa", H2, 2), now=12.0)
    assert health.may_attempt(T("qa", H3, 3), now=11.0), "another version is tried at once"
    again = health.failed(error("qa", H2, 2), now=12.0)
    assert again.consecutive_failures == 2 and again.retry_at == 16.0


def test_a_newer_event_for_the_failed_hash_forces_one_retry_but_reconcile_does_not():
    health = FlowHealth().failed(error("qa", H2, 2), now=10.0)
    assert health.may_attempt(T("qa", H2, 3), now=10.5, forced=True)
    assert not health.may_attempt(T("qa", H2, 2), now=10.5, forced=True), "same generation is no news"
    assert not health.may_attempt(T("qa", H2, 3), now=10.5, forced=False)


def test_note_target_keeps_the_newest_generation():
    state = WorkerState("r1")
    state.note_target(T("qa", H2, 2))
    state.note_target(T("qa", H1, 1))
    assert state.targets["qa"].generation == 2


def test_not_ready_before_the_first_reconcile_even_with_nothing_to_load():
    state = WorkerState("r1")
    assert not state.is_ready()
    state.synced = True
    assert state.is_ready()
    state.draining = True
    assert not state.is_ready()


def test_readiness_states():
    state = WorkerState("r1")
    state.synced = True
    # pending: a release record, nothing loaded, no content failure
    state.note_target(T("a", H1, 1))
    assert [r.state for r in state.readiness()] == ["pending"]
    assert not state.is_ready()
    # a transient failure (Redis) keeps it pending
    state.record_failure(error("a", H1, 1, "redis_error"), now=0.0)
    assert state.readiness()[0].state == "pending"
    # refused for its content: does not hold readiness back
    state.record_failure(error("a", H1, 1, "hash_mismatch"), now=0.0)
    assert state.readiness()[0].state == "refused"
    assert state.is_ready()
    # loaded
    state.commit(loaded("a", H1, 1))
    state.record_success("a")
    assert state.readiness()[0].state == "loaded"
    # a newer release on its way: still serving, still ready
    state.note_target(T("a", H2, 2))
    assert state.readiness()[0].state == "updating"
    assert state.is_ready()
    # the newer release failed: serving the old one with an error
    state.record_failure(error("a", H2, 2), now=0.0)
    assert state.readiness()[0].state == "loaded_with_error"
    assert state.is_ready()


def test_status_reports_loaded_version_and_errors_per_flow():
    state = WorkerState("r1")
    state.commit(loaded("a", H1, 1))
    state.note_target(T("a", H2, 2))
    state.record_failure(error("a", H2, 2), now=0.0)
    state.note_target(T("b", H3, 1))
    status = state.status()
    assert status["a"]["hash"] == H1 and status["a"]["generation"] == 1
    assert status["a"]["last_error"]["hash"] == H2
    assert status["a"]["last_error"]["reason"] == "invalid_document"
    assert status["a"]["consecutive_failures"] == 1
    assert status["b"] == {
        "hash": None,
        "generation": None,
        "loaded_at": None,
        "last_error": None,
        "consecutive_failures": 0,
    }
