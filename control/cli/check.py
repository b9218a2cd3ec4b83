"""`flowfleet check`: which released versions the outbound policy of this shell would refuse.

Run it with the settings a new flowfleet will have (FLOWFLEET_FLOW_SECRETS, FLOWFLEET_EGRESS_ALLOW,
OPENAI_BASE_URL) before upgrading: it reads every flow's current, previous and canary version through
the control API (any version's, so an older control plane works too) and validates each one locally.
Replicas never drop a version they already serve because of the policy; a version listed here would
be refused the next time one loads it. Exit 0 when nothing is refused, 1 otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

from cluster.errors import FlowfleetError
from cluster.flow.validation import validate
from control.cli import render
from control.cli.client import ApiClient, path
from control.cli.policy import cli_policy
from control.cli.remote import client_of, command, emit

EXIT_REFUSED = 1


def _released(release: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, hash) of what a release record names, current first."""
    named = [("current", release.get("hash")), ("canary", release.get("canary_hash"))]
    named.append(("previous", release.get("previous_hash")))
    seen: set[str] = set()
    out = []
    for role, digest in named:
        if isinstance(digest, str) and digest and digest not in seen:
            seen.add(digest)
            out.append((role, digest))
    return out


def check_fleet(api: ApiClient) -> list[dict[str, Any]]:
    """One row per released version: flow, role, hash and the problems the policy finds (empty: fine)."""
    policy = cli_policy()
    rows = []
    for flow in api.get(path("v1", "flows"))["flows"]:
        if not flow.get("release"):
            continue
        for role, digest in _released(flow["release"]):
            try:
                body = api.get(path("v1", "flows", flow["name"], "versions", digest))
            except FlowfleetError as e:  # e.g. a previous version removed by gc
                rows.append(
                    {"flow": flow["name"], "role": role, "hash": digest, "problems": [], "error": str(e)}
                )
                continue
            problems = [p.as_dict() for p in validate(body["document"], policy=policy)]
            rows.append({"flow": flow["name"], "role": role, "hash": digest, "problems": problems})
    return rows


def cmd_check(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        rows = check_fleet(api)
    refused = [r for r in rows if r["problems"]]
    table = [
        [r["flow"], r["role"], render.short(r["hash"]),
         "; ".join(f"{p['path']}: {p['message']}" for p in r["problems"]) or r.get("error") or "ok"]
        for r in rows
    ]  # fmt: skip
    text = render.table(["FLOW", "ROLE", "HASH", "POLICY"], table) if rows else "no released versions"
    text += f"\n{len(refused)} of {len(rows)} released version(s) refused by this policy"
    emit(args, {"versions": rows, "refused": len(refused)}, text)
    return EXIT_REFUSED if refused else 0


def register(subparsers: Any) -> None:
    command(subparsers, "check", cmd_check, "list released versions the outbound policy would refuse")
