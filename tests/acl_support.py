"""Shared by the ACL tests: they need a redis-server >= 7 and say so plainly when it is older."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.localcluster.redis_server import server_version, supports_selectors
from tests.redis_server import find_redis_server


def require_redis_7() -> str:
    """The redis-server binary, or a failed test naming the version found (never a silent skip)."""
    binary = Path(find_redis_server())
    version = server_version(binary)
    if not supports_selectors(version):
        pytest.fail(
            f"{binary} is Redis {'.'.join(map(str, version))}: the ACL file uses Redis 7 key selectors "
            "(%R~), so these tests need redis-server >= 7.0 on PATH"
        )
    return str(binary)
