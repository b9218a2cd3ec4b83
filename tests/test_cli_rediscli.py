"""`flowfleet redis-cli`: which Redis it opens (the local fleet's, else FLOWFLEET_REDIS_URL's, never a
silent localhost:6379), as whom, and that the password travels in the environment, not in argv. Run for
real against a password-protected redis-server; the local fleet case is in tests/e2e/test_up_fleet.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.cli import main
from control.cli.rediscli import NoRedis, Target, command, resolve, split_args, url_target
from control.localcluster import runstate
from control.localcluster.runstate import FleetStatus
from tests.redis_server import RedisServer

FLOWFLEET = [sys.executable, "-c", "from control.cli import entry; entry()"]
BINARY = Path("/usr/bin/redis-cli")


def test_our_option_comes_first_and_everything_else_is_redis_clis() -> None:
    assert split_args(["--scan", "--pattern", "flowfleet:*"]) == (
        None,
        ["--scan", "--pattern", "flowfleet:*"],
    )
    assert split_args(["--state-dir", "d", "GET", "k"]) == (Path("d"), ["GET", "k"])
    assert split_args(["--state-dir=d", "--", "--raw", "GET", "k"]) == (Path("d"), ["--raw", "GET", "k"])
    assert split_args(["GET", "--state-dir"]) == (None, ["GET", "--state-dir"])
    assert split_args([]) == (None, [])


def test_urls_are_read_like_the_replicas_read_them() -> None:
    assert url_target("redis://control:p%40ss@10.0.0.5:6390/2") == Target(
        "10.0.0.5", 6390, "control", "p@ss", "FLOWFLEET_REDIS_URL", db=2
    )
    secure = url_target("rediss://:pw@redis.internal?ssl_ca_certs=/etc/ca.crt")
    assert (secure.host, secure.port, secure.user, secure.password) == ("redis.internal", 6379, None, "pw")
    assert secure.tls and secure.cacert == "/etc/ca.crt"
    argv, _ = command(BINARY, secure, ["PING"], {})
    assert argv == [
        str(BINARY),
        "-h",
        "redis.internal",
        "-p",
        "6379",
        "--tls",
        "--cacert",
        "/etc/ca.crt",
        "PING",
    ]
    with pytest.raises(NoRedis, match="redis:// or rediss://"):
        url_target("http://redis:6379")


def test_the_password_goes_to_the_environment_never_to_argv() -> None:
    target = Target("127.0.0.1", 6380, "control", "s3cret-pw", "the local fleet", db=1)
    argv, env = command(BINARY, target, ["GET", "k"], {"PATH": "/bin", "REDISCLI_AUTH": "someone-elses"})
    assert argv == [str(BINARY), "-h", "127.0.0.1", "-p", "6380", "--user", "control", "-n", "1", "GET", "k"]
    assert not any("s3cret" in arg for arg in argv)
    assert env == {"PATH": "/bin", "REDISCLI_AUTH": "s3cret-pw"}
    # No password: none from the caller's environment leaks in either.
    _, bare = command(BINARY, Target("h", 1, None, None, "url"), [], {"REDISCLI_AUTH": "x"})
    assert "REDISCLI_AUTH" not in bare


def write_fleet_state(state_dir: Path, password: str, port: int) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / "redis-control-password").write_text(password + "\n")
    runstate.write_status(
        state_dir, FleetStatus(1, "http://a", "http://r", "127.0.0.1", port, 1, running=False)
    )


def test_the_local_fleet_wins_then_the_url_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoRedis, match="FLOWFLEET_REDIS_URL is not set"):
        resolve(None, {})
    assert resolve(None, {"FLOWFLEET_REDIS_URL": "redis://u:p@h:1/0"}).source == "FLOWFLEET_REDIS_URL"
    with pytest.raises(NoRedis, match="holds no local fleet"):
        resolve(tmp_path / "elsewhere", {"FLOWFLEET_REDIS_URL": "redis://u:p@h:1/0"})
    write_fleet_state(tmp_path / ".flowfleet", "pw", 16390)
    local = resolve(None, {"FLOWFLEET_REDIS_URL": "redis://u:p@h:1/0"})
    assert (local.host, local.port, local.user, local.password) == ("127.0.0.1", 16390, "control", "pw")
    # A state directory from before up.json existed: up's default address.
    (tmp_path / ".flowfleet" / runstate.STATUS).unlink()
    assert resolve(None, {}).port == 6380


@pytest.fixture
def protected_redis() -> Iterator[RedisServer]:
    server = RedisServer("--requirepass", "pw-of-test").start()
    yield server
    server.stop()


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWFLEET_", "REDISCLI_"))}
    return subprocess.run(
        [*FLOWFLEET, "redis-cli", *args], cwd=cwd, env={**clean, **env},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_redis_cli_runs_against_the_url_and_the_state_dir(
    tmp_path: Path, protected_redis: RedisServer
) -> None:
    url = f"redis://:pw-of-test@127.0.0.1:{protected_redis.port}/0"
    assert cli(["SET", "flowfleet:probe", "hello"], tmp_path, FLOWFLEET_REDIS_URL=url).stdout == "OK\n"
    got = cli(["--raw", "GET", "flowfleet:probe"], tmp_path, FLOWFLEET_REDIS_URL=url)
    assert (got.returncode, got.stdout, got.stderr) == (0, "hello\n", "")
    # A stopped fleet's state directory: its Redis is tried (here a stand-in on the recorded port), with
    # a warning; the user is `control`, which this server does not know, so the login fails loudly.
    write_fleet_state(tmp_path / "state", "pw-of-test", protected_redis.port)
    tried = cli(["--state-dir", str(tmp_path / "state"), "PING"], tmp_path)
    assert "no flowfleet up is running" in tried.stderr
    assert "WRONGPASS" in tried.stdout + tried.stderr
    missing = cli(["PING"], tmp_path)
    assert missing.returncode == 1 and "FLOWFLEET_REDIS_URL is not set" in missing.stderr


def test_help_is_ours(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["redis-cli", "--help"]) == 0
    assert "REDISCLI_AUTH" in capsys.readouterr().out


def test_a_cluster_url_opens_its_first_seed_node_following_redirections() -> None:
    target = url_target("redis+cluster://control:pw@10.0.0.7:7000,10.0.0.8:7001/")
    assert (target.host, target.port, target.user, target.password, target.cluster) == (
        "10.0.0.7", 7000, "control", "pw", True,
    )  # fmt: skip
    argv, env = command(BINARY, target, ["GET", "k"], {})
    assert argv == [str(BINARY), "-h", "10.0.0.7", "-p", "7000", "--user", "control", "-c", "GET", "k"]
    assert env["REDISCLI_AUTH"] == "pw"
    with pytest.raises(NoRedis, match="a Redis Cluster has only database 0"):
        url_target("redis+cluster://10.0.0.7:7000/2")
