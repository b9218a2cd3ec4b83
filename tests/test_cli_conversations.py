"""`flowfleet conversations ...` as a subprocess against a real control server and redis-server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cluster.components.conversation import ChatMessage
from cluster.store.conversations import ConversationRef, ConversationStore, user_digest
from cluster.store.keys import Keys
from control.cli import build_parser
from tests.control_support import VIEWER_TOKEN, Cli, ControlProcess, flow_doc
from tests.redis_server import RedisServer

FLOW = "chat_qa"


@pytest.fixture(scope="module")
def control(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlProcess]:
    server = ControlProcess(
        redis_server.url, f"fftest-conv-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("control")
    )
    server.start()
    yield server
    server.stop()


async def test_list_show_delete_forget(
    control: ControlProcess, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    cli = Cli(control.url)
    document = tmp_path / "flow.json"
    document.write_text(json.dumps(flow_doc(name=FLOW)))
    assert cli("publish", str(document)).code == 0
    replica = ConversationStore(redis_client, Keys(control.namespace), max_messages=50, ttl_s=600)
    for session in ("s-1", "s-2"):
        ref = ConversationRef(FLOW, "-", session)
        await replica.append(ref, [ChatMessage("user", f"hello {session}", 1764105308.0, "User")], "u-7")

    listed = cli("conversations", "list", FLOW, token=VIEWER_TOKEN)
    assert listed.code == 0, listed
    lines = listed.out.splitlines()
    assert lines[0].split() == ["PRINCIPAL", "ID", "LAST", "ACTIVE", "(UTC)"]
    assert [line.split()[:2] for line in lines[-2:]] == [["-", "s-2"], ["-", "s-1"]]

    shown = cli("conversations", "show", FLOW, "s-1", token=VIEWER_TOKEN)
    assert shown.code == 0 and "hello s-1" in shown.out and "2025-11-25 21:15:08Z" in shown.out, shown
    as_json = cli("conversations", "show", FLOW, "s-1", "-o", "json").json()
    assert as_json["messages"][0]["content"] == "hello s-1"

    refused = cli("conversations", "delete", FLOW, "s-1", token=VIEWER_TOKEN)
    assert refused.code == 5, refused
    deleted = cli("conversations", "delete", FLOW, "s-1")
    assert deleted.code == 0 and deleted.out.strip() == f"deleted conversation s-1 of {FLOW} (principal -)"
    missing = cli("conversations", "show", FLOW, "s-1")
    assert missing.code == 4 and "not found" in missing.err, missing

    forgot = cli("conversations", "forget", "u-7", "-o", "json")
    assert forgot.code == 0, forgot
    assert forgot.json() == {
        "user": user_digest("u-7"),
        "deleted": [{"flow": FLOW, "principal": "-", "id": "s-2"}],
    }
    again = cli("conversations", "forget", "u-7")
    assert again.code == 0 and again.out.startswith(f"forgot user {user_digest('u-7')}: 0 conversation(s)")


def test_parser() -> None:
    args = build_parser().parse_args(["conversations", "show", "qa", "s-1", "--principal", "alice"])
    assert (args.flow, args.id, args.principal, args.output) == ("qa", "s-1", "alice", "table")
    assert build_parser().parse_args(["conversations", "forget", "bob"]).user_id == "bob"
