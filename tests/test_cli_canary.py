"""Rendering of `flowfleet canary` output (pure); the commands run end to end in tests/e2e."""

from __future__ import annotations

from control.cli import build_parser
from control.cli.canary import change_line, status_text

A, B = "a" * 64, "b" * 64


def release(**extra: object) -> dict[str, object]:
    return {"action": "canary_start", "flow": "qa", "generation": 4, "hash": A, "activated_by": "ci", **extra}


def test_change_lines() -> None:
    assert change_line(release(canary_hash=B, canary_percent=12.5)) == (
        f"canary_start qa generation 4: stable {A[:12]}, canary {B[:12]} at 12.5% (by ci)"
    )
    assert change_line(release(action="canary_abort", canary_hash=None)).endswith("no canary (by ci)")


def test_status_side_by_side() -> None:
    stats = {"hash": A, "runs": 200, "errors": 3, "error_rate": 0.015, "p50_ms": 12.0, "p95_ms": 80.25}
    body = {
        "flow": "qa", "generation": 4, "replicas": 3, "stable": stats,
        "canary": {**stats, "hash": B, "runs": 20, "errors": 0, "error_rate": 0.0, "p50_ms": None,
                   "p95_ms": None, "percent": 10.0, "started_at": 1764105308.0, "started_by": "ci"},
        "guard": {"verdict": "waiting for 100 runs of each version (stable 200, canary 20)"},
    }  # fmt: skip
    lines = status_text(body).splitlines()
    assert lines[0] == "flow qa generation 4: canary at 10% since 2025-11-25 21:15:08Z by ci"
    assert lines[2].split() == ["VERSION", "RUNS", "ERRORS", "ERROR", "RATE", "P50", "MS", "P95", "MS"]
    assert lines[3].split() == ["stable", A[:12], "200", "3", "1.5%", "12.0", "80.2"]
    assert lines[4].split() == ["canary", B[:12], "20", "0", "0.0%", "-", "-"]
    assert lines[-2].startswith("guard: waiting") and lines[-1] == "(3 replica(s) reporting)"
    alone = status_text({**body, "canary": None, "guard": {"verdict": None}})
    assert "no canary running" in alone and "canary " not in alone.splitlines()[-2]


def test_commands_and_required_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["canary", "start", "qa", "abcdef12", "--percent", "10", "-m", "why"])
    assert (args.flow, args.hash, args.percent, args.message) == ("qa", "abcdef12", 10.0, "why")
    args = parser.parse_args(["canary", "status", "qa", "-o", "json"])
    assert args.output == "json" and not hasattr(args, "message")
    args = parser.parse_args(["activate", "qa", "abcdef12", "--unpin"])
    assert args.unpin is True
    assert parser.parse_args(["rollback", "qa"]).unpin is False
