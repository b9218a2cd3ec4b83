"""`flowfleet publish | activate | rollback | gc | sync`: the commands that change what is stored or current.

Each command talks to the control API (``FLOWFLEET_URL``, ``FLOWFLEET_TOKEN``, or ``--url``/``--token``)
and prints a table for people or, with ``--output json``, the API's JSON for scripts. The read-only
commands are in control.cli.reads; both use this module's client, output and option helpers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cluster.errors import BadRequest, FlowValidationError
from cluster.flow.documents import load_document
from cluster.flow.hashing import canonical_bytes
from cluster.settings import Settings
from control.cli import render
from control.cli.client import ApiClient, path


def client_of(args: argparse.Namespace) -> ApiClient:
    settings = Settings.from_env(os.environ, control_url=args.url, token=args.token)
    return ApiClient(settings.control_url, settings.token)


def emit(args: argparse.Namespace, body: Any, text: str) -> int:
    print(render.pretty_json(body) if args.output == "json" else text)
    return 0


def release_line(release: dict[str, Any]) -> str:
    line = (
        f"{release['action']} {release['flow']} -> {render.short(release['hash'])} "
        f"generation {release['generation']} by {release['activated_by']}"
    )
    rollout = release.get("rollout") or {}
    if rollout.get("mode") == "two_phase" and rollout.get("ready"):
        line += f" (prepared on {len(rollout['ready'])} replica(s) in {rollout.get('prepare_seconds')}s)"
    elif rollout.get("mode") == "direct":
        line += " (one-phase, no prepare)"
    for failure in rollout.get("failures") or []:
        line += f"\n  forced past {failure['replica']}: {failure['reason']}: {failure['message']}"
    return line


def cutover_payload(args: argparse.Namespace) -> dict[str, Any]:
    """The two-phase options of activate / rollback (only what differs from the server's defaults)."""
    payload: dict[str, Any] = {}
    if args.no_prepare:
        payload["prepare"] = False
    if args.force:
        payload["force"] = True
    if args.prepare_timeout is not None:
        payload["timeout_s"] = args.prepare_timeout
    return payload


# -- writes -------------------------------------------------------------------------------------------
def prepare(file: Path, data: bytes, explicit: str | None) -> tuple[str, bytes]:
    """The flow name and the bytes to send; a LangFlow export is converted here, before it is sent."""
    try:
        document = load_document(data, name=explicit)
    except FlowValidationError as e:
        if [p.code for p in e.problems] == ["invalid_json"]:
            # The problem's message already says "not valid JSON: …"; say it once.
            raise BadRequest(f"{file}: {e.problems[0].message}") from e
        raise
    # The canonical bytes are sent: the same content, and a LangFlow export arrives already converted.
    data = canonical_bytes(document)
    if explicit:
        return explicit, data
    name = document.get("name") if isinstance(document, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest(f'{file} has no "name"; pass --flow NAME')
    return name, data


def read_file(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as e:
        raise BadRequest(f"cannot read {file}: {e.strerror}") from e


def cmd_publish(args: argparse.Namespace) -> int:
    data = read_file(args.file)
    flow, data = prepare(args.file, data, args.flow)
    with client_of(args) as api:
        params = {"activate": args.activate or None, "message": args.message, **cutover_payload(args)}
        body = api.post(path("v1", "flows", flow, "versions"), content=data, params=params)
    state = "new version" if body["created"] else "unchanged, already stored"
    text = f"published {flow} {render.short(body['hash'])} ({state})"
    if body.get("release"):
        text += "\n" + release_line(body["release"])
    return emit(args, body, text)


def cmd_activate(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"hash": args.hash, **cutover_payload(args)}
    if args.expected_generation is not None:
        payload["expected_generation"] = args.expected_generation
    if args.unpin:
        payload["unpin"] = True
    with client_of(args) as api:
        url = path("v1", "flows", args.flow, "activate")
        body = api.post(url, json=payload, params={"message": args.message})
    return emit(args, body, release_line(body))


def cmd_rollback(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = cutover_payload(args)
    if args.to_generation is not None:
        payload["to_generation"] = args.to_generation
    if args.to is not None:
        payload["to_hash"] = args.to
    if args.unpin:
        payload["unpin"] = True
    with client_of(args) as api:
        url = path("v1", "flows", args.flow, "rollback")
        body = api.post(url, json=payload, params={"message": args.message})
    return emit(args, body, release_line(body))


def cmd_gc(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        body = api.post(path("v1", "gc"), params={"dry_run": "true"} if args.dry_run else None)
    did = "would remove" if body.get("dry_run") else "removed"
    text = f"{did} {body['removed_count']} version(s), {body['bytes_freed']} bytes; kept {body['kept']}"
    for flow, hashes in sorted(body["removed"].items()):
        text += "\n" + "\n".join(f"  {flow} {render.short(h)}" for h in hashes)
    return emit(args, body, text)


def cmd_sync(args: argparse.Namespace) -> int:
    from control.cli.sync import sync_directory

    with client_of(args) as api:
        report = sync_directory(
            api, args.dir, activate=args.activate, message=args.message, options=cutover_payload(args)
        )
    return emit(args, report.as_dict(), report.text())


# -- parsers ------------------------------------------------------------------------------------------
def common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--url", help="control plane URL (default: $FLOWFLEET_URL or http://127.0.0.1:8700)")
    parent.add_argument("--token", help="API token (default: $FLOWFLEET_TOKEN)")
    parent.add_argument("--output", "-o", choices=("table", "json"), default="table", help="output format")
    return parent


def command(subparsers: Any, name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
    """A subcommand with the common API options that runs `func(args)`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, parents=[common()], help=help_text)
    parser.set_defaults(func=func)
    return parser


def register(subparsers: Any) -> None:
    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        return command(subparsers, name, func, help_text)

    def message(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-m", "--message", help="why (recorded in history and the audit log)")

    def cutover(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--no-prepare", action="store_true", help="one-phase: skip prepare/commit (emergencies)"
        )
        parser.add_argument(
            "--force", action="store_true", help="commit even if replicas refuse or time out (audited)"
        )
        parser.add_argument(
            "--prepare-timeout",
            type=float,
            metavar="S",
            help="seconds to wait for every replica (default 10)",
        )

    def unpin(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--unpin",
            action="store_true",
            help="move every pinned session to this version too (emergency fix)",
        )

    p = add("publish", cmd_publish, "validate and store a flow version")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--flow", help="flow name (default: the document's name)")
    p.add_argument("--activate", action="store_true", help="also make it the current release")
    message(p)
    cutover(p)

    p = add("activate", cmd_activate, "make a stored version current")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("hash", metavar="HASH", help="version hash or unique prefix (8+ characters)")
    p.add_argument(
        "--expected-generation", type=int, metavar="N", help="fail (exit 3) unless at generation N"
    )
    unpin(p)
    message(p)
    cutover(p)

    p = add("rollback", cmd_rollback, "activate an earlier version as a new generation")
    p.add_argument("flow", metavar="FLOW")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--to-generation", type=int, metavar="N", help="the version of release N")
    target.add_argument("--to", metavar="HASH", help="a stored version")
    unpin(p)
    message(p)
    cutover(p)

    p = add("gc", cmd_gc, "delete old versions nothing references (admin)")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")

    p = add("sync", cmd_sync, "validate a directory of flows, then publish (and activate) what changed")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--activate", action="store_true")
    message(p)
    cutover(p)
