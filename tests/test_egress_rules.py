"""Parsing FLOWFLEET_EGRESS_ALLOW and the allow/refuse decisions (cluster.egress.rules)."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest

from cluster.egress.rules import (
    DEFAULT_EGRESS_ALLOW,
    EgressConfigError,
    EgressRules,
    NamePattern,
    NetworkPattern,
)


def ip(text: str) -> IPv4Address | IPv6Address:
    return ip_address(text)


def test_default_is_public_only() -> None:
    rules = EgressRules.parse(DEFAULT_EGRESS_ALLOW)
    assert rules == EgressRules(public=True)
    assert rules.describe() == "public"


@pytest.mark.parametrize(
    ("token", "pattern"),
    [
        ("api.internal", NamePattern("api.internal")),
        ("API.Internal.:8000", NamePattern("api.internal", 8000)),
        ("localhost", NamePattern("localhost")),
        ("svc_a.ns.svc.cluster.local", NamePattern("svc_a.ns.svc.cluster.local")),
        ("*.example.com", NamePattern("example.com", None, wildcard=True)),
        ("*.example.com:443", NamePattern("example.com", 443, wildcard=True)),
        ("10.1.2.3", NetworkPattern(ip_network("10.1.2.3/32"))),
        ("10.1.2.3:8000", NetworkPattern(ip_network("10.1.2.3/32"), 8000)),
        ("[fd00::1]", NetworkPattern(ip_network("fd00::1/128"))),
        ("[fd00::1]:8443", NetworkPattern(ip_network("fd00::1/128"), 8443)),
        ("fd00::1", NetworkPattern(ip_network("fd00::1/128"))),
        ("10.0.0.0/8", NetworkPattern(ip_network("10.0.0.0/8"))),
        ("10.0.0.0/8:8000", NetworkPattern(ip_network("10.0.0.0/8"), 8000)),
        ("[fd00::/8]:443", NetworkPattern(ip_network("fd00::/8"), 443)),
        ("fd00::/8", NetworkPattern(ip_network("fd00::/8"))),
    ],
)
def test_pattern_forms(token: str, pattern: NamePattern | NetworkPattern) -> None:
    rules = EgressRules.parse(token)
    assert not rules.public
    assert (*rules.names, *rules.networks) == (pattern,)


def test_separators_order_and_describe() -> None:
    text = (
        " public,api.internal:8000\n10.0.0.0/8 ,, *.corp.example  [fd00::/8]:443,10.1.2.3:80 fd00::5 public"
    )
    rules = EgressRules.parse(text)
    assert rules.public
    assert rules.describe() == (
        "public, api.internal:8000, *.corp.example, 10.0.0.0/8, [fd00::/8]:443, 10.1.2.3:80, fd00::5"
    )
    # describe() reads back as the same rules
    assert EgressRules.parse(rules.describe()) == rules


def test_empty_text_allows_nothing() -> None:
    rules = EgressRules.parse("  ")
    assert rules == EgressRules()
    assert rules.describe() == "nothing"
    assert rules.check_url("https://example.com/") == "example.com:443 is not in FLOWFLEET_EGRESS_ALLOW"
    assert rules.decide("example.com", 443, ip("93.184.216.34")) == (
        "example.com:443 is not in FLOWFLEET_EGRESS_ALLOW"
    )


@pytest.mark.parametrize(
    "token",
    [
        "*",
        "*.",
        "*foo.com",
        "foo.*.com",
        "http://example.com",
        "example.com/path",
        "10.0.0.0/33",
        "10.0.0.1/8",  # host bits set: almost always a typo
        "[10.0.0.1]",
        "[fd00::1",
        "fd00::zz",
        "[fe80::1%eth0]",
        "host:0",
        "host:65536",
        "host:abc",
        "host:",
        "a..b",
        "-a.example",
        "bad_name!",
        "exämple.com",
        "Public:443",
    ],
)
def test_bad_patterns_are_refused_by_name(token: str) -> None:
    with pytest.raises(EgressConfigError, match=re.escape(repr(token))) as caught:
        EgressRules.parse(f"public, {token}")
    assert isinstance(caught.value, ValueError)


def test_endpoints_are_allowed_as_host_and_port() -> None:
    rules = EgressRules.parse(
        "", endpoints=["http://10.0.0.5:4000/v1", "https://LLM.internal/v1", "", "http://[fd00::5]/"]
    )
    assert rules.describe() == "llm.internal:443, 10.0.0.5:4000, [fd00::5]:80"
    assert rules.check_url("http://10.0.0.5:4000/v1/chat/completions") is None
    assert rules.check_url("http://10.0.0.5:4001/") == "10.0.0.5 is private"
    assert rules.check_url("https://llm.internal/v1") is None
    assert (
        rules.check_url("http://llm.internal:8080/v1") == "llm.internal:8080 is not in FLOWFLEET_EGRESS_ALLOW"
    )
    assert rules.decide("llm.internal", 443, ip("10.9.9.9")) is None
    assert rules.decide("[fd00::5]", 80, ip("fd00::5")) is None
    assert rules.decide("example.com", 443, ip("93.184.216.34")) is not None


@pytest.mark.parametrize("url", ["ftp://x/", "not a url", "http://:80/", "http://x:99999/"])
def test_bad_endpoints_are_refused_by_name(url: str) -> None:
    with pytest.raises(EgressConfigError, match=re.escape(repr(url))):
        EgressRules.parse("public", endpoints=[url])


def test_a_name_pattern_trusts_what_the_name_resolves_to() -> None:
    rules = EgressRules.parse("localhost:8000")
    assert rules.decide("localhost", 8000, ip("127.0.0.1")) is None
    assert rules.decide("LOCALHOST.", 8000, ip("::1")) is None
    assert rules.decide("localhost", 8001, ip("127.0.0.1")) == "127.0.0.1 is loopback"
    # ...but the name does not make its address reachable by any other name, or literally
    assert rules.decide("evil.example", 8000, ip("127.0.0.1")) == "127.0.0.1 is loopback"
    assert rules.check_url("http://127.0.0.1:8000/") == "127.0.0.1 is loopback"


def test_wildcards_match_subdomains_not_the_apex() -> None:
    rules = EgressRules.parse("*.example.com")
    loopback = ip("127.0.0.1")
    assert rules.decide("a.example.com", 80, loopback) is None
    assert rules.decide("A.B.Example.COM.", 443, loopback) is None
    assert rules.decide("example.com", 80, loopback) == "127.0.0.1 is loopback"
    assert rules.decide("badexample.com", 80, loopback) == "127.0.0.1 is loopback"


def test_networks_allow_private_addresses_on_their_port() -> None:
    rules = EgressRules.parse("10.0.0.0/8:8000, [fd00::/8]")
    assert rules.decide("svc.internal", 8000, ip("10.2.3.4")) is None
    assert rules.decide("svc.internal", 80, ip("10.2.3.4")) == "10.2.3.4 is private"
    assert rules.decide("svc.internal", 1234, ip("fd00::7")) is None
    assert (
        rules.decide("svc.internal", 8000, ip("11.0.0.1"))
        == "svc.internal:8000 is not in FLOWFLEET_EGRESS_ALLOW"
    )
    # an IPv4 block never covers the IPv4-mapped spelling
    assert EgressRules.parse("127.0.0.0/8").decide("x", 80, ip("::ffff:127.0.0.1")) == (
        "::ffff:7f00:1 is ipv4-mapped"
    )


def test_public_allows_only_public_addresses() -> None:
    rules = EgressRules.parse("public")
    assert rules.decide("example.com", 443, ip("93.184.216.34")) is None
    assert rules.decide("evil.example", 80, ip("169.254.169.254")) == (
        "169.254.169.254 is link-local (cloud metadata)"
    )
    assert rules.decide("evil.example", 80, ip("10.0.0.1")) == "10.0.0.1 is private"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://2130706433/", "127.0.0.1 is loopback"),
        ("http://0x7f000001/", "127.0.0.1 is loopback"),
        ("http://0177.0.0.1/", "127.0.0.1 is loopback"),
        ("http://127.1:8080/", "127.0.0.1 is loopback"),
        ("http://[::1]/", "::1 is loopback"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1 is ipv4-mapped"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local (cloud metadata)"),
        ("http://10.0.0.1/", "10.0.0.1 is private"),
        ("http://[fe80::1%25eth0]/", "fe80::1 is link-local"),
        ("http://0.0.0.0:8000/", "0.0.0.0 is unspecified"),
        ("ftp://example.com/", "scheme 'ftp' is not allowed (http and https only)"),
        ("file:///etc/passwd", "scheme 'file' is not allowed (http and https only)"),
        ("unix:///var/run/docker.sock", "scheme 'unix' is not allowed (http and https only)"),
        ("//example.com/", "the URL has no scheme"),
        ("http:///path", "the URL has no host"),
        ("http://user:pass@example.com/", "credentials in the URL are not allowed"),
        ("http://user@example.com/", "credentials in the URL are not allowed"),
        ("http://example.com:99999/", "invalid URL"),
        ("http://[::1/", "invalid URL"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    assert EgressRules.parse("public").check_url(url) == reason


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/v1",
        "HTTP://Example.COM./",
        "http://8.8.8.8/",
        "http://[2001:4860:4860::8888]:8443/",
    ],
)
def test_check_url_accepts_public(url: str) -> None:
    assert EgressRules.parse("public").check_url(url) is None


def test_check_url_for_names_without_public() -> None:
    assert EgressRules.parse("api.internal:8000").check_url("http://api.internal:8000/") is None
    assert EgressRules.parse("api.internal:8000").check_url("http://api.internal:8001/") is not None
    assert EgressRules.parse("api.internal:8000").check_url("http://other.internal:8000/") is not None
    # a name might resolve into a listed block on that port: only the connect-time check can tell
    assert EgressRules.parse("10.0.0.0/8").check_url("http://anything.internal/") is None
    assert EgressRules.parse("10.0.0.0/8:8000").check_url("http://anything.internal:8000/") is None
    assert EgressRules.parse("10.0.0.0/8:8000").check_url("http://anything.internal/") == (
        "anything.internal:80 is not in FLOWFLEET_EGRESS_ALLOW"
    )


def test_check_target_is_check_url_on_parts() -> None:
    rules = EgressRules.parse("public")
    assert rules.check_target("https", "example.com", None) is None
    assert rules.check_target("http", "2130706433", 80) == "127.0.0.1 is loopback"
    assert (
        rules.check_target("http", "example.com", 80, userinfo=True)
        == "credentials in the URL are not allowed"
    )
    assert rules.check_target("", "", None) == "the URL has no scheme"
