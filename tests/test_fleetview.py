"""control.fleetview: one row per (replica, flow), compared with the release records."""

from __future__ import annotations

from cluster.store.release import Release
from control.fleetview import fleet_rows


def record(digest: str, generation: int) -> Release:
    return Release("qa", digest, generation, None, "test", 50.0, "t")


def status(replica: str, flows: object, at: float | None = 100.0) -> dict[str, object]:
    return {"replica_id": replica, "reported_at": at, "flows": flows}


def test_current_stale_and_error_rows_sorted_by_flow_then_replica() -> None:
    statuses = [
        status("web-2", {"qa": {"hash": "b" * 64, "generation": 3, "last_error": None}}),
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
    rows = fleet_rows(statuses, {"qa": record("b" * 64, 3), "faq": record("d" * 64, 2)})
    assert [(r.flow, r.replica, r.state, r.error) for r in rows] == [
        ("faq", "web-1", "stale", None),
        ("qa", "web-1", "error", "compile failed"),
        ("qa", "web-2", "current", None),
    ]
    assert rows[2].as_dict() == {
        "replica": "web-2",
        "flow": "qa",
        "hash": "b" * 64,
        "generation": 3,
        "current_generation": 3,
        "state": "current",
        "error": None,
        "seen_at": 100.0,
    }


def test_an_old_error_does_not_hide_that_the_replica_is_current() -> None:
    statuses = [status("w", {"qa": {"generation": 4, "hash": "x", "last_error": {"message": "old"}}})]
    assert fleet_rows(statuses, {"qa": record("x", 4)})[0].state == "current"


def test_flow_without_release_and_unreadable_fields() -> None:
    statuses = [
        status("w", {"qa": {"generation": True, "hash": 5, "last_error": "plain text"}}, at=None),
        status("v", "not a mapping"),
        {"flows": {"x": "not a mapping", "y": {}}},
    ]
    rows = fleet_rows(statuses, {})
    assert [(r.replica, r.flow, r.generation, r.hash, r.state, r.error) for r in rows] == [
        ("w", "qa", None, None, "error", "plain text"),
        ("?", "y", None, None, "stale", None),
    ]


def test_a_replica_at_the_records_generation_but_another_version_is_not_current() -> None:
    # After a restore, generation 2 came again for another version: the replica still runs the old one.
    statuses = [status("w", {"qa": {"generation": 2, "hash": "old", "last_error": None}})]
    assert fleet_rows(statuses, {"qa": record("new", 2)})[0].state == "stale"
    assert fleet_rows(statuses, {"qa": record("old", 2)})[0].state == "current"
