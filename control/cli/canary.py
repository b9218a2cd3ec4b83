"""`flowfleet canary start | set | promote | abort | status`: a canary next to a flow's current release.

flowfleet canary start support_qa 3f9a1c2b --percent 10 -m "try the shorter prompt"
flowfleet canary set support_qa --percent 50
flowfleet canary status support_qa        # stable and canary side by side
flowfleet canary promote support_qa       # or: flowfleet canary abort support_qa
"""

from __future__ import annotations

import argparse
from typing import Any

from control.cli import render
from control.cli.client import path
from control.cli.remote import client_of, common, emit


def change_line(release: dict[str, Any]) -> str:
    line = f"{release['action']} {release['flow']} generation {release['generation']}: "
    line += f"stable {render.short(release['hash'])}"
    if release.get("canary_hash"):
        line += f", canary {render.short(release['canary_hash'])} at {release['canary_percent']:g}%"
    else:
        line += ", no canary"
    return line + f" (by {release['activated_by']})"


def _expected(payload: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.expected_generation is not None:
        payload["expected_generation"] = args.expected_generation
    return payload


def cmd_start(args: argparse.Namespace) -> int:
    payload = _expected({"hash": args.hash, "percent": args.percent}, args)
    with client_of(args) as api:
        body = api.post(
            path("v1", "flows", args.flow, "canary"), json=payload, params={"message": args.message}
        )
    return emit(args, body, change_line(body))


def cmd_set(args: argparse.Namespace) -> int:
    payload = _expected({"percent": args.percent}, args)
    with client_of(args) as api:
        url = path("v1", "flows", args.flow, "canary", "percent")
        body = api.post(url, json=payload, params={"message": args.message})
    return emit(args, body, change_line(body))


def cmd_promote(args: argparse.Namespace) -> int:
    return _finish(args, "promote")


def cmd_abort(args: argparse.Namespace) -> int:
    return _finish(args, "abort")


def _finish(args: argparse.Namespace, op: str) -> int:
    with client_of(args) as api:
        url = path("v1", "flows", args.flow, "canary", op)
        body = api.post(url, json=_expected({}, args), params={"message": args.message})
    return emit(args, body, change_line(body))


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def status_text(body: dict[str, Any]) -> str:
    canary = body.get("canary")
    head = f"flow {body['flow']} generation {body['generation']}"
    if canary:
        head += (
            f": canary at {canary['percent']:g}% since {render.when(canary['started_at'])} "
            f"by {canary['started_by']}"
        )
    else:
        head += ": no canary running"
    rows = []
    for role, stats in (("stable", body["stable"]), ("canary", canary)):
        if stats:
            rows.append([role, render.short(stats["hash"]), stats["runs"], stats["errors"],
                         _pct(stats["error_rate"]), _ms(stats["p50_ms"]), _ms(stats["p95_ms"])])  # fmt: skip
    lines = [
        head,
        "",
        render.table(["", "VERSION", "RUNS", "ERRORS", "ERROR RATE", "P50 MS", "P95 MS"], rows),
    ]
    guard = body.get("guard") or {}
    if guard.get("verdict"):
        lines += ["", f"guard: {guard['verdict']}"]
    lines.append(f"({body['replicas']} replica(s) reporting)")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        body = api.get(path("v1", "flows", args.flow, "canary"))
    return emit(args, body, status_text(body))


def register(subparsers: Any) -> None:
    parent = common()
    canary = subparsers.add_parser("canary", help="run a canary version next to the current release")
    commands = canary.add_subparsers(dest="canary_command", metavar="ACTION", required=True)

    def add(name: str, func: Any, help_text: str, *, writes: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, parents=[parent], help=help_text)
        parser.set_defaults(func=func)
        parser.add_argument("flow", metavar="FLOW")
        if writes:
            parser.add_argument("-m", "--message", help="why (recorded in history and the audit log)")
            parser.add_argument(
                "--expected-generation", type=int, metavar="N", help="fail (exit 3) unless at generation N"
            )
        return parser

    p = add("start", cmd_start, "run a stored version for a share of the traffic")
    p.add_argument("hash", metavar="HASH", help="version hash or unique prefix (8+ characters)")
    p.add_argument("--percent", type=float, required=True, help="share of request keys, 0-100")
    p = add("set", cmd_set, "change the canary's share of the traffic")
    p.add_argument("--percent", type=float, required=True, help="share of request keys, 0-100")
    add("promote", cmd_promote, "make the canary the current release")
    add("abort", cmd_abort, "stop the canary; everything runs the current release")
    add("status", cmd_status, "stable and canary side by side: runs, error rate, p50/p95", writes=False)
