"""Connect-time enforcement (cluster.egress.transport): fake resolvers and backends, real loopback servers.

No test here opens a socket to anything but loopback: refused addresses are caught by backends that fail the
test if they are ever asked to connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from cluster.egress.rules import EgressRules
from cluster.egress.transport import CheckedBackend, EgressDenied, egress_client, system_resolver
from cluster.errors import ComponentError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class FakeResolver:
    """Answers from a script per host (the last answer repeats); records every lookup."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        queue = self.answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]


class FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.written = b""
        self.tls_hostname: str | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written += buffer

    async def aclose(self) -> None:
        pass

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> FakeStream:
        self.tls_hostname = server_hostname
        return self

    def get_extra_info(self, info: str) -> Any:
        return None


class FakeBackend(httpcore.AsyncNetworkBackend):
    """Hands out FakeStreams; fails the test outright when asked to dial anything not `permitted`."""

    def __init__(
        self, permitted: Iterable[str] = (), *, down: Iterable[str] = (), chunks: list[bytes] | None = None
    ) -> None:
        self.permitted = set(permitted)
        self.down = set(down)
        self.chunks = chunks or [OK]
        self.connects: list[tuple[str, int]] = []
        self.streams: list[FakeStream] = []

    async def connect_tcp(
        self, host: str, port: int, timeout: Any = None, local_address: Any = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host not in self.permitted:
            pytest.fail(f"connect_tcp({host!r}, {port}) reached the network backend")
        if host in self.down:
            raise httpcore.ConnectError(f"{host} is down")
        self.streams.append(FakeStream(self.chunks))
        return self.streams[-1]

    async def connect_unix_socket(
        self, path: str, timeout: Any = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        pytest.fail("connect_unix_socket reached the network backend")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class LoopbackBackend(httpcore.AsyncNetworkBackend):
    """The real AnyIO backend limited to loopback: anything else fails the test rather than leave the host."""

    def __init__(self) -> None:
        self.real = httpcore.AnyIOBackend()
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self, host: str, port: int, timeout: Any = None, local_address: Any = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host not in ("127.0.0.1", "::1"):
            pytest.fail(f"connect_tcp({host!r}, {port}) reached the network backend")
        return await self.real.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: Any = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        pytest.fail("connect_unix_socket reached the network backend")

    async def sleep(self, seconds: float) -> None:
        await self.real.sleep(seconds)


def client(
    rules: str, resolver: FakeResolver, backend: httpcore.AsyncNetworkBackend, **kw: Any
) -> httpx.AsyncClient:
    return egress_client(EgressRules.parse(rules), timeout=5, resolver=resolver, backend=backend, **kw)


# --- refused before DNS or any connect --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "http://[fe80::1%25eth0]/",
        "ftp://example.com/",
        "ws://example.com/",
        "file:///etc/passwd",
        "unix:///var/run/docker.sock",
        "http://user:pass@example.com/",
    ],
)
async def test_refused_urls_never_resolve_or_connect(url: str) -> None:
    resolver, backend = FakeResolver({}), FakeBackend()
    async with client("public", resolver, backend) as http:
        with pytest.raises(EgressDenied):
            await http.get(url)
    assert resolver.calls == []
    assert backend.connects == []


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "::ffff:127.0.0.1", "169.254.169.254"])
async def test_backend_decides_literal_hosts_itself_without_dns(host: str) -> None:
    # The second line of defence, whatever URL checks ran before: httpcore hands the host over as written.
    resolver, backend = FakeResolver({}), FakeBackend()
    checked = CheckedBackend(EgressRules.parse("public"), resolver=resolver, backend=backend)
    with pytest.raises(EgressDenied, match="loopback|ipv4-mapped|cloud metadata"):
        await checked.connect_tcp(host, 80)
    assert resolver.calls == []
    assert backend.connects == []


async def test_unix_sockets_are_never_reachable() -> None:
    checked = CheckedBackend(EgressRules.parse("public"), backend=FakeBackend())
    with pytest.raises(EgressDenied, match="unix sockets"):
        await checked.connect_unix_socket("/var/run/docker.sock")


def test_egress_denied_is_a_component_error() -> None:
    error = EgressDenied("::1", 80, "::1 is loopback")
    assert isinstance(error, ComponentError)
    assert error.code == "egress_denied"
    assert str(error) == "outbound request to [::1]:80 refused: ::1 is loopback"
    assert error.details == {"host": "::1", "port": 80, "reason": "::1 is loopback"}


# --- names: every resolved address decided, the checked IP dialled ---------------------------------------


@pytest.mark.parametrize(
    "answer",
    [["10.0.0.1"], ["169.254.169.254"], ["::ffff:127.0.0.1"], ["127.0.0.1", "::1"], ["fd00:ec2::254"], []],
)
async def test_name_resolving_to_refused_addresses(
    answer: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    resolver, backend = FakeResolver({"innocent.example": [answer]}), FakeBackend()
    with caplog.at_level(logging.WARNING, logger="cluster.egress.transport"):
        async with client("public", resolver, backend) as http:
            with pytest.raises(EgressDenied) as caught:
                await http.get("http://innocent.example/")
    assert backend.connects == []
    assert "innocent.example:80" in str(caught.value)
    for address in answer:  # the caller never learns how the name resolved; the log does
        assert address not in str(caught.value)
        assert address in caplog.text


async def test_dns_rebinding_second_answer_is_refused() -> None:
    resolver = FakeResolver({"rebind.example": [["93.184.216.34"], ["10.0.0.1"]]})
    backend = FakeBackend(permitted={"93.184.216.34"})
    async with client("public", resolver, backend) as http:
        first = await http.get("http://rebind.example/")
        assert first.text == "ok"
        with pytest.raises(EgressDenied):
            await http.get("http://rebind.example/")  # OK said "Connection: close", so this dials again
    assert resolver.calls == ["rebind.example", "rebind.example"]
    assert backend.connects == [("93.184.216.34", 80)]


async def test_only_allowed_addresses_of_a_mixed_answer_are_dialled() -> None:
    resolver = FakeResolver({"rebind.example": [["10.0.0.1", "93.184.216.34"]]})
    backend = FakeBackend(permitted={"93.184.216.34"})
    async with client("public", resolver, backend) as http:
        response = await http.get("http://rebind.example/path")
    assert response.status_code == 200
    assert backend.connects == [("93.184.216.34", 80)]
    assert b"Host: rebind.example\r\n" in backend.streams[0].written


async def test_tls_is_verified_against_the_name_not_the_dialled_ip() -> None:
    resolver = FakeResolver({"secure.example": [["93.184.216.34"]]})
    backend = FakeBackend(permitted={"93.184.216.34"})
    async with client("public", resolver, backend) as http:
        await http.get("https://secure.example/")
    assert backend.connects == [("93.184.216.34", 443)]
    assert backend.streams[0].tls_hostname == "secure.example"


async def test_next_allowed_address_is_tried_when_one_is_down() -> None:
    resolver = FakeResolver({"multi.example": [["93.184.216.34", "10.0.0.1", "93.184.216.35"]]})
    backend = FakeBackend(permitted={"93.184.216.34", "93.184.216.35"}, down={"93.184.216.34"})
    async with client("public", resolver, backend) as http:
        assert (await http.get("http://multi.example/")).text == "ok"
    assert backend.connects == [("93.184.216.34", 80), ("93.184.216.35", 80)]


async def test_when_every_allowed_address_is_down_the_last_error_propagates() -> None:
    resolver = FakeResolver({"multi.example": [["93.184.216.34", "93.184.216.35"]]})
    down = {"93.184.216.34", "93.184.216.35"}
    backend = FakeBackend(permitted=down, down=down)
    async with client("public", resolver, backend) as http:
        with pytest.raises(httpx.ConnectError, match="93.184.216.35 is down"):
            await http.get("http://multi.example/")
    assert len(backend.connects) == 2


async def test_resolution_failure_is_a_connect_error() -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with egress_client(
        EgressRules.parse("public"), timeout=5, resolver=failing, backend=FakeBackend()
    ) as http:
        with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.example"):
            await http.get("http://nowhere.example/")


async def test_a_name_pattern_allows_what_the_name_resolves_to() -> None:
    resolver = FakeResolver({"api.internal": [["10.0.0.5"]]})
    backend = FakeBackend(permitted={"10.0.0.5"})
    async with client("api.internal:8000", resolver, backend) as http:
        assert (await http.get("http://api.internal:8000/v1")).text == "ok"
        with pytest.raises(EgressDenied, match="api.internal:8001 is not in FLOWFLEET_EGRESS_ALLOW"):
            await http.get("http://api.internal:8001/v1")
    assert backend.connects == [("10.0.0.5", 8000)]


async def test_system_resolver_answers_unique_addresses() -> None:
    assert await system_resolver("127.0.0.1", 80) == ["127.0.0.1"]
    answers = await system_resolver("localhost", 80)
    assert answers and len(answers) == len(set(answers))
    assert set(answers) <= {"127.0.0.1", "::1"}


# --- the operator's proxy -----------------------------------------------------------------------------------


async def test_proxy_gets_checked_requests_only() -> None:
    resolver = FakeResolver(
        {"example.com": [["93.184.216.34"]], "mixed.example": [["93.184.216.34", "10.0.0.1"]]}
    )
    backend = FakeBackend(permitted={"127.0.0.1"})
    async with client("public", resolver, backend, proxy="http://127.0.0.1:3128") as http:
        assert (await http.get("http://example.com/a")).text == "ok"
        with pytest.raises(EgressDenied):
            await http.get("http://10.0.0.1/")
        with pytest.raises(EgressDenied):  # the proxy would pick an address itself: all must be allowed
            await http.get("http://mixed.example/")
    assert backend.connects == [("127.0.0.1", 3128)]
    assert backend.streams[0].written.startswith(b"GET http://example.com/a HTTP/1.1\r\n")
    assert resolver.calls == ["example.com", "mixed.example"]


async def test_https_through_the_proxy_tunnels_to_the_checked_name() -> None:
    resolver = FakeResolver({"example.com": [["93.184.216.34"]]})
    backend = FakeBackend(
        permitted={"127.0.0.1"}, chunks=[b"HTTP/1.1 200 Connection established\r\n\r\n", OK]
    )
    async with client("public", resolver, backend, proxy="http://127.0.0.1:3128") as http:
        assert (await http.get("https://example.com/")).text == "ok"
    assert backend.connects == [("127.0.0.1", 3128)]
    assert backend.streams[0].written.startswith(b"CONNECT example.com:443 HTTP/1.1\r\n")
    assert backend.streams[0].tls_hostname == "example.com"


async def test_resolution_failure_before_the_proxy_is_a_connect_error() -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    backend = FakeBackend()
    rules = EgressRules.parse("public")
    async with egress_client(
        rules, timeout=5, resolver=failing, backend=backend, proxy="http://127.0.0.1:3128"
    ) as http:
        with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.example"):
            await http.get("http://nowhere.example/")
    assert backend.connects == []


async def test_a_private_proxy_named_by_the_operator_is_reachable() -> None:
    resolver = FakeResolver({"proxy.internal": [["10.9.9.9"]], "example.com": [["93.184.216.34"]]})
    backend = FakeBackend(permitted={"10.9.9.9"})
    async with client("public", resolver, backend, proxy="http://proxy.internal:3128") as http:
        assert (await http.get("http://example.com/")).text == "ok"
    assert backend.connects == [("10.9.9.9", 3128)]


# --- real servers, on loopback only -----------------------------------------------------------------------


@dataclass
class Served:
    url: str
    port: int
    hits: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def run_app_server() -> AsyncIterator[Served]:
    """A uvicorn server on a free loopback port: `/` says hello, `/redirect?to=URL` answers 302."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    served = Served(f"http://127.0.0.1:{port}", port)

    async def hello(request: Request) -> Response:
        served.hits.append(request.url.path)
        return PlainTextResponse("hello")

    async def redirect(request: Request) -> Response:
        served.hits.append(request.url.path)
        return RedirectResponse(request.query_params["to"], status_code=302)

    app = Starlette(routes=[Route("/", hello), Route("/redirect", redirect)])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not server.started:
            assert not task.done() and asyncio.get_running_loop().time() < deadline, "server did not start"
            await asyncio.sleep(0.01)
        yield served
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def run_trap() -> AsyncIterator[Served]:
    """A raw TCP server that records every connection and answers any request with "trap"."""
    served = Served("", 0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.hits.append((await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ntrap")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    served.port = server.sockets[0].getsockname()[1]
    served.url = f"http://127.0.0.1:{served.port}"
    try:
        yield served
    finally:
        server.close()
        await server.wait_closed()


async def test_loopback_is_refused_unless_listed() -> None:
    async with run_app_server() as app:
        for rules in ("public", "localhost", "127.0.0.1:1", "10.0.0.0/8"):
            backend = LoopbackBackend()
            async with egress_client(EgressRules.parse(rules), timeout=5, backend=backend) as http:
                with pytest.raises(EgressDenied, match="127.0.0.1 is loopback"):
                    await http.get(app.url + "/")
            assert backend.connects == []
        assert app.hits == []


@pytest.mark.parametrize("how", ["pattern", "endpoint", "name"])
async def test_listed_loopback_is_reachable(how: str) -> None:
    async with run_app_server() as app:
        rules = {
            "pattern": EgressRules.parse(f"127.0.0.1:{app.port}"),
            "endpoint": EgressRules.parse("", endpoints=[app.url + "/v1"]),
            "name": EgressRules.parse(f"localhost:{app.port}"),  # the system resolver, reading /etc/hosts
        }[how]
        url = f"http://localhost:{app.port}/" if how == "name" else app.url + "/"
        backend = LoopbackBackend()
        async with egress_client(rules, timeout=5, backend=backend) as http:
            response = await http.get(url)
        assert (response.status_code, response.text) == (200, "hello")
        assert app.hits == ["/"]
        assert ("127.0.0.1", app.port) in backend.connects


async def test_proxy_and_tls_environment_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with run_app_server() as app, run_trap() as trap:
        for name in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, trap.url)
        # The setup can fail the test: an ordinary client does obey these variables and hits the trap.
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(app.url + "/")).text == "trap"
        assert len(trap.hits) == 1
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))  # would fail client construction
        async with egress_client(EgressRules.parse(f"127.0.0.1:{app.port}"), timeout=5) as http:
            assert (await http.get(app.url + "/")).text == "hello"
        assert len(trap.hits) == 1
        assert app.hits == ["/"]


@pytest.mark.parametrize(
    "target",
    ["http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://2130706433/", "ftp://x/"],
)
async def test_redirects_are_checked_hop_by_hop(target: str) -> None:
    async with run_app_server() as app:
        backend = LoopbackBackend()
        rules = EgressRules.parse(f"127.0.0.1:{app.port}")
        async with egress_client(rules, timeout=5, backend=backend, follow_redirects=True) as http:
            # the control: an allowed redirect is followed
            assert (await http.get(app.url + "/redirect", params={"to": "/"})).text == "hello"
            with pytest.raises(EgressDenied):
                await http.get(app.url + "/redirect", params={"to": target})
        assert app.hits == ["/redirect", "/", "/redirect"]
        assert {host for host, _ in backend.connects} == {"127.0.0.1"}
