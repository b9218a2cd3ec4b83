"""Outbound HTTP that obeys EgressRules where it matters: at connect time, on the address actually dialled.

A URL check alone is not enough: a name can resolve to 127.0.0.1, or resolve to a public address when it is
checked and to 10.0.0.1 when the client resolves it again (DNS rebinding). So `CheckedBackend` resolves
each name itself, decides every address, and connects to a checked IP, never to the name. TLS still
verifies the certificate against the URL's host name: httpcore takes `server_hostname` from the request
origin, not from the address the backend dialled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from cluster.egress.addresses import IPAddress, literal_ip
from cluster.egress.connections import CoalescingStream, EgressConnectionPool, EgressHTTPProxy
from cluster.egress.rules import DEFAULT_PORTS, EgressConfigError, EgressRules
from cluster.errors import ComponentError

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]


class EgressDenied(ComponentError):
    """An outbound request FLOWFLEET_EGRESS_ALLOW does not allow; safe to show (no resolved IPs)."""

    code = "egress_denied"

    def __init__(self, host: str, port: int | None, reason: str) -> None:
        shown = f"[{host}]" if ":" in host and "/" not in host else host
        where = shown if port is None else f"{shown}:{port}"
        super().__init__(
            f"outbound request to {where} refused: {reason}", host=host, port=port, reason=reason
        )
        self.host = host
        self.port = port
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[str]:
    """The IP addresses the OS resolver gives for `host`, unique, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _resolve(resolver: Resolver, host: str, port: int, timeout: float | None) -> list[str]:
    """`resolver(host, port)` with resolution failures reported as httpx reports them (connect errors)."""
    try:
        async with asyncio.timeout(timeout):
            return await resolver(host, port)
    except TimeoutError as e:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from e
    except OSError as e:
        raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from e


def _checked(rules: EgressRules, host: str, port: int, addresses: list[str]) -> tuple[list[IPAddress], int]:
    """The allowed addresses among `addresses`, and how many were refused (each logged with its IP)."""
    allowed: list[IPAddress] = []
    for address in addresses:
        ip = literal_ip(address)
        reason = "resolver returned a non-address" if ip is None else rules.decide(host, port, ip)
        if ip is not None and reason is None:
            allowed.append(ip)
        else:
            logger.warning("egress to %s:%s: address %s refused: %s", host, port, address, reason)
    return allowed, len(addresses) - len(allowed)


def _refused_names_message(refused: int) -> str:
    # The resolved addresses stay in the log: a caller must not learn how internal names resolve.
    if refused == 0:
        return "the name resolves to no address"
    return "no address the name resolves to is allowed by FLOWFLEET_EGRESS_ALLOW"


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that only opens TCP connections the rules allow, to the address it checked."""

    def __init__(
        self,
        rules: EgressRules,
        *,
        resolver: Resolver | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.rules = rules
        self.resolver: Resolver = resolver or system_resolver
        self.backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        ip = literal_ip(host)
        if ip is not None:
            # Decided without DNS, and dialled in canonical form: "2130706433" must not reach a resolver.
            reason = self.rules.decide(host, port, ip)
            if reason is not None:
                logger.warning("egress to %s:%s refused: %s", host, port, reason)
                raise EgressDenied(host, port, reason)
            targets = [ip]
        else:
            targets, refused = _checked(
                self.rules, host, port, await _resolve(self.resolver, host, port, timeout)
            )
            if not targets:
                raise EgressDenied(host, port, _refused_names_message(refused))
        for i, target in enumerate(targets):
            try:
                # The checked IP itself, never the name: resolving again could answer something else.
                stream = await self.backend.connect_tcp(
                    str(target), port, timeout, local_address=local_address, socket_options=socket_options
                )
                return CoalescingStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError):
                if i == len(targets) - 1:
                    raise
        raise AssertionError("unreachable: targets is never empty")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressDenied(path, None, "unix sockets are never reachable from flows")

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


# One pool serves every concurrent run of a node (a replica runs up to FLOWFLEET_MAX_CONCURRENT_RUNS at once,
# each may stream for minutes): httpcore's own default of 10 connections would queue the rest. Idle
# connections are kept for a minute, so that a node called every few seconds does not pay a new TCP and
# TLS handshake before each answer (with 5 s, a node called every 6 s did). One the server closed sooner
# is noticed before reuse (it reads as closed) and replaced; one closed at the very moment it is reused
# fails as a connection error, which providers retry.
POOL_LIMITS: dict[str, Any] = {
    "max_connections": 512,
    "max_keepalive_connections": 64,
    "keepalive_expiry": 60.0,
}


class EgressTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool (or the operator's proxy) whose sockets CheckedBackend opens.

    Every request URL, redirect hops included (each hop is a new request), is checked before anything is
    sent, so a refused scheme or literal address fails without touching a socket.
    """

    def __init__(
        self,
        rules: EgressRules,
        *,
        resolver: Resolver | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
        proxy: str | None = None,
    ) -> None:
        ssl_context = httpx.create_ssl_context(trust_env=False)  # SSL_CERT_FILE / SSL_CERT_DIR never apply
        super().__init__(verify=ssl_context, trust_env=False)  # its pool holds no connection; replaced below
        self.rules = rules
        self.resolver: Resolver = resolver or system_resolver
        self.proxied = proxy is not None
        if proxy is None:
            network = CheckedBackend(rules, resolver=resolver, backend=backend)
            self._pool = EgressConnectionPool(ssl_context=ssl_context, network_backend=network, **POOL_LIMITS)
            return
        settings = httpx.Proxy(proxy)  # also takes user:pass@ from the URL as proxy credentials
        url = settings.url
        if url.scheme not in ("http", "https"):
            raise EgressConfigError(
                f"egress proxy {proxy!r}: only http:// and https:// proxies are supported"
            )
        # The proxy is the only thing this pool ever dials, and the operator named it: allow exactly it.
        to_proxy = CheckedBackend(EgressRules.parse("", [proxy]), resolver=resolver, backend=backend)
        self._pool = EgressHTTPProxy(
            proxy_url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            proxy_auth=settings.raw_auth,
            proxy_headers=settings.headers.raw,
            ssl_context=ssl_context,
            network_backend=to_proxy,
            **POOL_LIMITS,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        # httpx's own parse of the URL is checked (what httpcore will dial), not a re-parse of its text.
        host = url.raw_host.decode("ascii")
        port = url.port or DEFAULT_PORTS.get(url.scheme)
        reason = self.rules.check_target(url.scheme, host, port, userinfo=bool(url.userinfo))
        if reason is not None:
            raise EgressDenied(host or str(url), port, reason)
        if self.proxied and port is not None and literal_ip(host) is None:
            await self._check_name_for_proxy(host, port, request.extensions.get("timeout", {}).get("connect"))
        return await super().handle_async_request(request)

    async def _check_name_for_proxy(self, host: str, port: int, timeout: float | None) -> None:
        """Resolve and decide a name before the proxy gets it; the proxy then resolves it again itself.

        We cannot choose which address the proxy dials, so every address the name has now must be allowed.
        This narrows, but cannot close, the rebinding window; the proxy's own policy is the last word.
        """
        try:
            addresses = await _resolve(self.resolver, host, port, timeout)
        except httpcore.ConnectTimeout as e:  # raised outside the pool, so httpx has not mapped it yet
            raise httpx.ConnectTimeout(str(e)) from e
        except httpcore.ConnectError as e:
            raise httpx.ConnectError(str(e)) from e
        allowed, refused = _checked(self.rules, host, port, addresses)
        if refused or not allowed:
            raise EgressDenied(host, port, _refused_names_message(refused))


def egress_client(
    rules: EgressRules,
    *,
    timeout: float,
    resolver: Resolver | None = None,
    backend: httpcore.AsyncNetworkBackend | None = None,
    proxy: str | None = None,
    follow_redirects: bool = False,
    max_redirects: int = 5,
) -> httpx.AsyncClient:
    """An httpx client every request of which obeys `rules`; proxy settings in the environment never apply.

    `proxy` is the operator's explicit HTTP(S) proxy; `resolver` and `backend` are seams for tests.
    """
    transport = EgressTransport(rules, resolver=resolver, backend=backend, proxy=proxy)
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        trust_env=False,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )
