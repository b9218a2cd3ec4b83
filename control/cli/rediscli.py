"""`flowfleet redis-cli [--state-dir DIR] [--] [ARGS...]`: redis-cli on flowfleet's Redis, logged in.

    flowfleet redis-cli HGETALL 'flowfleet:{support_qa}:release'
    flowfleet redis-cli --scan --pattern 'flowfleet:*'
    flowfleet redis-cli                      # interactive

Which Redis: the local fleet's when its state directory exists (default ./.flowfleet: the address
`flowfleet up` recorded, the `control` user, the password from `redis-control-password`), otherwise
the one FLOWFLEET_REDIS_URL names, as the user it names. Never a default localhost:6379: a bare
`redis-cli` there reads whatever unrelated Redis happens to run. The password reaches redis-cli
through its environment (REDISCLI_AUTH), never its command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cluster.errors import FlowfleetError
from control.localcluster import credentials, redis_server, runstate

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


def local_target(state_dir: Path) -> Target | None:
    """The local fleet's Redis as the control user, if `state_dir` holds a fleet's secrets."""
    password_file = credentials.path_of(state_dir, "control_password")
    if not password_file.is_file():
        return None
    status = runstate.read_status(state_dir)
    host, port = (status.redis_host, status.redis_port) if status else DEFAULT_ADDRESS
    password = password_file.read_text(encoding="utf-8").strip()
    return Target(host, port, "control", password, f"the local fleet in {state_dir}", state_dir=state_dir)


def url_target(url: str) -> Target:
    """`redis[s]://[user[:password]@]host[:port][/db][?ssl_ca_certs=path]`, as the replicas read it."""
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
        source="FLOWFLEET_REDIS_URL",
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
    return url_target(url)


def command(
    binary: Path, target: Target, args: Sequence[str], environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """redis-cli's argv and environment: connection options first, then the user's arguments."""
    argv = [str(binary), "-h", target.host, "-p", str(target.port)]
    if target.user:
        argv += ["--user", target.user]
    if target.db:
        argv += ["-n", str(target.db)]
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
