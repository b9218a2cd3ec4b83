"""The local cluster's secrets: made once at first start, kept in the state directory with mode 0600.

    creds = Credentials.load_or_create(Path(".flowfleet"))
    creds.admin_token  # also readable with `cat .flowfleet/admin-token`

Nothing here is a default credential: every value is random, per checkout.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import FlowfleetError

FILES = {
    "admin_token": "admin-token",
    "worker_password": "redis-worker-password",
    "control_password": "redis-control-password",
}


class CredentialsError(FlowfleetError):
    code = "credentials_error"


@dataclass(frozen=True)
class Credentials:
    admin_token: str
    worker_password: str
    control_password: str

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Credentials:
        state_dir.mkdir(parents=True, exist_ok=True)
        values = {field: _load_or_create(state_dir / name) for field, name in FILES.items()}
        return cls(**values)

    def redis_passwords(self) -> dict[str, str]:
        return {"worker": self.worker_password, "control": self.control_password}


def path_of(state_dir: Path, field: str) -> Path:
    return state_dir / FILES[field]


def _load_or_create(path: Path) -> str:
    value = secrets.token_urlsafe(32)
    try:
        # O_EXCL: two starts racing never overwrite each other's secret; the loser reads the winner's.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as e:
        raise CredentialsError(f"cannot create {path}: {e.strerror}") from e
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value + "\n")
    return value


def _read(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise CredentialsError(f"cannot read {path}: {e.strerror}") from e
    if not value or any(c.isspace() for c in value):
        raise CredentialsError(f"{path} must hold one secret without spaces; delete it to make a new one")
    return value
