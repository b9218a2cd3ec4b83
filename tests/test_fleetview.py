"""control.fleetview: one row per (replica, flow), compared with the release records."""

from __future__ import annotations

from control.fleetview import fleet_rows


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
    rows = fleet_rows(statuses, {"qa": 3, "faq": 2})
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
    assert fleet_rows(statuses, {"qa": 4})[0].state == "current"


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
