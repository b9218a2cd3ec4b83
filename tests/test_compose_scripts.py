"""The shell scripts of the compose deployment, run for real: compose/redis/start.sh starts a real
redis-server >= 7 with the rendered ACL users, and compose/init-secrets.sh makes every secret once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, NoPermissionError

from cluster.errors import Unauthorized
from cluster.store.keys import Keys
from control.http.auth import Principal, Role, TokenTable, load_tokens_file
from tests.acl_support import require_redis_7
from tests.redis_server import find_redis_server, free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose"
KEYS = Keys()


@pytest.fixture
def entrypoint_shim(tmp_path: Path) -> Path:
    """Stands in for the official image's docker-entrypoint.sh, which only drops root and execs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "docker-entrypoint.sh"
    shim.write_text('#!/bin/sh\nexec "$@"\n')
    shim.chmod(0o755)
    (bin_dir / "redis-server").symlink_to(find_redis_server())
    return bin_dir


def run_start(bin_dir: Path, data_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sh", str(COMPOSE / "redis" / "start.sh"), *args],
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "ACL_TEMPLATE": str(COMPOSE / "redis" / "users.acl"),
            "REDIS_DATA_DIR": str(data_dir),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def started(entrypoint_shim: Path, tmp_path: Path) -> Iterator[tuple[int, dict[str, str], Path]]:
    require_redis_7()
    port = free_port()
    passwords = {"worker": "w-" + os.urandom(8).hex(), "control": "c-" + os.urandom(8).hex()}
    env = {"REDIS_WORKER_PASSWORD": passwords["worker"], "REDIS_CONTROL_PASSWORD": passwords["control"]}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    proc = run_start(entrypoint_shim, data_dir, env, "--port", str(port), "--bind", "127.0.0.1", "--save", "")
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "start.sh did not bring up redis-server"
                time.sleep(0.02)
        yield port, passwords, data_dir
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_start_sh_runs_redis_with_the_acl_users_and_aof(started: tuple[int, dict[str, str], Path]) -> None:
    port, passwords, data_dir = started
    worker = redis.Redis(port=port, username="worker", password=passwords["worker"])
    control = redis.Redis(port=port, username="control", password=passwords["control"])
    try:
        control.hset(KEYS.release("qa"), "hash", "ab" * 32)
        assert worker.hget(KEYS.release("qa"), "hash") == b"ab" * 32
        with pytest.raises(NoPermissionError):
            worker.hset(KEYS.release("qa"), "hash", "0" * 64)
        with pytest.raises(AuthenticationError):
            redis.Redis(port=port, username="worker", password="wrong").ping()
        with pytest.raises(AuthenticationError):
            redis.Redis(port=port).ping()  # nobody is the default user
    finally:
        worker.close()
        control.close()
    rendered = (data_dir / "users.acl").read_text()
    assert passwords["worker"] not in rendered and passwords["control"] not in rendered
    assert hashlib.sha256(passwords["worker"].encode()).hexdigest() in rendered
    assert (data_dir / "users.acl").stat().st_mode & 0o777 == 0o600
    # AOF on: Redis 7 keeps it in the appendonlydir of the data directory.
    assert (data_dir / "appendonlydir").is_dir()


@pytest.mark.parametrize("missing", ["REDIS_WORKER_PASSWORD", "REDIS_CONTROL_PASSWORD"])
def test_start_sh_refuses_to_start_without_a_password(
    entrypoint_shim: Path, tmp_path: Path, missing: str
) -> None:
    env = {"REDIS_WORKER_PASSWORD": "w", "REDIS_CONTROL_PASSWORD": "c", missing: ""}
    proc = run_start(entrypoint_shim, tmp_path, env, "--port", str(free_port()))
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert f"{missing} is empty" in err.decode()
    assert not (tmp_path / "users.acl").exists()


def test_init_secrets_makes_every_secret_once(tmp_path: Path) -> None:
    compose = tmp_path / "compose"
    compose.mkdir()
    shutil.copy(COMPOSE / "init-secrets.sh", compose)
    script = ["sh", str(compose / "init-secrets.sh")]
    first = subprocess.run(script, capture_output=True, text=True, check=True)
    assert "wrote compose/.env" in first.stdout
    env = dict(line.split("=", 1) for line in (compose / ".env").read_text().splitlines())
    # The secrets init-secrets.sh generates come before the example's optional settings.
    example = (COMPOSE / ".env.example").read_text().split("# --- optional settings")[0].splitlines()
    assert set(env) == {line.split("=")[0] for line in example if line and not line.startswith("#")}
    assert all(len(value) >= 32 for value in env.values()) and len(set(env.values())) == len(env)
    assert (compose / ".env").stat().st_mode & 0o777 == 0o600

    secrets = compose / "secrets"
    token = (secrets / "prometheus-token").read_text()
    (entry,) = json.loads((secrets / "tokens.json").read_text())
    assert entry == {
        "name": "prometheus",
        "role": "viewer",
        "sha256": hashlib.sha256(token.encode()).hexdigest(),
    }
    assert len((secrets / "grafana-admin-password").read_text()) >= 32
    # The control plane reads the file and lets Prometheus in as a viewer, and nobody else.
    table = TokenTable(load_tokens_file(secrets / "tokens.json"))
    assert table.authenticate(f"Bearer {token}") == Principal("prometheus", Role.VIEWER)
    with pytest.raises(Unauthorized):
        table.authenticate(f"Bearer {env['FLOWFLEET_ADMIN_TOKEN']}")

    before = {p.name: p.read_bytes() for p in [compose / ".env", *secrets.iterdir()]}
    second = subprocess.run(script, capture_output=True, text=True, check=True)
    assert second.stdout == ""
    assert {p.name: p.read_bytes() for p in [compose / ".env", *secrets.iterdir()]} == before


def test_the_sentinel_profile_scripts_bring_up_a_monitored_primary(
    entrypoint_shim: Path, tmp_path: Path
) -> None:
    """start.sh with the HA passwords adds the `replication` and `sentinel` users and the replication
    credentials; sentinel-start.sh renders a sentinel that monitors it as those users and lets flowfleet
    in as `flowfleet` (docs/operations.md, "High availability")."""
    require_redis_7()
    port, sentinel_port = free_port(), free_port()
    passwords = {name: name[:3] + "-" + os.urandom(8).hex() for name in
                 ("worker", "control", "replication", "sentinel", "client")}  # fmt: skip
    env = {
        "REDIS_WORKER_PASSWORD": passwords["worker"], "REDIS_CONTROL_PASSWORD": passwords["control"],
        "REDIS_REPLICATION_PASSWORD": passwords["replication"],
        "REDIS_SENTINEL_PASSWORD": passwords["sentinel"],
        "HA_ACL_TEMPLATE": str(COMPOSE / "redis" / "ha-users.acl"),
    }  # fmt: skip
    data_dir, sentinel_dir = tmp_path / "data", tmp_path / "sentinel"
    data_dir.mkdir()
    sentinel_dir.mkdir()
    server = run_start(
        entrypoint_shim, data_dir, env, "--port", str(port), "--bind", "127.0.0.1", "--save", ""
    )
    sentinel = subprocess.Popen(
        ["sh", str(COMPOSE / "redis" / "sentinel-start.sh"), "--port", str(sentinel_port),
         "--bind", "127.0.0.1"],
        env={
            "PATH": f"{entrypoint_shim}:{os.environ['PATH']}",
            "SENTINEL_TEMPLATE": str(COMPOSE / "redis" / "sentinel-auth.conf"),
            "SENTINEL_DATA_DIR": str(sentinel_dir), "SENTINEL_PRIMARY": "127.0.0.1",
            "SENTINEL_PRIMARY_PORT": str(port), "REDIS_SENTINEL_PASSWORD": passwords["sentinel"],
            "REDIS_SENTINEL_CLIENT_PASSWORD": passwords["client"],
        },
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        client = redis.Redis(port=sentinel_port, username="flowfleet", password=passwords["client"])
        deadline = time.monotonic() + 10
        while True:  # the sentinel logged in to the primary as `sentinel` and sees it up
            assert sentinel.poll() is None and server.poll() is None, (
                sentinel.communicate(),
                server.communicate(),
            )
            try:
                state = client.sentinel_master("flowfleet")
                if state["flags"] == "master" and int(state["port"]) == port:
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "the sentinel never saw the primary up"
            time.sleep(0.05)
        client.close()
        rendered = (data_dir / "users.acl").read_text() + (sentinel_dir / "sentinel.conf").read_text()
        assert "user replication on #" in rendered and "user sentinel on #" in rendered
        assert (
            passwords["client"] not in rendered
            and passwords["replication"] not in (data_dir / "users.acl").read_text()
        )
        assert "masteruser replication" in (data_dir / "redis.conf").read_text()
    finally:
        for proc in (sentinel, server):
            proc.terminate()
            proc.communicate(timeout=10)
