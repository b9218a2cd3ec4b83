"""Bearer-token principals with ordered roles (viewer < deployer < admin); tokens are kept only as sha256.

The tokens file (``FLOWFLEET_TOKENS_FILE``) is a JSON list; each entry names a principal, its role and
the sha256 (hex) of its token, so the file holds no secret:

    [{"name": "ci", "role": "deployer",
      "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]

``flowfleet token hash --name ci --role deployer < token.txt`` prints such an entry.
``FLOWFLEET_ADMIN_TOKEN`` adds a bootstrap principal named ``admin`` with the admin role.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cluster.errors import FlowfleetError, Forbidden, Unauthorized
from cluster.flow.hashing import is_full_hash
from cluster.settings import Settings

log = logging.getLogger(__name__)

ADMIN_PRINCIPAL = "admin"
WWW_AUTHENTICATE = 'Bearer realm="flowfleet"'
# Tokens shorter than this are accepted (tests, local clusters) but logged as weak.
WEAK_TOKEN_CHARS = 16


class Role(enum.IntEnum):
    """Each role may do everything the roles below it may."""

    VIEWER = 1
    DEPLOYER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, value: object) -> Role:
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                pass
        raise AuthConfigError(f"unknown role {value!r}; use viewer, deployer or admin")

    @property
    def label(self) -> str:
        return self.name.lower()


class AuthConfigError(FlowfleetError):
    """The token configuration is missing or unusable; the control plane refuses to start."""

    code = "auth_config"
    exit_code = 2


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def require(self, role: Role) -> None:
        """Raise Forbidden unless this principal's role is at least `role`."""
        if self.role < role:
            raise Forbidden(
                f"{self.name!r} has role {self.role.label}; this needs {role.label}",
                principal=self.name,
                role=self.role.label,
                required=role.label,
            )


@dataclass(frozen=True)
class TokenEntry:
    principal: Principal
    digest: bytes  # sha256 of the token


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_entry_json(token: str, name: str, role: Role) -> str:
    """One tokens-file entry for `token` (what `flowfleet token hash` prints)."""
    body = {"name": name, "role": role.label, "sha256": token_digest(token).hex()}
    return orjson.dumps(body).decode()


class TokenTable:
    """Maps a presented bearer token to its principal, comparing digests in constant time."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self.entries = tuple(entries)
        if not self.entries:
            raise AuthConfigError(
                "no API token configured: set FLOWFLEET_ADMIN_TOKEN and/or FLOWFLEET_TOKENS_FILE "
                "(the control plane never runs without authentication)"
            )
        names = [e.principal.name for e in self.entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise AuthConfigError(f"principal names must be unique; repeated: {', '.join(dupes)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable:
        entries: list[TokenEntry] = []
        if settings.admin_token:
            if len(settings.admin_token) < WEAK_TOKEN_CHARS:
                log.warning("FLOWFLEET_ADMIN_TOKEN is shorter than %s characters", WEAK_TOKEN_CHARS)
            entries.append(
                TokenEntry(Principal(ADMIN_PRINCIPAL, Role.ADMIN), token_digest(settings.admin_token))
            )
        if settings.tokens_file:
            entries.extend(load_tokens_file(Path(settings.tokens_file)))
        return cls(entries)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization: Bearer <token>`` header; Unauthorized otherwise."""
        if not authorization:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("malformed Authorization header; expected 'Bearer <token>'")
        presented = token_digest(token)
        found: Principal | None = None
        # Compare against every entry without stopping early, so timing says nothing about which matched.
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.digest) and found is None:
                found = entry.principal
        if found is None:
            raise Unauthorized("invalid token")
        return found


def load_tokens_file(path: Path) -> list[TokenEntry]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise AuthConfigError(f"cannot read tokens file {path}: {e.strerror}") from e
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise AuthConfigError(f"tokens file {path} is not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise AuthConfigError(f"tokens file {path} must hold a JSON list of {{name, role, sha256}}")
    return [_parse_entry(path, i, item) for i, item in enumerate(data)]


def _parse_entry(path: Path, index: int, item: Any) -> TokenEntry:
    where = f"tokens file {path} entry {index}"
    if not isinstance(item, dict):
        raise AuthConfigError(f"{where} must be an object with name, role and sha256")
    unknown = sorted(set(item) - {"name", "role", "sha256"})
    if unknown:
        # A "token" key here would mean a secret written in clear; refuse rather than ignore.
        raise AuthConfigError(f"{where} has unknown keys {unknown}; only name, role, sha256")
    name, digest = item.get("name"), item.get("sha256")
    if not isinstance(name, str) or not name.strip():
        raise AuthConfigError(f"{where}: name must be a non-empty string")
    if not isinstance(digest, str) or not is_full_hash(digest.lower()):
        raise AuthConfigError(f"{where}: sha256 must be 64 hex characters")
    return TokenEntry(Principal(name, Role.parse(item.get("role"))), bytes.fromhex(digest))
