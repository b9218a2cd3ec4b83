"""Bounded request bodies (cluster.http.read_body / read_json_object), read straight off ASGI messages."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from cluster.errors import BadRequest
from cluster.http import FastJSONResponse, PayloadTooLarge, read_body, read_json_object


def request(*messages: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}
    return Request(scope, receive)


def chunk(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_in_several_messages_is_joined() -> None:
    got = await read_body(request(chunk(b'{"in', True), chunk(b"", True), chunk(b'puts": {}}')), 100)
    assert got == b'{"inputs": {}}'
    assert await read_json_object(request(chunk(b'{"a": 1}')), 100) == {"a": 1}


async def test_a_body_over_the_limit_is_refused_while_streaming_and_by_its_declared_length() -> None:
    with pytest.raises(PayloadTooLarge):
        await read_body(request(chunk(b"x" * 6, more=True), chunk(b"x" * 6)), 10)
    declared = request(chunk(b"{}"), headers=[(b"content-length", b"11")])
    with pytest.raises(PayloadTooLarge):
        await read_body(declared, 10)
    assert await read_body(request(chunk(b"x" * 10)), 10) == b"x" * 10


async def test_a_client_that_disconnects_mid_body_raises_client_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        await read_body(request(chunk(b"{", more=True), {"type": "http.disconnect"}), 100)


@pytest.mark.parametrize("body", [b"", b"  ", b"{nope", b"[1]"])
async def test_empty_malformed_or_non_object_bodies_are_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        await read_json_object(request(chunk(body)), 100)


def test_fast_json_response_has_the_length_type_and_given_headers() -> None:
    response = FastJSONResponse({"a": "é"}, 201, headers=[(b"x-flowfleet-version", b"h")])
    assert response.status_code == 201
    assert response.body == '{"a":"é"}'.encode()
    assert response.raw_headers == [
        (b"content-length", str(len(response.body)).encode()),
        (b"content-type", b"application/json"),
        (b"x-flowfleet-version", b"h"),
    ]
