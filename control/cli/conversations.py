"""`flowfleet conversations list | show | delete | forget`: the chat conversations replicas keep.

flowfleet conversations list support_qa                 # principal, id, last active; most recent first
flowfleet conversations show support_qa SESSION_ID      # the messages, oldest first
flowfleet conversations delete support_qa SESSION_ID    # deployer: the conversation and its version pin
flowfleet conversations forget USER_ID                  # deployer: every conversation of a user
"""

from __future__ import annotations

import argparse
from typing import Any

from cluster.store.conversations import ANONYMOUS
from control.cli import render
from control.cli.client import path
from control.cli.remote import client_of, common, emit


def _principal(args: argparse.Namespace) -> dict[str, Any]:
    return {"principal": args.principal if args.principal != ANONYMOUS else None}


def cmd_list(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        body = api.get(path("v1", "flows", args.flow, "conversations"), params={"limit": args.limit})
    rows = [[c["principal"], c["id"], render.when(c["last_active"])] for c in body["conversations"]]
    text = render.table(["PRINCIPAL", "ID", "LAST ACTIVE (UTC)"], rows)
    if not rows:
        text = f"no conversation of flow {args.flow}"
    return emit(args, body, text)


def cmd_show(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        url = path("v1", "flows", args.flow, "conversations", args.id)
        body = api.get(url, params=_principal(args))
    rows = [[render.when(m["at"]), m["role"], m["sender"], m["content"]] for m in body["messages"]]
    return emit(args, body, render.table(["AT (UTC)", "ROLE", "SENDER", "CONTENT"], rows))


def cmd_delete(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        url = path("v1", "flows", args.flow, "conversations", args.id)
        body = api.request("DELETE", url, params=_principal(args))
    ref = body["deleted"]
    text = f"deleted conversation {ref['id']} of {ref['flow']} (principal {ref['principal']})"
    return emit(args, body, text)


def cmd_forget(args: argparse.Namespace) -> int:
    with client_of(args) as api:
        body = api.request("DELETE", path("v1", "users", args.user_id, "conversations"))
    rows = [[r["flow"], r["principal"], r["id"]] for r in body["deleted"]]
    text = f"forgot user {body['user']}: {len(rows)} conversation(s) deleted"
    if rows:
        text += "\n" + render.table(["FLOW", "PRINCIPAL", "ID"], rows)
    return emit(args, body, text)


def register(subparsers: Any) -> None:
    parent = common()
    conversations = subparsers.add_parser("conversations", help="read and delete stored chat conversations")
    commands = conversations.add_subparsers(dest="conversations_command", metavar="ACTION", required=True)

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, parents=[parent], help=help_text)
        parser.set_defaults(func=func)
        return parser

    p = add("list", cmd_list, "a flow's conversations, most recent first")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("--limit", type=int, default=100)
    for name, func, help_text in (
        ("show", cmd_show, "a conversation's messages, oldest first"),
        ("delete", cmd_delete, "delete a conversation and its session's version pin (deployer)"),
    ):
        p = add(name, func, help_text)
        p.add_argument("flow", metavar="FLOW")
        p.add_argument("id", metavar="ID", help="the conversation (session) id")
        p.add_argument("--principal", default=ANONYMOUS, help='the principal it is scoped by (default "-")')
    p = add("forget", cmd_forget, "delete every conversation of a user, in every flow (deployer)")
    p.add_argument("user_id", metavar="USER_ID")
