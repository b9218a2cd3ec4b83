r"""Renders the Redis ACL template (`compose/redis/users.acl`) into a file redis-server can load.

The template holds the rules of the two users, `worker` and `control`, with placeholders where their
password hashes go: the repository never ships a password or the hash of one. Redis ACL files allow no
comments, so the rules are explained in docs/operations.md.

>>> template = ("user worker on #__WORKER_PASSWORD_SHA256__ %R~flowfleet:*\n"
...             "user control on #__CONTROL_PASSWORD_SHA256__ ~flowfleet:*\n")
>>> print(render(template, {"worker": "w", "control": "c"}).splitlines()[0][:32])
user worker on #50e721e49c013f00
>>> print(render(template, {"worker": "w", "control": "c"}, selectors=False).split()[4])
~flowfleet:*
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from cluster.errors import FlowfleetError

USERS = ("worker", "control")
# The data nodes' users of a Sentinel or Cluster deployment (compose/redis/ha-users.acl): replicas
# replicating from their primary, sentinels monitoring and reconfiguring the nodes.
HA_USERS = ("replication", "sentinel")
PLACEHOLDERS = {user: f"__{user.upper()}_PASSWORD_SHA256__" for user in (*USERS, *HA_USERS)}
# Key selectors with explicit permissions (%R~, %W~, %RW~) exist since Redis 7.0.
SELECTOR = re.compile(r"%(?:R|W|RW)~")
LEFTOVER = re.compile(r"__[A-Z_]+_PASSWORD_SHA256__")
# The template sits next to the deployment files, two levels above this package.
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "compose" / "redis" / "users.acl"
HA_TEMPLATE = DEFAULT_TEMPLATE.with_name("ha-users.acl")


class AclError(FlowfleetError):
    """The ACL template or a password cannot produce a loadable ACL file."""

    code = "acl_error"


def password_sha256(password: str) -> str:
    """The `#<hex>` form Redis stores: sha256 of the UTF-8 password (`printf %s PW | sha256sum`)."""
    return hashlib.sha256(password.encode()).hexdigest()


def render(
    template: str, passwords: Mapping[str, str], *, selectors: bool = True, users: tuple[str, ...] = USERS
) -> str:
    """The template with each user's password hash filled in.

    `selectors=False` is for Redis < 7, which knows no read-only key patterns: `%R~pattern` becomes
    `~pattern`, so the worker may then also write flowfleet keys with the commands it is allowed
    (SET, GETEX, ZADD, ZREM, PEXPIRE …). Replicas still verify every blob's hash, but the separation is
    weaker; callers warn.
    """
    text = template
    for user in users:
        placeholder = PLACEHOLDERS[user]
        password = passwords.get(user, "")
        if not password:
            raise AclError(f"no password for Redis user {user!r}", user=user)
        if any(c.isspace() for c in password):
            raise AclError(f"the password of Redis user {user!r} contains whitespace", user=user)
        if placeholder not in text:
            raise AclError(f"the ACL template has no {placeholder} for user {user!r}", user=user)
        text = text.replace(placeholder, password_sha256(password))
    leftover = LEFTOVER.search(text)
    if leftover:
        raise AclError(f"the ACL template has an unknown placeholder {leftover.group()}")
    if not selectors:
        text = SELECTOR.sub("~", text)
    return text


def render_file(template_path: Path, target: Path, passwords: Mapping[str, str], *, selectors: bool) -> Path:
    """Render `template_path` to `target` (mode 0600: it holds password hashes)."""
    try:
        template = template_path.read_text(encoding="utf-8")
    except OSError as e:
        raise AclError(f"cannot read the ACL template {template_path}: {e.strerror}") from e
    text = render(template, passwords, selectors=selectors)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(mode=0o600, exist_ok=True)
    target.chmod(0o600)
    target.write_text(text, encoding="utf-8")
    return target


def redis_url(host: str, port: int, user: str, password: str, db: int = 0) -> str:
    """A redis:// URL logging in as `user` (the password is percent-encoded)."""
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{db}"
