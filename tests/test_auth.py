"""control.http.auth: token table loading, constant-time lookup, roles, and the tokens-file format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cluster.errors import Forbidden, Unauthorized
from cluster.settings import Settings
from control.http.auth import AuthConfigError, Principal, Role, TokenTable, token_entry_json


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_tokens(tmp_path: Path, entries: object) -> str:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(entries))
    return str(path)


def test_refuses_to_run_without_any_token() -> None:
    with pytest.raises(AuthConfigError, match="no API token configured"):
        TokenTable.from_settings(Settings())


def test_admin_token_bootstraps_an_admin_principal() -> None:
    table = TokenTable.from_settings(Settings(admin_token="s3cret-admin-token"))
    assert table.authenticate("Bearer s3cret-admin-token") == Principal("admin", Role.ADMIN)
    assert table.authenticate("bearer   s3cret-admin-token ") == Principal("admin", Role.ADMIN)


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "s3cret-admin-token", "Bearer wrong"],
)
def test_missing_malformed_or_wrong_tokens_are_unauthorized(header: str | None) -> None:
    table = TokenTable.from_settings(Settings(admin_token="s3cret-admin-token"))
    with pytest.raises(Unauthorized):
        table.authenticate(header)


def test_tokens_file_principals_and_roles(tmp_path: Path) -> None:
    path = write_tokens(
        tmp_path,
        [
            {"name": "ci", "role": "deployer", "sha256": sha("ci-token")},
            {"name": "grafana", "role": "viewer", "sha256": sha("view-token").upper()},
        ],
    )
    table = TokenTable.from_settings(Settings(tokens_file=path))
    ci = table.authenticate("Bearer ci-token")
    assert ci == Principal("ci", Role.DEPLOYER)
    assert table.authenticate("Bearer view-token") == Principal("grafana", Role.VIEWER)
    with pytest.raises(Unauthorized):
        table.authenticate(f"Bearer {sha('ci-token')}")  # the digest itself is not a token


def test_roles_are_ordered() -> None:
    deployer = Principal("ci", Role.DEPLOYER)
    deployer.require(Role.VIEWER)
    deployer.require(Role.DEPLOYER)
    with pytest.raises(Forbidden) as err:
        deployer.require(Role.ADMIN)
    assert err.value.details == {"principal": "ci", "role": "deployer", "required": "admin"}
    assert err.value.http_status == 403 and err.value.exit_code == 5


def test_token_entry_json_round_trips_through_the_tokens_file(tmp_path: Path) -> None:
    line = token_entry_json("alice-token", "alice", Role.ADMIN)
    assert json.loads(line) == {"name": "alice", "role": "admin", "sha256": sha("alice-token")}
    table = TokenTable.from_settings(Settings(tokens_file=write_tokens(tmp_path, [json.loads(line)])))
    assert table.authenticate("Bearer alice-token") == Principal("alice", Role.ADMIN)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"name": "x"}, "JSON list"),
        (["x"], "must be an object"),
        ([{"name": "x", "role": "viewer", "sha256": sha("t"), "token": "t"}], "unknown keys"),
        ([{"name": "", "role": "viewer", "sha256": sha("t")}], "name must be"),
        ([{"name": "x", "role": "root", "sha256": sha("t")}], "unknown role"),
        ([{"name": "x", "role": "viewer", "sha256": "abc"}], "64 hex"),
        ([{"name": "x", "role": "viewer", "sha256": sha("a")},
          {"name": "x", "role": "admin", "sha256": sha("b")}], "unique"),
        ([], "no API token configured"),
    ],
)  # fmt: skip
def test_bad_tokens_files_are_refused_with_a_clear_error(
    tmp_path: Path, entries: object, message: str
) -> None:
    with pytest.raises(AuthConfigError, match=message):
        TokenTable.from_settings(Settings(tokens_file=write_tokens(tmp_path, entries)))


def test_unreadable_or_malformed_tokens_file(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="cannot read tokens file"):
        TokenTable.from_settings(Settings(tokens_file=str(tmp_path / "missing.json")))
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(AuthConfigError, match="not valid JSON"):
        TokenTable.from_settings(Settings(tokens_file=str(bad)))


def test_admin_name_cannot_be_shadowed_by_the_tokens_file(tmp_path: Path) -> None:
    path = write_tokens(tmp_path, [{"name": "admin", "role": "viewer", "sha256": sha("v")}])
    with pytest.raises(AuthConfigError, match="unique"):
        TokenTable.from_settings(Settings(admin_token="s3cret-admin-token", tokens_file=path))


def test_short_admin_token_is_accepted_but_logged(caplog: pytest.LogCaptureFixture) -> None:
    TokenTable.from_settings(Settings(admin_token="short"))
    assert "shorter than 16" in caplog.text
