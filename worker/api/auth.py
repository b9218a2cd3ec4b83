"""Run authentication: who may run flows on a replica, and whose conversations a run reads.

Off unless `FLOWFLEET_RUN_TOKENS_FILE` names a tokens file (then every run API asks for a token). The
file has the control plane's format — a JSON list of entries holding only the sha256 of each token —
with an optional `flows` list limiting what that principal may run:

    [{"name": "support-web", "sha256": "9f86d0…", "flows": ["support_qa"]},
     {"name": "batch", "sha256": "60303a…"}]

A token is presented as `Authorization: Bearer <token>` or `x-api-key: <token>` (LangFlow's header).
The principal's name scopes conversations: two principals using the same session id never share one.
Without authentication every caller is the anonymous principal `-`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cluster.errors import FlowfleetError, Forbidden, Unauthorized
from cluster.flow.hashing import is_full_hash
from cluster.names import FLOW_NAME
from cluster.store.conversations import ANONYMOUS

ENTRY_KEYS = {"name", "sha256", "flows", "role"}


class RunAuthConfigError(FlowfleetError):
    """The run tokens file is missing or unusable: the replica refuses to start."""

    code = "run_auth_config"
    exit_code = 2


@dataclass(frozen=True)
class Caller:
    name: str
    flows: frozenset[str] | None  # None: every flow

    def may_run(self, flow: str) -> None:
        if self.flows is not None and flow not in self.flows:
            raise Forbidden(f"{self.name!r} may not run flow {flow!r}", principal=self.name, flow=flow)


ANONYMOUS_CALLER = Caller(ANONYMOUS, None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class RunAuth:
    """Maps a presented token to its caller, comparing digests in constant time; `None` table: off."""

    def __init__(self, entries: Mapping[bytes, Caller] | None) -> None:
        self.entries = entries

    @property
    def enabled(self) -> bool:
        return self.entries is not None

    @classmethod
    def from_file(cls, path: str | None) -> RunAuth:
        return cls(None if not path else load_run_tokens(Path(path)))

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        if self.entries is None:
            return ANONYMOUS_CALLER
        token = headers.get("x-api-key")
        if token is None:
            authorization = headers.get("authorization")
            if not authorization:
                raise Unauthorized("missing token (Authorization: Bearer <token>, or x-api-key: <token>)")
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("malformed Authorization header; expected 'Bearer <token>'")
        presented = _digest(token.strip())
        found: Caller | None = None
        for digest, caller in self.entries.items():  # no early exit: timing says nothing
            if hmac.compare_digest(presented, digest) and found is None:
                found = caller
        if found is None:
            raise Unauthorized("invalid token")
        return found


def load_run_tokens(path: Path) -> dict[bytes, Caller]:
    try:
        data: Any = orjson.loads(path.read_bytes())
    except OSError as e:
        raise RunAuthConfigError(f"cannot read run tokens file {path}: {e.strerror}") from e
    except orjson.JSONDecodeError as e:
        raise RunAuthConfigError(f"run tokens file {path} is not valid JSON: {e}") from e
    if not isinstance(data, list) or not data:
        raise RunAuthConfigError(
            f"run tokens file {path} must hold a non-empty JSON list of {{name, sha256}}"
        )
    entries: dict[bytes, Caller] = {}
    names: set[str] = set()
    for i, item in enumerate(data):
        where = f"run tokens file {path} entry {i}"
        if not isinstance(item, dict):
            raise RunAuthConfigError(f"{where} must be an object with name and sha256")
        unknown = sorted(set(item) - ENTRY_KEYS)
        if unknown:  # a "token" key would be a secret written in clear: refuse rather than ignore
            raise RunAuthConfigError(f"{where} has unknown keys {unknown}; only name, sha256, flows")
        name, digest, flows = item.get("name"), item.get("sha256"), item.get("flows")
        if not isinstance(name, str) or not name.strip() or name == ANONYMOUS or ":" in name:
            raise RunAuthConfigError(f"{where}: name must be a non-empty string without ':' (not '-')")
        if name in names:
            raise RunAuthConfigError(f"{where}: principal {name!r} is listed twice")
        if not isinstance(digest, str) or not is_full_hash(digest.lower()):
            raise RunAuthConfigError(f"{where}: sha256 must be 64 hex characters")
        allowed: frozenset[str] | None = None
        if flows is not None:
            if not isinstance(flows, list) or not all(
                isinstance(f, str) and FLOW_NAME.match(f) for f in flows
            ):
                raise RunAuthConfigError(f"{where}: flows must be a list of flow names")
            allowed = frozenset(flows)
        names.add(name)
        entries[bytes.fromhex(digest)] = Caller(name, allowed)
    return entries
