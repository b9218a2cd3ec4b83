"""The operator's FLOWFLEET_EGRESS_ALLOW list, parsed once, and the allow/refuse decision for one address.

>>> rules = EgressRules.parse("public, api.internal:8000, 10.0.0.0/8")
>>> rules.decide("api.internal", 8000, literal_ip("127.0.0.1")) is None  # the operator trusts the name
True
>>> rules.decide("evil.example", 80, literal_ip("127.0.0.1"))
'127.0.0.1 is loopback'
>>> rules.check_url("http://2130706433/")
'127.0.0.1 is loopback'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from urllib.parse import urlsplit

from cluster.egress.addresses import IPAddress, blocked_reason, literal_ip

ENV_VAR = "FLOWFLEET_EGRESS_ALLOW"
DEFAULT_EGRESS_ALLOW = "public"
DEFAULT_PORTS = {"http": 80, "https": 443}

_SEPARATORS = re.compile(r"[,\s]+")
_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class EgressConfigError(ValueError):
    """FLOWFLEET_EGRESS_ALLOW, or a configured endpoint URL, holds something that is not a pattern."""


@dataclass(frozen=True)
class NamePattern:
    """An exact DNS name, or with `wildcard` any name below it (not the name itself); any port if None."""

    name: str
    port: int | None = None
    wildcard: bool = False

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return host.endswith("." + self.name) if self.wildcard else host == self.name

    def __str__(self) -> str:
        text = f"*.{self.name}" if self.wildcard else self.name
        return text if self.port is None else f"{text}:{self.port}"


@dataclass(frozen=True)
class NetworkPattern:
    """An IP address or CIDR block; any port if None."""

    network: IPv4Network | IPv6Network
    port: int | None = None

    def matches(self, ip: IPAddress, port: int) -> bool:
        return (self.port is None or self.port == port) and ip in self.network

    def __str__(self) -> str:
        net = self.network
        text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if self.port is None:
            return text
        return f"[{text}]:{self.port}" if net.version == 6 else f"{text}:{self.port}"


@dataclass(frozen=True)
class EgressRules:
    """Which (host, port, address) triples outbound calls may use; build it with `parse`."""

    public: bool = False
    names: tuple[NamePattern, ...] = ()
    networks: tuple[NetworkPattern, ...] = ()

    @classmethod
    def parse(cls, text: str, endpoints: Iterable[str] = ()) -> EgressRules:
        """Parse comma/space separated patterns; `endpoints` are operator base URLs, allowed as host:port.

        Empty `text` allows nothing but the endpoints. Raises EgressConfigError naming a bad pattern.
        """
        public = False
        names: list[NamePattern] = []
        networks: list[NetworkPattern] = []
        patterns = [_parse_pattern(token) for token in _SEPARATORS.split(text) if token]
        patterns += [_endpoint_pattern(url) for url in endpoints if url.strip()]
        for pattern in patterns:
            if pattern is None:
                public = True
            elif isinstance(pattern, NamePattern):
                names.append(pattern)
            else:
                networks.append(pattern)
        return cls(public, tuple(dict.fromkeys(names)), tuple(dict.fromkeys(networks)))

    def decide(self, host: str, port: int, ip: IPAddress) -> str | None:
        """None when connecting to `ip` on `port` for URL host `host` is allowed, else why not.

        A matching name pattern wins (the operator trusts what that name resolves to), then IP/CIDR
        patterns, then `public` for addresses `blocked_reason` has nothing against.
        """
        name = normal_host(host)
        if any(pattern.matches(name, port) for pattern in self.names):
            return None
        if any(pattern.matches(ip, port) for pattern in self.networks):
            return None
        reason = blocked_reason(ip)
        if reason is not None:
            return f"{ip} is {reason}"
        return None if self.public else f"{_host_port(name, port)} is not in {ENV_VAR}"

    def check_url(self, url: str) -> str | None:
        """The check possible without DNS: None if `url` may be allowed at connect time, else why not.

        Scheme http/https, a host, no credentials. A literal IP host (in any spelling, `2130706433`
        included) is decided now. A DNS name passes when `public` is listed, a name pattern matches it,
        or an IP/CIDR pattern for its port exists that it might resolve into; the connect-time check
        of every resolved address is what actually enforces the policy.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return "invalid URL"
        return self.check_target(parts.scheme, parts.hostname or "", port, userinfo="@" in parts.netloc)

    def check_target(self, scheme: str, host: str, port: int | None, *, userinfo: bool = False) -> str | None:
        """`check_url` on a URL already split, so the HTTP client's own parse is the one checked."""
        scheme = scheme.lower()
        if scheme not in DEFAULT_PORTS:
            return (
                f"scheme {scheme!r} is not allowed (http and https only)"
                if scheme
                else "the URL has no scheme"
            )
        if userinfo:
            return "credentials in the URL are not allowed"
        if not host:
            return "the URL has no host"
        port = DEFAULT_PORTS[scheme] if port is None else port
        ip = literal_ip(host)
        if ip is not None:
            return self.decide(host, port, ip)
        name = normal_host(host)
        if self.public or any(pattern.matches(name, port) for pattern in self.names):
            return None
        if any(pattern.port in (None, port) for pattern in self.networks):
            return None
        return f"{_host_port(name, port)} is not in {ENV_VAR}"

    def describe(self) -> str:
        """One line for logs and banners, e.g. "public, api.internal:8000, 10.0.0.0/8"."""
        parts = (["public"] if self.public else []) + [str(p) for p in (*self.names, *self.networks)]
        return ", ".join(parts) or "nothing"


def normal_host(host: str) -> str:
    """The form URL hosts are compared in: lower case, no brackets, no trailing dot."""
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host.removesuffix(".")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_pattern(token: str) -> NamePattern | NetworkPattern | None:
    """One FLOWFLEET_EGRESS_ALLOW entry; None stands for `public`."""
    text = token.lower()
    if text == "public":
        return None
    if text.count(":") > 1 and not text.startswith("["):
        return NetworkPattern(_network(text, token))  # a bare IPv6 address or block leaves no room for a port
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise EgressConfigError(f"bad egress pattern {token!r}: expected host, IP or CIDR, then :port")
    host = match["host"]
    port = _port(match["port"], token)
    if host.startswith("["):
        network = _network(host[1:-1], token)
        if network.version != 6:
            raise EgressConfigError(f"bad egress pattern {token!r}: brackets are for IPv6 addresses only")
        return NetworkPattern(network, port)
    if host == "public":
        raise EgressConfigError(f"bad egress pattern {token!r}: 'public' takes no port")
    if "/" in host:
        return NetworkPattern(_network(host, token), port)
    ip = literal_ip(host)
    if ip is not None:
        return NetworkPattern(ip_network(ip), port)
    wildcard = host.startswith("*.")
    return NamePattern(_dns_name(host[2:] if wildcard else host, token), port, wildcard)


def _endpoint_pattern(url: str) -> NamePattern | NetworkPattern:
    """The host:port of an operator-configured base URL, allowed as if listed."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise EgressConfigError(f"bad endpoint URL {url!r}: {e}") from e
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise EgressConfigError(f"bad endpoint URL {url!r}: expected http(s)://host[:port]")
    port = DEFAULT_PORTS[scheme] if port is None else port
    ip = literal_ip(parts.hostname)
    if ip is not None:
        return NetworkPattern(ip_network(ip), port)
    return NamePattern(_dns_name(parts.hostname, url), port)


def _network(text: str, token: str) -> IPv4Network | IPv6Network:
    if "%" in text:
        raise EgressConfigError(f"bad egress pattern {token!r}: zone ids are not supported")
    try:
        return ip_network(text)
    except ValueError as e:
        raise EgressConfigError(f"bad egress pattern {token!r}: {e}") from e


def _port(text: str | None, token: str) -> int | None:
    if text is None:
        return None
    port = int(text)
    if not 0 < port < 65536:
        raise EgressConfigError(f"bad egress pattern {token!r}: port {port} is out of range")
    return port


def _dns_name(name: str, token: str) -> str:
    name = name.lower().removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise EgressConfigError(
            f"bad egress pattern {token!r}: not a host name (ASCII/punycode), *.domain, IP, CIDR or 'public'"
        )
    return name
