"""Which Redis deployment `FLOWFLEET_REDIS_URL` names: one node, a Sentinel-managed primary or a Cluster.

Pure parsing, no I/O; `cluster.store.redis_conn.connect` builds the client from what this returns.

    redis://[user:password@]host[:port][/db]                       one node (rediss:// for TLS)
    unix:///path/to/redis.sock[?db=N]                              one node over a Unix socket
    redis+sentinel://[user:password@]h1[:26379],h2,h3/service[/db] the primary Sentinel names `service`
    redis+cluster://[user:password@]h1[:6379],h2[:6379][/]         a Redis Cluster from its seed nodes

`rediss+sentinel://` and `rediss+cluster://` use TLS to every node (and to the sentinels), with the same
`?ssl_ca_certs=/path/ca.crt` options as `rediss://`. The user and password are those of the data nodes;
sentinels with their own users take FLOWFLEET_REDIS_SENTINEL_USERNAME / _PASSWORD.

>>> t = parse("redis+sentinel://control:pw@10.0.0.1,10.0.0.2:26380/mymaster/0")
>>> t.kind, t.nodes, t.service, t.db, t.username
('sentinel', (('10.0.0.1', 26379), ('10.0.0.2', 26380)), 'mymaster', 0, 'control')
>>> describe(parse("redis+cluster://u:secret@h1:7000,h2:7001/"))
'Redis Cluster (seeds h1:7000, h2:7001)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from cluster.settings import SettingsError

Kind = Literal["single", "sentinel", "cluster"]
SINGLE_SCHEMES = ("redis", "rediss", "unix")
HA_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
DEFAULT_PORT: dict[Kind, int] = {"single": 6379, "sentinel": 26379, "cluster": 6379}
# Query options a Sentinel or Cluster URL may carry (TLS only; timeouts are flowfleet's own settings).
TLS_OPTIONS = frozenset(
    {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname", "ssl_ca_path"}
)
USAGE = (
    "use redis://, rediss:// (TLS), unix://, redis+sentinel://[user:pw@]h1:26379,h2/service[/db] or "
    "redis+cluster://[user:pw@]h1:6379,h2:6379/"
)


class InvalidRedisUrl(SettingsError):
    code = "invalid_redis_url"


@dataclass(frozen=True)
class Target:
    """A parsed URL. `nodes` are the sentinels (sentinel) or the seed nodes (cluster); empty for single."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def has_failover(self) -> bool:
        """Sentinel and Cluster promote a replica when a primary dies; a single URL says nothing of it."""
        return self.kind != "single"


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def parse(url: str) -> Target:
    """The deployment `url` names; InvalidRedisUrl (exit code 2) with the URL redacted otherwise."""
    safe = redact(url)
    scheme = url.partition("://")[0].lower() if "://" in url else urlsplit(url).scheme
    if scheme in SINGLE_SCHEMES:
        return Target("single", url, tls=scheme == "rediss")
    if scheme not in HA_SCHEMES:
        raise InvalidRedisUrl(f"unsupported Redis URL scheme {scheme!r} in {safe!r}: {USAGE}")
    kind, tls = HA_SCHEMES[scheme]
    rest, _, query = url[len(scheme) + 3 :].partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    nodes = tuple(_address(item, kind, safe) for item in hostlist.split(",") if item.strip())
    if not nodes:
        raise InvalidRedisUrl(f"Redis URL {safe!r} names no {'sentinel' if kind == 'sentinel' else 'node'}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - TLS_OPTIONS)
    if unknown:
        raise InvalidRedisUrl(f"Redis URL {safe!r}: unknown option(s) {', '.join(unknown)}")
    service, db = _path(path, kind, safe)
    return Target(kind, url, nodes, service, db, username, password, tls, MappingProxyType(options))


def describe(target: Target) -> str:
    """One line for logs and banners, never a password."""
    nodes = ", ".join(f"{host}:{port}" for host, port in target.nodes)
    tls = ", TLS" if target.tls and target.kind != "single" else ""
    if target.kind == "sentinel":
        return f"Sentinel service {target.service} (sentinels {nodes}; db {target.db}{tls})"
    if target.kind == "cluster":
        return f"Redis Cluster (seeds {nodes}{tls})"
    return redact(target.url)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _address(item: str, kind: Kind, safe: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [ipv6]:port
        host, _, port_text = item[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise InvalidRedisUrl(f"Redis URL {safe!r} has an empty host in {item!r}")
    if not port_text:
        return host, DEFAULT_PORT[kind]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidRedisUrl(f"Redis URL {safe!r}: {port_text!r} is not a port")
    return host, int(port_text)


def _path(path: str, kind: Kind, safe: str) -> tuple[str | None, int]:
    parts = [p for p in path.split("/") if p]
    if kind == "cluster":
        if parts not in ([], ["0"]):
            raise InvalidRedisUrl(f"Redis URL {safe!r}: a Redis Cluster has only database 0")
        return None, 0
    if not parts or len(parts) > 2:
        raise InvalidRedisUrl(
            f"Redis URL {safe!r} names no Sentinel service: redis+sentinel://h1:26379,h2/SERVICE[/DB]"
        )
    db = parts[1] if len(parts) == 2 else "0"
    if not db.isdigit():
        raise InvalidRedisUrl(f"Redis URL {safe!r}: the database must be a number, as in /{parts[0]}/0")
    return unquote(parts[0]), int(db)
