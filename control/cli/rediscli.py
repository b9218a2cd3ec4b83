"""`flowfleet redis-cli [--state-dir DIR] [--] [ARGS...]`: redis-cli on flowfleet's Redis, logged in.

    flowfleet redis-cli HGETALL 'flowfleet:{support_qa}:release'
    flowfleet redis-cli --scan --pattern 'flowfleet:*'
    flowfleet redis-cli                      # interactive

Which Redis: the local fleet's when its state directory exists (default ./.flowfleet: the address
`flowfleet up` recorded, the `control` user, the password from `redis-control-password`), otherwise
the one FLOWFLEET_REDIS_URL names, as the user it names. Never a default localhost:6379: a bare
`redis-cli` there reads whatever unrelated Redis happens to run. The password reaches redis-cli
through its environment (REDISCLI_AUTH), never its command line, where `ps` would show it. A
`redis+cluster://` URL opens its first seed node with `-c` (redis-cli follows MOVED), a
`redis+sentinel://` URL the primary the sentinels name now; `up --redis-url` keeps its URL for this.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import RedisError
from redis.sentinel import Sentinel

from cluster.errors import FlowfleetError
from cluster.store import topology
from control.localcluster import credentials, external, redis_server, runstate

DEFAULT_STATE_DIR = Path(".flowfleet")
DEFAULT_ADDRESS = ("127.0.0.1", 6380)  # `flowfleet up`'s defaults, for a state directory without up.json


class NoRedis(FlowfleetError):
    """Neither a local fleet nor FLOWFLEET_REDIS_URL says which Redis to open."""

    code = "no_redis"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str | None
    password: str | None
    source: str
    db: int = 0
    tls: bool = False
    cacert: str | None = None
    state_dir: Path | None = None  # the local fleet's
    cluster: bool = False  # redis-cli -c: follow the Cluster's redirections


def local_target(state_dir: Path) -> Target | None:
    """The local fleet's Redis as the control user, if `state_dir` holds a fleet's secrets (or the Redis
    its `up --redis-url` runs against, as the user the URL names)."""
    url = external.remembered(state_dir)
    if url is not None:
        found = url_target(url, os.environ, source=f"the local fleet in {state_dir} (--redis-url)")
        return dataclass_replace(found, state_dir=state_dir)
    password_file = credentials.path_of(state_dir, "control_password")
    if not password_file.is_file():
        return None
    status = runstate.read_status(state_dir)
    host, port = (status.redis_host, status.redis_port) if status else DEFAULT_ADDRESS
    password = password_file.read_text(encoding="utf-8").strip()
    return Target(host, port, "control", password, f"the local fleet in {state_dir}", state_dir=state_dir)


def url_target(
    url: str, environ: Mapping[str, str] | None = None, source: str = "FLOWFLEET_REDIS_URL"
) -> Target:
    """`redis[s]://[user[:password]@]host[:port][/db][?ssl_ca_certs=path]`, as the replicas read it; a
    Cluster URL opens its first seed node with `-c`, a Sentinel URL the primary the sentinels name."""
    if url.partition("://")[0].lower() in topology.HA_SCHEMES:
        try:
            found = topology.parse(url)
        except topology.InvalidRedisUrl as e:
            raise NoRedis(str(e)) from e
        host, port = found.nodes[0] if found.kind == "cluster" else _primary(found, environ or {})
        return Target(
            host, port, found.username, found.password, source, db=found.db, tls=found.tls,
            cacert=found.options.get("ssl_ca_certs"), cluster=found.kind == "cluster",
        )  # fmt: skip
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise NoRedis(f"FLOWFLEET_REDIS_URL must be a redis:// or rediss:// URL, not {parts.scheme}://")
    try:
        db = int(parts.path.lstrip("/") or 0)
    except ValueError as e:
        raise NoRedis(f"FLOWFLEET_REDIS_URL names no database number: {parts.path!r}") from e
    cacert = parse_qs(parts.query).get("ssl_ca_certs", [None])[0]
    return Target(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        source=source,
        db=db,
        tls=parts.scheme == "rediss",
        cacert=cacert,
    )


def resolve(state_dir: Path | None, environ: Mapping[str, str]) -> Target:
    """An explicit state directory must hold a fleet; the default one is used when it does."""
    local = local_target((state_dir or DEFAULT_STATE_DIR).resolve())
    if local is not None:
        return local
    if state_dir is not None:
        raise NoRedis(f"{state_dir} holds no local fleet (no {credentials.FILES['control_password']})")
    url = environ.get("FLOWFLEET_REDIS_URL")
    if not url:
        raise NoRedis(
            f"no local fleet in ./{DEFAULT_STATE_DIR} and FLOWFLEET_REDIS_URL is not set: run it where "
            "you ran `flowfleet up` (or pass --state-dir), or set FLOWFLEET_REDIS_URL"
        )
    return url_target(url, environ)


def _primary(found: topology.Target, environ: Mapping[str, str]) -> tuple[str, int]:
    """The primary the sentinels name now (FLOWFLEET_REDIS_SENTINEL_USERNAME / _PASSWORD, if set)."""
    auth = {
        "username": environ.get("FLOWFLEET_REDIS_SENTINEL_USERNAME") or None,
        "password": environ.get("FLOWFLEET_REDIS_SENTINEL_PASSWORD") or None,
    }
    tls = {"ssl": True, "ssl_ca_certs": found.options.get("ssl_ca_certs")} if found.tls else {}
    sentinels = Sentinel(list(found.nodes), sentinel_kwargs={"socket_timeout": 1.0, **auth, **tls})
    try:
        host, port = sentinels.discover_master(str(found.service))
    except RedisError as e:
        raise NoRedis(f"no primary for Sentinel service {found.service!r}: {e}") from e
    return str(host), int(port)


def command(
    binary: Path, target: Target, args: Sequence[str], environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """redis-cli's argv and environment: connection options first, then the user's arguments."""
    argv = [str(binary), "-h", target.host, "-p", str(target.port)]
    if target.user:
        argv += ["--user", target.user]
    if target.db:
        argv += ["-n", str(target.db)]
    if target.cluster:
        argv.append("-c")
    if target.tls:
        argv += ["--tls", *(["--cacert", target.cacert] if target.cacert else [])]
    env = {k: v for k, v in environ.items() if k != "REDISCLI_AUTH"}
    if target.password:
        env["REDISCLI_AUTH"] = target.password
    return [*argv, *args], env


def split_args(args: Sequence[str]) -> tuple[Path | None, list[str]]:
    """Our one option (`--state-dir DIR`, first), then `--` optionally, then redis-cli's arguments."""
    rest = list(args)
    state_dir = None
    if rest and rest[0].startswith("--state-dir="):
        state_dir = Path(rest.pop(0).partition("=")[2])
    elif rest[:1] == ["--state-dir"] and len(rest) > 1:
        state_dir = Path(rest[1])
        del rest[:2]
    if rest[:1] == ["--"]:
        del rest[0]
    return state_dir, rest


def register(subparsers: Any) -> None:
    # No option of ours may swallow redis-cli's (`--scan`, `-n`, `--raw`): the parser sees none at all.
    parser = subparsers.add_parser(
        "redis-cli",
        help="redis-cli on the local fleet's Redis (or FLOWFLEET_REDIS_URL's), logged in",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        prefix_chars="+",
        add_help=False,
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="redis-cli's arguments")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    if args.args in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    state_dir, rest = split_args(args.args)
    target = resolve(state_dir, os.environ)
    if target.state_dir is not None and not runstate.is_running(target.state_dir):
        print(
            f"flowfleet: no flowfleet up is running on {target.state_dir}; trying its Redis", file=sys.stderr
        )
    argv, env = command(redis_server.find_redis_cli(), target, rest, os.environ)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)  # replaces this process: signals and the terminal go to redis-cli
