"""The `flowfleet` CLI as a subprocess against a real control server (uvicorn) and a real redis-server."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.store import fleet
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.control_support import (
    ADMIN_TOKEN,
    FLOWFLEET,
    VIEWER_TOKEN,
    Cli,
    CliResult,
    ControlProcess,
    base_env,
    flow_doc,
    invalid_doc,
)
from tests.redis_server import RedisServer, free_port


@pytest.fixture(scope="module")
def control(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlProcess]:
    """One control server with its own namespace for this module; tests use their own flow names."""
    server = ControlProcess(
        redis_server.url, f"fftest-cli-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("control")
    )
    server.env["FLOWFLEET_GC_MIN_AGE_S"] = "0"  # gc may delete a version published a moment ago
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cli(control: ControlProcess) -> Cli:
    return Cli(control.url)


@pytest.fixture
def flow() -> str:
    return f"qa_{uuid.uuid4().hex[:8]}"


def write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path


def digest_of(doc: Any) -> str:
    return content_address(doc)[1]


def one_error_line(result: CliResult) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowfleet: "), result.err
    return lines[0]


# -- publish / activate / rollback -------------------------------------------------------------------
def test_publish_then_publish_again_then_activate(cli: Cli, flow: str, tmp_path: Path) -> None:
    doc = flow_doc(name=flow)
    file = write(tmp_path / "f.json", doc)
    first = cli("publish", str(file), "-m", "first")
    assert first.code == 0, first.err
    assert first.out.strip() == f"published {flow} {digest_of(doc)[:12]} (new version)"
    again = cli("publish", str(file), "--output", "json")
    assert again.code == 0
    assert again.json() == {"flow": flow, "hash": digest_of(doc), "created": False, "release": None}
    activated = cli("activate", flow, digest_of(doc)[:8], "--expected-generation", "0", "-m", "go")
    assert activated.code == 0
    assert activated.out.strip() == f"activate {flow} -> {digest_of(doc)[:12]} generation 1 by ci"


def test_publish_activate_flag_and_explicit_flow_name(cli: Cli, flow: str, tmp_path: Path) -> None:
    file = write(tmp_path / "f.json", flow_doc(name=None))
    result = cli("publish", str(file), "--flow", flow, "--activate", "-o", "json")
    assert result.code == 0
    assert result.json()["release"]["generation"] == 1


def test_publish_failures_exit_codes(cli: Cli, flow: str, tmp_path: Path) -> None:
    invalid = cli("publish", str(write(tmp_path / "bad.json", invalid_doc())), "--flow", flow)
    assert invalid.code == 1
    assert "problems" in one_error_line(invalid) and "NoSuchComponent" in invalid.err
    unnamed = cli("publish", str(write(tmp_path / "unnamed.json", flow_doc(name=None))))
    assert unnamed.code == 2 and "--flow" in one_error_line(unnamed)
    missing = cli("publish", str(tmp_path / "nope.json"))
    assert missing.code == 2 and "cannot read" in one_error_line(missing)
    usage = cli("publish")
    assert usage.code == 2


def test_activate_conflict_and_not_found(cli: Cli, flow: str, tmp_path: Path) -> None:
    doc = flow_doc(name=flow)
    assert cli("publish", str(write(tmp_path / "f.json", doc)), "--activate").code == 0
    stale = cli("activate", flow, digest_of(doc), "--expected-generation", "0")
    assert stale.code == 3 and "generation 1" in one_error_line(stale)
    unknown = cli("activate", flow, "0123456789abcdef")
    assert unknown.code == 4 and one_error_line(unknown)
    assert cli("activate", "no_such_flow", "0123456789abcdef").code == 4
    assert cli("activate", flow, "nothex").code == 2


def test_rollback_default_generation_and_hash(cli: Cli, flow: str, tmp_path: Path) -> None:
    a, b = flow_doc("a {input}", name=flow), flow_doc("b {input}", name=flow)
    assert cli("rollback", flow).code == 4  # unknown flow
    cli("publish", str(write(tmp_path / "a.json", a)), "--activate")
    assert cli("rollback", flow).code == 3  # nothing earlier
    cli("publish", str(write(tmp_path / "b.json", b)), "--activate")
    back = cli("rollback", flow, "-m", "bad answers", "-o", "json").json()
    assert (back["hash"], back["generation"], back["action"]) == (digest_of(a), 3, "rollback")
    assert cli("rollback", flow, "--to-generation", "2", "-o", "json").json()["hash"] == digest_of(b)
    assert cli("rollback", flow, "--to", digest_of(a)[:10], "-o", "json").json()["generation"] == 5
    assert cli("rollback", flow, "--to-generation", "99").code == 4
    assert cli("rollback", flow, "--to-generation", "1", "--to", "abcdefab").code == 2


# -- reads --------------------------------------------------------------------------------------------
def test_history_show_and_diff(cli: Cli, flow: str, tmp_path: Path) -> None:
    a, b = flow_doc("Summarise: {input}", name=flow), flow_doc("Summarise briefly: {input}", name=flow)
    cli("publish", str(write(tmp_path / "a.json", a)), "--activate", "-m", "first")
    cli("publish", str(write(tmp_path / "b.json", b)), "--activate", "-m", "shorter")
    history = cli("history", flow)
    assert history.code == 0
    lines = history.out.strip().splitlines()
    assert lines[0].split() == ["GEN", "HASH", "ACTION", "BY", "AT", "(UTC)", "REASON"]
    assert lines[1].split()[:4] == ["2", digest_of(b)[:12], "activate", "ci"] and lines[1].endswith("shorter")
    assert [r["generation"] for r in cli("history", flow, "-o", "json").json()["releases"]] == [2, 1]

    show = cli("show", flow)
    assert f"current {digest_of(b)} generation 2" in show.out
    assert digest_of(a)[:12] in show.out
    assert json.loads(cli("show", flow, digest_of(a)[:8]).out) == a
    assert cli("show", flow, "0123456789ab").code == 4

    diff = cli("diff", flow, digest_of(a)[:8], digest_of(b)[:8])
    assert diff.code == 0
    assert "~ node prompt_1" in diff.out
    assert '/template: "Summarise: {input}" -> "Summarise briefly: {input}"' in diff.out
    assert cli("diff", flow, digest_of(a), digest_of(a)).out.strip().endswith("no differences")


async def test_status_shows_the_fleet(
    cli: Cli, flow: str, tmp_path: Path, control: ControlProcess, redis_client: aioredis.Redis
) -> None:
    doc = flow_doc(name=flow)
    cli("publish", str(write(tmp_path / "f.json", doc)), "--activate")
    store = Store(redis_client, Keys(control.namespace))
    replica = f"web-{flow}"
    status = {
        "host": "box-1", "pid": 4711, "heartbeat_s": 30.0, "ttl_s": 60.0,
        "flows": {flow: {"hash": digest_of(doc), "generation": 1, "last_error": None}},
    }  # fmt: skip
    await store.write_replica_status(replica, status, ttl_s=60)
    table = cli("status", flow)
    assert table.code == 0
    header, row = table.out.strip().splitlines()
    assert header.split() == [
        "REPLICA", "HOST", "PID", "FLOW", "GEN", "HASH", "CURRENT", "STATE", "AGE", "ERROR",
    ]  # fmt: skip
    cells = row.split()
    short = digest_of(doc)[:12]
    assert cells[:8] + cells[9:] == [replica, "box-1", "4711", flow, "1", short, "1", "current", "-"]
    assert cells[8].endswith("s")  # the age of its last heartbeat, e.g. 0.3s
    rows = cli("status", flow, "-o", "json").json()["rows"]
    found = [(r["replica"], r["state"], r["host"], r["pid"]) for r in rows]
    assert found == [(replica, "current", "box-1", 4711)]
    assert "no live replica reports flow other" in cli("status", "other").out
    # A fake replica that never answers a prepare would hold up later two-phase activations here.
    await fleet.deregister(redis_client, Keys(control.namespace), replica)


def test_audit(cli: Cli, flow: str, tmp_path: Path) -> None:
    doc = flow_doc(name=flow)
    cli("publish", str(write(tmp_path / "f.json", doc)), "--activate", "-m", "launch")
    entries = cli("audit", "--flow", flow, "-o", "json").json()["entries"]
    assert {e["action"] for e in entries} >= {"activate"}
    table = cli("audit", "--flow", flow, "--limit", "1")
    assert table.code == 0 and "launch" in table.out and "activate" in table.out


def test_gc_needs_admin(cli: Cli, flow: str, tmp_path: Path) -> None:
    cli("publish", str(write(tmp_path / "a.json", flow_doc("a {input}", name=flow))), "--activate")
    dropped = flow_doc("b {input}", name=flow)
    cli("publish", str(write(tmp_path / "b.json", dropped)))
    refused = cli("gc")
    assert refused.code == 5 and "admin" in one_error_line(refused)
    listed = cli("gc", "--dry-run", token=ADMIN_TOKEN)
    assert listed.code == 0 and listed.out.startswith("would remove "), listed
    assert digest_of(dropped)[:12] in listed.out
    assert cli("show", flow, digest_of(dropped)).code == 0, "a dry run deletes nothing"
    done = cli("gc", "-o", "json", token=ADMIN_TOKEN)
    assert done.code == 0 and digest_of(dropped) in done.json()["removed"][flow]
    assert cli("show", flow, digest_of(dropped)).code == 4


# -- auth and connection errors -----------------------------------------------------------------------
def test_auth_failures_exit_5(cli: Cli, flow: str, tmp_path: Path) -> None:
    file = str(write(tmp_path / "f.json", flow_doc(name=flow)))
    for token in (VIEWER_TOKEN, "wrong-token", None):
        result = cli("publish", file, token=token)
        assert result.code == 5, (token, result.err)
        one_error_line(result)
    assert cli("history", flow, token=VIEWER_TOKEN).code == 4  # viewers may read


def test_unreachable_control_plane_is_a_clear_one_line_failure(cli: Cli) -> None:
    result = cli("history", "qa", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.code == 1
    assert "cannot reach the control plane" in one_error_line(result)


# -- sync ---------------------------------------------------------------------------------------------
def test_sync_twice_changes_nothing_the_second_time(
    cli: Cli, tmp_path: Path, control: ControlProcess
) -> None:
    names = [f"sync_{uuid.uuid4().hex[:6]}" for _ in range(2)]
    flows = tmp_path / "flows"
    flows.mkdir()
    write(flows / "first.json", flow_doc("one {input}", name=names[0]))
    write(flows / f"{names[1]}.json", flow_doc("two {input}", name=None))  # flow named by the file
    first = cli("sync", str(flows), "--activate", "-m", "from git", "-o", "json")
    assert first.code == 0, first.err
    assert first.json()["changed"] == 2
    assert {a["action"] for a in first.json()["actions"]} == {"published+activated"}
    second = cli("sync", str(flows), "--activate")
    assert second.code == 0 and second.out.strip().endswith("0 of 2 flow(s) changed")

    write(flows / "first.json", flow_doc("one, edited {input}", name=names[0]))
    third = cli("sync", str(flows), "--activate", "-o", "json").json()
    assert [
        (a["flow"], a["action"], a["generation"]) for a in third["actions"] if a["action"] != "unchanged"
    ] == [(names[0], "published+activated", 2)]


def test_sync_without_activate_only_publishes(cli: Cli, tmp_path: Path) -> None:
    name = f"sync_{uuid.uuid4().hex[:6]}"
    write(tmp_path / "f.json", flow_doc(name=name))
    assert cli("sync", str(tmp_path), "-o", "json").json()["actions"][0]["action"] == "published"
    assert cli("sync", str(tmp_path), "-o", "json").json()["changed"] == 0
    assert cli("show", name, "-o", "json").json()["release"] is None


def test_sync_publishes_nothing_when_any_file_is_invalid(cli: Cli, tmp_path: Path) -> None:
    good = f"sync_{uuid.uuid4().hex[:6]}"
    write(tmp_path / "good.json", flow_doc(name=good))
    write(tmp_path / "bad.json", invalid_doc() | {"name": f"sync_{uuid.uuid4().hex[:6]}"})
    (tmp_path / "broken.json").write_text("{")
    result = cli("sync", str(tmp_path), "--activate")
    assert result.code == 1
    line = one_error_line(result)
    assert "2 invalid file(s), nothing published" in line and "bad.json" in line and "broken.json" in line
    assert cli("show", good).code == 4
    assert cli("sync", str(tmp_path / "missing")).code == 2


def test_sync_that_fails_halfway_says_what_changed(cli: Cli, tmp_path: Path) -> None:
    name = f"sync_{uuid.uuid4().hex[:6]}"
    write(tmp_path / "f.json", flow_doc(name=name))
    result = cli("sync", str(tmp_path), token=VIEWER_TOKEN)  # may read, may not publish
    assert result.code == 5
    assert f"sync stopped at f.json (flow {name})" in one_error_line(result)
    assert "already changed: nothing" in result.err


def test_sync_refuses_two_files_for_one_flow(cli: Cli, tmp_path: Path) -> None:
    name = f"sync_{uuid.uuid4().hex[:6]}"
    write(tmp_path / "a.json", flow_doc("a {input}", name=name))
    write(tmp_path / "b.json", flow_doc("b {input}", name=name))
    result = cli("sync", str(tmp_path))
    assert result.code == 1 and "also in a.json" in one_error_line(result)


# -- server-side helpers ------------------------------------------------------------------------------
def test_token_hash_prints_a_tokens_file_entry(cli: Cli) -> None:
    entry = cli("token", "hash", "--name", "alice", "--role", "deployer", stdin="alice-secret\n", token=None)
    assert entry.code == 0
    assert json.loads(entry.out) == {
        "name": "alice",
        "role": "deployer",
        "sha256": hashlib.sha256(b"alice-secret").hexdigest(),
    }
    bare = cli("token", "hash", stdin="alice-secret\n", token=None)
    assert bare.out.strip() == hashlib.sha256(b"alice-secret").hexdigest()
    assert cli("token", "hash", stdin="", token=None).code == 2


def test_control_refuses_to_start_without_tokens(redis_server: RedisServer) -> None:
    env = base_env() | {"FLOWFLEET_REDIS_URL": redis_server.url}
    proc = subprocess.run(
        [FLOWFLEET, "control", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no API token configured" in proc.stderr


def test_control_refuses_a_bad_redis_url_before_listening() -> None:
    env = base_env() | {"FLOWFLEET_REDIS_URL": "http://cache:6379", "FLOWFLEET_ADMIN_TOKEN": ADMIN_TOKEN}
    proc = subprocess.run(
        [FLOWFLEET, "control", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("flowfleet: unsupported Redis URL scheme 'http'")


def test_publish_converts_a_langflow_export_first(cli: Cli, flow: str) -> None:
    export = Path(__file__).parent / "data" / "langflow" / "basic_prompting.json"
    result = cli("publish", str(export), "--flow", flow, "--output", "json")
    assert result.code == 0, result.err
    shown = cli("show", flow, result.json()["hash"], "--output", "json")
    assert shown.code == 0, shown.err
    assert "data" not in shown.json()["document"] and shown.json()["document"]["name"] == flow
