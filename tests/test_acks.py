"""Pure decisions of the two-phase cutover: live replicas and the prepare tally."""

from __future__ import annotations

from typing import Any

from control.rollout.acks import ReplicaFailure, assess, live_replicas, prepare_targets


def status(rid: str, reply: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"replica_id": rid, "state": "serving", "prepared": {"qa": reply} if reply else {}, **extra}


def ok(rollout: str = "r1", digest: str = "h2") -> dict[str, Any]:
    return {"rollout": rollout, "hash": digest, "ok": True}


def test_live_replicas_leave_out_draining_ones() -> None:
    assert sorted(live_replicas([status("a"), status("b", state="draining")])) == ["a"]


def test_ready_nacked_pending_and_gone() -> None:
    nack = {"rollout": "r1", "hash": "h2", "ok": False, "reason": "compile_error", "message": "boom"}
    statuses = [status("a", ok()), status("b", nack), status("c"), status("d", state="draining")]
    tally = assess("qa", "r1", "h2", ["a", "b", "c", "d", "e"], statuses)
    assert tally.ready == {"a"} and tally.pending == {"c"} and tally.gone == {"d", "e"}
    assert tally.nacked == {"b": ReplicaFailure("b", "compile_error", "boom")}
    assert not tally.done and not tally.all_ready
    assert [f.replica for f in tally.failures()] == ["b"]
    assert [(f.replica, f.reason) for f in tally.failures(timed_out=True)] == [
        ("b", "compile_error"),
        ("c", "timeout"),
    ]


def test_answers_to_another_rollout_or_hash_do_not_count() -> None:
    statuses = [status("a", ok(rollout="old")), status("b", ok(digest="other")), status("c", {"ok": True})]
    tally = assess("qa", "r1", "h2", ["a", "b", "c"], statuses)
    assert tally.pending == {"a", "b", "c"} and not tally.ready


def test_all_ready_once_nobody_is_pending() -> None:
    tally = assess("qa", "r1", "h2", ["a", "b"], [status("a", ok()), status("b", ok())])
    assert tally.done and tally.all_ready and tally.failures(timed_out=True) == []


def test_a_nack_without_reason_is_still_a_nack() -> None:
    tally = assess("qa", "r1", "h2", ["a"], [status("a", {"rollout": "r1", "hash": "h2", "ok": None})])
    assert tally.nacked["a"].reason == "nack" and not tally.all_ready


def test_a_prepare_waits_only_for_live_subscribed_replicas() -> None:
    statuses = [status("a", subscribed=True), status("b", subscribed=False), status("c"),
                status("d", subscribed=True, state="draining")]  # fmt: skip
    assert prepare_targets(statuses) == ["a", "c"]
