"""`flowfleet history | show | diff | status | audit`: the read-only commands.

Like the write commands (control.cli.remote), each talks to the control API and prints a table for people
or, with ``--output json``, the API's JSON for scripts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cluster.errors import BadRequest
from control.cli import render
from control.cli.client import path
from control.cli.remote import client_of, command, emit


def cmd_history(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        body = api.get(path("v1", "flows", args.flow, "history"), params={"limit": args.limit})
    rows = [
        [r["generation"], render.short(r["hash"]), r["action"], r["activated_by"],
         render.when(r["activated_at"]), r["reason"]]
        for r in body["releases"]
    ]  # fmt: skip
    return emit(args, body, render.table(["GEN", "HASH", "ACTION", "BY", "AT (UTC)", "REASON"], rows))


def cmd_show(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        if args.hash:
            body = api.get(path("v1", "flows", args.flow, "versions", args.hash))
            return emit(args, body, render.pretty_json(body["document"]))
        body = api.get(path("v1", "flows", args.flow))
    release = body["release"]
    lines = [f"flow {body['flow']}"]
    if release:
        lines.append(
            f"current {release['hash']} generation {release['generation']} "
            f"({release['action']} by {release['activated_by']} at {render.when(release['activated_at'])})"
        )
    else:
        lines.append("current - (never activated)")
    rows = [
        [render.short(v["hash"]), render.when(v["created_at"]), v["author"], v["node_count"], v["message"]]
        for v in body["versions"]
    ]
    lines += ["", render.table(["VERSION", "CREATED (UTC)", "AUTHOR", "NODES", "MESSAGE"], rows)]
    return emit(args, body, "\n".join(lines))


def cmd_diff(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        body = api.get(path("v1", "flows", args.flow, "diff"), params={"from": args.a, "to": args.b})
    header = f"{args.flow}: {render.short(body['from'])} -> {render.short(body['to'])}"
    return emit(args, body, header + "\n" + render.diff_text(body["diff"]))


def cmd_status(args: argparse.Namespace) -> int:
    if args.wait:
        if args.flow is None:
            raise BadRequest("status --wait needs a FLOW")
        from control.cli.wait import Waiter

        with client_of(args) as api:
            waiter = Waiter(
                api,
                args.flow,
                timeout_s=args.timeout,
                out=sys.stdout,
                err=sys.stderr,
                tty=sys.stdout.isatty(),
            )
            return waiter.run()
    with client_of(args) as api:
        body = api.get(path("v1", "fleet"))
    # A gone replica whose status expired has no flow: it may have served this one, so it stays listed.
    rows = [r for r in body["rows"] if args.flow is None or r["flow"] in (args.flow, None)]
    if args.output == "json":
        return emit(args, {**body, "rows": rows}, "")
    table = [
        [r["replica"], r.get("host"), r.get("pid"), r["flow"], r["generation"], render.short(r["hash"]),
         r["current_generation"], r["state"], render.age(r.get("age_s")), r["error"]]
        for r in rows
    ]  # fmt: skip
    headers = ["REPLICA", "HOST", "PID", "FLOW", "GEN", "HASH", "CURRENT", "STATE", "AGE", "ERROR"]
    text = render.table(headers, table)
    if not rows:
        text = "no live replica reports " + (f"flow {args.flow}" if args.flow else "any flow")
    return emit(args, body, text)


def cmd_audit(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        body = api.get(path("v1", "audit"), params={"flow": args.flow, "limit": args.limit})
    rows = [
        [render.when(e.get("at")), e.get("action"), e.get("flow"), render.short(e.get("hash")),
         e.get("generation"), e.get("by"), e.get("reason") or e.get("message")]
        for e in body["entries"]
    ]  # fmt: skip
    return emit(args, body, render.table(["AT (UTC)", "ACTION", "FLOW", "HASH", "GEN", "BY", "REASON"], rows))


def register(subparsers: Any) -> None:
    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        return command(subparsers, name, func, help_text)

    p = add("history", cmd_history, "releases of a flow, newest first")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("--limit", type=int, default=100)

    p = add("show", cmd_show, "a flow's release and versions, or one version's document")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("hash", metavar="HASH", nargs="?")

    p = add("diff", cmd_diff, "node/edge/param differences between two versions")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")

    p = add("status", cmd_status, "which replica runs which version, and whether it is still there")
    p.add_argument("flow", metavar="FLOW", nargs="?")
    p.add_argument(
        "--wait", action="store_true", help="wait until every live replica runs FLOW's release (exit 6/7)"
    )
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="with --wait (default 60)")

    p = add("audit", cmd_audit, "audit log, newest first")
    p.add_argument("--flow")
    p.add_argument("--limit", type=int, default=100)
