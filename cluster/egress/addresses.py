"""What an address is, without DNS: literal IPs in every spelling a resolver accepts, and why one is blocked.

>>> literal_ip("2130706433"), literal_ip("[fe80::1%eth0]"), literal_ip("example.com")
(IPv4Address('127.0.0.1'), IPv6Address('fe80::1'), None)
>>> blocked_reason(literal_ip("169.254.169.254")), blocked_reason(literal_ip("8.8.8.8"))
('link-local (cloud metadata)', None)
"""

from __future__ import annotations

import re
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

# Every spelling inet_aton() (and so getaddrinfo()) reads as an IPv4 address: 1 to 4 parts, each decimal,
# octal (leading 0) or hex (0x). A name such as "deadbeef" has no 0x prefix and is left to DNS.
_INET_ATON_FORM = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")

# Instance metadata services hand out cloud credentials; they get their own reason so logs stand out.
_METADATA = frozenset({IPv4Address("169.254.169.254"), IPv6Address("fd00:ec2::254")})

_V4_BLOCKS: tuple[tuple[IPv4Network, str], ...] = (
    (IPv4Network("0.0.0.0/8"), "unspecified"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("10.0.0.0/8"), "private"),
    (IPv4Network("172.16.0.0/12"), "private"),
    (IPv4Network("192.168.0.0/16"), "private"),
    (IPv4Network("100.64.0.0/10"), "private"),  # carrier-grade NAT shared space: someone's inside network
    (IPv4Network("169.254.0.0/16"), "link-local"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
)
_V6_BLOCKS: tuple[tuple[IPv6Network, str], ...] = (
    (IPv6Network("::/128"), "unspecified"),
    (IPv6Network("::1/128"), "loopback"),
    (IPv6Network("fc00::/7"), "private"),
    (IPv6Network("fe80::/10"), "link-local"),
    (IPv6Network("fec0::/10"), "site-local"),  # deprecated, yet ipaddress still calls it global
    (IPv6Network("ff00::/8"), "multicast"),
)
_NAT64 = IPv6Network("64:ff9b::/96")


def literal_ip(host: str) -> IPAddress | None:
    """The IP address a URL host denotes without any DNS lookup, or None for a host name.

    Brackets, an IPv6 zone id (`%eth0`, `%25eth0`) and one trailing dot are ignored.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        try:
            return IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    text = text.removesuffix(".")
    if not _INET_ATON_FORM.fullmatch(text):
        return None
    try:
        return IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def _embedded_ipv4(ip: IPv6Address) -> tuple[str, list[IPv4Address]] | None:
    """The IPv4 addresses a transition-mechanism IPv6 address will actually reach."""
    if ip.sixtofour is not None:
        return "6to4", [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo
        return "teredo", [client, server]
    if ip in _NAT64:
        return "nat64", [IPv4Address(int(ip) & 0xFFFFFFFF)]
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """None when `ip` is a public address; otherwise a short reason such as "loopback" or "private"."""
    if ip in _METADATA:
        return "link-local (cloud metadata)"
    if isinstance(ip, IPv6Address):
        # Refused whatever it embeds: dual-stack sockets turn ::ffff:a.b.c.d into an IPv4 connection.
        if ip.ipv4_mapped is not None:
            return "ipv4-mapped"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            kind, inner = embedded
            for address in inner:
                reason = blocked_reason(address)
                if reason is not None:
                    return f"{kind} embedding {reason}"
            if kind == "nat64":
                return None  # DNS64 spelling of a public IPv4 address: ipaddress calls the prefix reserved
        blocks: tuple[tuple[IPv4Network | IPv6Network, str], ...] = _V6_BLOCKS
    else:
        blocks = _V4_BLOCKS
    for network, reason in blocks:
        if ip in network:
            return reason
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not global"
    return None
