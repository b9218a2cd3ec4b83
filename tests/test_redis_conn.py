"""Redis URLs: redis://, rediss:// (TLS, against a real TLS redis-server) and unix://, and clear errors.

tests/tls holds a throwaway CA and a server certificate for 127.0.0.1 valid until 2126; they protect
nothing and exist only so this test needs no openssl at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection

from cluster.store.redis_conn import InvalidRedisUrl, connect, redact
from tests.redis_server import RedisServer, free_port

TLS = Path(__file__).parent / "tls"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://cache:6379/0", "unsupported Redis URL scheme 'http'"),
        ("cache:6379", "unsupported Redis URL scheme"),
        ("", "unsupported Redis URL scheme ''"),
        ("redis://cache:port/0", "invalid Redis URL"),
        ("redis:///0", "names no host"),
        ("redis://cache:6379/zero", "must be a database number"),
        ("unix://", "names no socket path"),
        ("redis://cache:6379/0?socket_timeout=soon", "socket_timeout"),
        ("redis://cache:6379/0?colour=blue", "colour"),
        ("rediss://cache:6379/0?ssl_cert_reqs=sometimes", "sometimes"),
    ],
)
def test_bad_urls_fail_at_once_with_a_clear_error(url: str, fragment: str) -> None:
    with pytest.raises(InvalidRedisUrl) as caught:
        connect(url)
    assert fragment in str(caught.value)
    assert caught.value.exit_code == 2


def test_passwords_never_appear_in_errors() -> None:
    with pytest.raises(InvalidRedisUrl) as caught:
        connect("redis://admin:hunter2@cache:6379/zero")
    assert "hunter2" not in str(caught.value) and "admin:***@cache:6379" in str(caught.value)
    assert redact("rediss://:s3cret@cache:6380/0") == "rediss://:***@cache:6380/0"
    assert redact("redis://cache:6379/0") == "redis://cache:6379/0"


async def test_plain_tcp_with_timeouts(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, connect_timeout=2.0, socket_timeout=3.0, client_name="fftest")
    try:
        assert await client.ping()
        assert await client.client_getname() in ("fftest", b"fftest")
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (2.0, 3.0)
    finally:
        await client.aclose()


async def test_unix_socket(make_redis_server: Callable[..., RedisServer], tmp_path: Path) -> None:
    sock = str(tmp_path / "r.sock")
    assert len(sock) < 100  # the limit of a unix socket path
    make_redis_server("--unixsocket", sock, "--unixsocketperm", "700")
    client = connect(f"unix://{sock}?db=3")
    try:
        await client.set("fftest-unix", b"1")
        assert await client.get("fftest-unix") == b"1"
        assert client.connection_pool.connection_kwargs["db"] == 3
    finally:
        await client.aclose()


async def test_tls(make_redis_server: Callable[..., RedisServer]) -> None:
    tls_port = free_port()
    make_redis_server(
        "--tls-port", str(tls_port), "--tls-cert-file", str(TLS / "server.crt"),
        "--tls-key-file", str(TLS / "server.key"), "--tls-ca-cert-file", str(TLS / "ca.crt"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    client = connect(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={TLS / 'ca.crt'}")
    try:
        assert client.connection_pool.connection_class is SSLConnection
        assert await client.ping()
    finally:
        await client.aclose()
    # Without the CA, the server certificate is not trusted: TLS really is verified.
    untrusting = connect(f"rediss://127.0.0.1:{tls_port}/0")
    try:
        with pytest.raises(Exception, match="(?i)certificate"):
            await untrusting.ping()
    finally:
        await untrusting.aclose()
