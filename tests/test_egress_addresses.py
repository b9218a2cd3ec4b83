"""Literal IP spellings and the reasons an address is blocked (cluster.egress.addresses)."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.egress.addresses import blocked_reason, literal_ip


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0xdeadbeef", "222.173.190.239"),
        ("169.254.169.254", "169.254.169.254"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("fe80::1%25eth0", "fe80::1"),
        ("[FC00::1]", "fc00::1"),
    ],
)
def test_literal_ip_reads_every_spelling_a_resolver_would(host: str, expected: str) -> None:
    assert literal_ip(host) == ip_address(expected)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1"])
def test_inet_aton_forms_agree_with_the_os(host: str) -> None:
    # The point of reading these forms: the OS resolver would dial exactly this address.
    assert literal_ip(host) == IPv4Address(socket.inet_aton(host))


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "deadbeef",
        "localhost",
        "127.0.0.1.nip.io",
        "4294967296",  # one past 255.255.255.255
        "1.2.3.4.5",
        "0x",
        "[not-an-ip]",
        "::not:an:ip",
        "",
    ],
)
def test_names_and_garbage_are_not_literal(host: str) -> None:
    assert literal_ip(host) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("fd00:ec2::254", "link-local (cloud metadata)"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "ipv4-mapped"),
        ("::ffff:8.8.8.8", "ipv4-mapped"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("fec0::1", "site-local"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::a00:1", "reserved"),  # IPv4-compatible ::10.0.0.1
        ("192.0.2.1", "not global"),
        ("198.18.0.1", "not global"),
        ("2001:db8::1", "not global"),
        ("2002:7f00:1::", "6to4 embedding loopback"),
        ("2002:a00:1::", "6to4 embedding private"),
        ("64:ff9b::a9fe:a9fe", "nat64 embedding link-local (cloud metadata)"),
        ("64:ff9b::7f00:1", "nat64 embedding loopback"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "teredo embedding private"),  # client 10.0.0.1
    ],
)
def test_blocked_reason(address: str, reason: str) -> None:
    assert blocked_reason(ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "2002:808:808::", "64:ff9b::808:808"],
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ip_address(address)) is None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_passing_ipv4_address_is_global(value: int) -> None:
    ip = IPv4Address(value)
    if blocked_reason(ip) is None:
        assert ip.is_global
        assert not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast)


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_every_passing_ipv6_address_is_global_or_public_nat64(value: int) -> None:
    ip = IPv6Address(value)
    if blocked_reason(ip) is None:
        assert ip.ipv4_mapped is None
        assert ip.is_global or (
            value >> 32 == 0x64FF9B << 64 and blocked_reason(IPv4Address(value & 0xFFFFFFFF)) is None
        )
