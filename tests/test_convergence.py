"""Pure: convergence on the current release, replicas per generation, and the auto-rollback policy."""

from __future__ import annotations

from typing import Any

from control.rollout.convergence import convergence, replicas_per_generation, rollback_reason


def replica(rid: str, generation: int | None, digest: str | None, **flow: Any) -> dict[str, Any]:
    entry = {"hash": digest, "generation": generation, "last_error": None, "consecutive_failures": 0, **flow}
    return {"replica_id": rid, "state": "serving", "flows": {"qa": entry}}


def failing(rid: str, count: int, digest: str = "h2") -> dict[str, Any]:
    error = {"hash": digest, "generation": 2, "reason": "invalid_document", "message": "unknown component"}
    return replica(rid, 1, "h1", last_error=error, consecutive_failures=count)


def test_counts_current_behind_and_failed() -> None:
    statuses = [
        replica("a", 2, "h2"),
        replica("b", 1, "h1"),
        failing("c", 1),
        {"replica_id": "d", "flows": {}},
    ]
    state = convergence("qa", "h2", 2, statuses)
    assert [r.state for r in state.replicas] == ["current", "behind", "failed", "behind"]
    assert state.line() == "1/4 replicas on generation 2" and not state.done
    body = state.as_dict()
    assert body["failed"] == ["c"] and body["current"] == 1 and body["total"] == 4
    assert body["replicas"][2]["reason"] == "invalid_document"


def test_a_nack_of_the_current_hash_is_a_failure_and_draining_replicas_do_not_count() -> None:
    nacked = replica("a", 1, "h1")
    nacked["prepared"] = {"qa": {"rollout": "r", "hash": "h2", "ok": False, "reason": "compile_error"}}
    draining = replica("b", 1, "h1") | {"state": "draining"}
    state = convergence("qa", "h2", 2, [nacked, draining])
    assert [(r.replica, r.state, r.reason) for r in state.replicas] == [("a", "failed", "compile_error")]


def test_done_when_every_live_replica_is_current_or_none_is_live() -> None:
    assert convergence("qa", "h2", 2, [replica("a", 2, "h2"), replica("b", 2, "h2")]).done
    assert convergence("qa", "h2", 2, []).done


def test_replicas_per_generation() -> None:
    statuses = [replica("a", 2, "h2"), replica("b", 2, "h2"), replica("c", 1, "h1"), {"replica_id": "d"}]
    assert replicas_per_generation(statuses) == {("qa", 2): 2, ("qa", 1): 1}


def test_rollback_after_consecutive_failures_on_one_replica() -> None:
    state = convergence("qa", "h2", 2, [replica("a", 2, "h2"), failing("b", 3)])
    reason = rollback_reason(state, activated_by="ci", max_failures=3, max_replicas=0)
    assert reason is not None and "failed to load 3+ consecutive times on b (invalid_document" in reason
    fewer = convergence("qa", "h2", 2, [failing("b", 2)])
    assert rollback_reason(fewer, activated_by="ci", max_failures=3, max_replicas=0) is None


def test_rollback_when_enough_replicas_fail_or_nack() -> None:
    state = convergence("qa", "h2", 2, [failing("a", 1), failing("b", 1), replica("c", 2, "h2")])
    reason = rollback_reason(state, activated_by="ci", max_failures=3, max_replicas=2)
    assert reason is not None and "refused by 2 replica(s): a (invalid_document" in reason
    assert rollback_reason(state, activated_by="ci", max_failures=3, max_replicas=3) is None
    assert rollback_reason(state, activated_by="ci", max_failures=0, max_replicas=0) is None


def test_an_automatic_rollback_is_never_rolled_back() -> None:
    state = convergence("qa", "h2", 2, [failing("a", 5)])
    assert rollback_reason(state, activated_by="auto-rollback", max_failures=3, max_replicas=1) is None
