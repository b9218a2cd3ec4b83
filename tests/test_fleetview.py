"""control.fleetview: one row per (replica, flow), compared with the release records, and each replica's
presence judged from the age of its last heartbeat."""

from __future__ import annotations

from cluster.store.release import Release
from control.fleetview import fleet_rows, gone, late_after, presence, with_presence
from control.rollout.convergence import convergence


def record(digest: str, generation: int) -> Release:
    return Release("qa", digest, generation, None, "test", 50.0, "t")


def status(replica: str, flows: object, at: float | None = 100.0, **extra: object) -> dict[str, object]:
    return {"replica_id": replica, "reported_at": at, "flows": flows, **extra}


def test_current_behind_and_error_rows_sorted_by_flow_then_replica() -> None:
    statuses = [
        status("web-2", {"qa": {"hash": "b" * 64, "generation": 3, "last_error": None}}, host="h2", pid=7),
        status(
            "web-1",
            {
                "qa": {
                    "hash": "a" * 64,
                    "generation": 2,
                    "last_error": {"generation": 3, "message": "compile failed"},
                },
                "faq": {"hash": "c" * 64, "generation": 1, "last_error": None},
            },
        ),
    ]
    rows = fleet_rows(statuses, {"qa": record("b" * 64, 3), "faq": record("d" * 64, 2)}, now=101.25)
    assert [(r.flow, r.replica, r.state, r.error) for r in rows] == [
        ("faq", "web-1", "behind", None),
        ("qa", "web-1", "error", "compile failed"),
        ("qa", "web-2", "current", None),
    ]
    assert rows[2].as_dict() == {
        "replica": "web-2",
        "host": "h2",
        "pid": 7,
        "flow": "qa",
        "hash": "b" * 64,
        "generation": 3,
        "current_generation": 3,
        "state": "current",
        "error": None,
        "seen_at": 100.0,
        "age_s": 1.25,
    }


def test_an_old_error_does_not_hide_that_the_replica_is_current() -> None:
    statuses = [status("w", {"qa": {"generation": 4, "hash": "x", "last_error": {"message": "old"}}})]
    assert fleet_rows(statuses, {"qa": record("x", 4)})[0].state == "current"


def test_flow_without_release_and_unreadable_fields() -> None:
    statuses = [
        status("w", {"qa": {"generation": True, "hash": 5, "last_error": "plain text"}}, at=None, pid="7"),
        status("v", "not a mapping"),
        {"flows": {"x": "not a mapping", "y": {}}},
    ]
    rows = fleet_rows(statuses, {}, now=1000.0)
    assert [(r.replica, r.flow, r.generation, r.hash, r.state, r.error, r.pid, r.age_s) for r in rows] == [
        ("w", "qa", None, None, "error", "plain text", None, None),
        ("?", "y", None, None, "behind", None, None, None),
    ]


def test_a_replica_at_the_records_generation_but_another_version_is_not_current() -> None:
    # After a restore, generation 2 came again for another version: the replica still runs the old one.
    statuses = [status("w", {"qa": {"generation": 2, "hash": "old", "last_error": None}})]
    assert fleet_rows(statuses, {"qa": record("new", 2)})[0].state == "behind"
    assert fleet_rows(statuses, {"qa": record("old", 2)})[0].state == "current"


def test_presence_follows_the_age_of_the_last_heartbeat() -> None:
    beat = status("w", {}, at=100.0, heartbeat_s=0.5, ttl_s=5.0, host="box", pid=42)
    assert late_after(0.5) == 1.5 and late_after(2.0) == 4.0
    assert presence(beat, 101.5).state == "live"  # one beat missed is not late yet
    assert presence(beat, 101.6).state == "stale"
    assert presence(beat, 105.0).state == "stale"
    assert presence(beat, 105.1).as_dict() == {
        "replica": "w", "state": "gone", "host": "box", "pid": 42, "heartbeat_at": 100.0, "age_s": 5.1,
    }  # fmt: skip
    # Without the worker's intervals in the status, its defaults (2 s beats, 10 s TTL) apply.
    legacy = status("old", {}, at=100.0)
    assert [presence(legacy, 100.0 + t).state for t in (4.0, 4.1, 10.1)] == ["live", "stale", "gone"]
    # Draining is what the replica says while it finishes its runs; a late heartbeat overrides it.
    draining = {**beat, "state": "draining"}
    assert presence(draining, 100.5).state == "draining" and presence(draining, 102.0).state == "stale"
    assert presence(beat, None).state == "live" and presence(beat, None).age_s is None
    assert presence(beat, 99.0).age_s == 0.0  # a clock behind the replica's never shows a negative age


def test_late_and_gone_replicas_are_never_current_and_expired_ones_get_a_row() -> None:
    flows = {"qa": {"hash": "x", "generation": 4, "last_error": None}}
    statuses = [
        status("a", flows, at=100.0, heartbeat_s=1.0, ttl_s=5.0),
        status("b", flows, at=97.0, heartbeat_s=1.0, ttl_s=5.0),
        status("c", flows, at=94.0, heartbeat_s=1.0, ttl_s=5.0),
        status("d", flows, at=100.0, heartbeat_s=1.0, ttl_s=5.0, state="draining"),
    ]
    rows = fleet_rows(statuses, {"qa": record("x", 4)}, now=100.5, expired={"e": 80.0})
    assert [(r.replica, r.flow, r.state, r.age_s) for r in rows] == [
        ("a", "qa", "current", 0.5),
        ("b", "qa", "stale", 3.5),
        ("c", "qa", "gone", 6.5),
        ("d", "qa", "draining", 0.5),
        ("e", None, "gone", 20.5),
    ]
    assert gone("e", 80.0, 100.5).as_dict() == {
        "replica": "e", "state": "gone", "host": None, "pid": None, "heartbeat_at": 80.0, "age_s": 20.5,
    }  # fmt: skip


def test_rollout_progress_counts_a_stale_replica_but_not_as_current() -> None:
    flows = {"qa": {"hash": "x", "generation": 4}}
    statuses = [
        status("a", flows, at=100.0, heartbeat_s=1.0, ttl_s=5.0),
        status("b", flows, at=97.0, heartbeat_s=1.0, ttl_s=5.0),
        status("c", flows, at=94.0, heartbeat_s=1.0, ttl_s=5.0),
    ]
    seen = {p.replica: p for p in (presence(s, 100.5) for s in statuses)}
    state = with_presence(convergence("qa", "x", 4, statuses), seen)
    assert [(r.replica, r.state) for r in state.replicas] == [("a", "current"), ("b", "stale")]
    assert (state.current, len(state.replicas), state.done) == (1, 2, False)
