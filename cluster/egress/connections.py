"""The connections outbound HTTP runs on: writes coalesced per request, and a pool that hands each
HTTP/1.1 connection to one request at a time (cluster/egress/transport.py builds the client on them).

`EgressConnectionPool` and `EgressHTTPProxy` replace httpcore 1.0's private
`_assign_requests_to_connections` (its bookkeeping after every request that starts or ends); pyproject
pins httpcore below 1.1 for that reason, and tests/test_egress_pool.py holds the behaviour.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpcore

Connection = httpcore.AsyncConnectionInterface
# Bytes of writes a connection holds at most before sending them without waiting for its next read.
COALESCE_BYTES = 64 * 1024


class CoalescingStream(httpcore.AsyncNetworkStream):
    """A connection whose writes wait for the next read (or COALESCE_BYTES): a request's head and body
    leave in one write, one TCP segment for a small request, instead of two.

    httpcore writes an HTTP/1.1 request as two sends and reads only once it is all sent. Sent apart, the
    server wakes twice and answers no sooner than the second, while each send yields this event loop to
    whatever else is ready: tenths of a millisecond before the upstream sees a streamed run's request.
    """

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._held: list[bytes] = []
        self._held_bytes = 0

    async def _flush(self, timeout: float | None) -> None:
        if self._held:
            data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
            self._held, self._held_bytes = [], 0
            await self._stream.write(data, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._held.append(buffer)
        self._held_bytes += len(buffer)
        if self._held_bytes >= COALESCE_BYTES:
            await self._flush(timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            await self._flush(timeout)
        except httpcore.WriteError:
            pass  # as httpcore does: a server may close early yet have answered (413): read that answer
        return await self._stream.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._held, self._held_bytes = [], 0
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        await self._flush(timeout)  # e.g. a CONNECT to the proxy: it has to be sent before the handshake
        return CoalescingStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def assign_one_request_per_connection(pool: httpcore.AsyncConnectionPool) -> list[Connection]:
    """httpcore 1.0's `_assign_requests_to_connections` (the pool's bookkeeping after every request that
    starts or ends), for HTTP/1.1 connections, which serve one request at a time; returns what to close.

    httpcore's own pass hands an idle connection to every queued request that arrives before the first
    one it was handed to has started on it: with 32 runs starting at once over idle keep-alive
    connections, most of them then fail with ConnectionNotAvailable and go round again (about 175 such
    retries for 32 requests), each pass scanning every connection once per idle one. Here a connection
    handed to a request is not handed to another until that request is done, one that is handed out is
    never closed from under it (encode/httpcore#1110), and idle connections are counted once per pass.
    """
    claimed = {id(r.connection) for r in pool._requests if r.connection is not None}
    closing: list[Connection] = []
    kept: list[Connection] = []
    idle = 0
    for connection in pool._connections:
        if connection.is_closed():
            continue
        if id(connection) not in claimed:
            if connection.has_expired():
                closing.append(connection)
                continue
            if connection.is_idle():
                if idle >= pool._max_keepalive_connections:
                    closing.append(connection)
                    continue
                idle += 1
        kept.append(connection)
    for request in pool._requests:
        if not request.is_queued():
            continue
        origin = request.request.url.origin
        free = (c for c in kept if id(c) not in claimed and c.can_handle_request(origin) and c.is_available())
        chosen = next(free, None)
        if chosen is None:
            if len(kept) >= pool._max_connections:
                spare = next((c for c in kept if id(c) not in claimed and c.is_idle()), None)
                if spare is None:
                    continue  # waits until a connection comes free
                kept.remove(spare)
                closing.append(spare)
            chosen = pool.create_connection(origin)
            kept.append(chosen)
        claimed.add(id(chosen))
        request.assign_to_connection(chosen)
    pool._connections = kept
    return closing


class EgressConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, with `assign_one_request_per_connection` as its bookkeeping."""

    def _assign_requests_to_connections(self) -> list[Connection]:
        return assign_one_request_per_connection(self)


class EgressHTTPProxy(httpcore.AsyncHTTPProxy):
    """httpcore's pool through an HTTP(S) proxy, with `assign_one_request_per_connection` as its
    bookkeeping."""

    def _assign_requests_to_connections(self) -> list[Connection]:
        return assign_one_request_per_connection(self)
