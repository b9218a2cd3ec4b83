"""The egress-checked client serves many concurrent calls of one node: a pool of 10 (httpcore's default)
would queue the 11th call behind a slow (streaming) one."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime
from tests.loopback import serve_app

CALLS = 24


async def test_more_concurrent_calls_than_httpcores_default_pool() -> None:
    arrived = 0
    everyone = asyncio.Event()

    async def slow(request: Request) -> PlainTextResponse:
        nonlocal arrived
        arrived += 1
        if arrived == CALLS:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), timeout=10)  # answers only once all calls are in flight
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/slow", slow)])
    async with serve_app(app, before_stop=everyone.set) as url:
        client = Runtime(OutboundPolicy.build(egress_allow="127.0.0.1")).http_client(timeout=15)
        try:
            replies = await asyncio.gather(*(client.get(f"{url}/slow") for _ in range(CALLS)))
        finally:
            await client.aclose()
    assert [r.status_code for r in replies] == [200] * CALLS
