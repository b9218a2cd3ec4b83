"""The OpenAI API's run requests and answers on the wire, kept cheap: they are the API's hot path.

    length, key = run_headers(scope["headers"])               # one pass over the ASGI headers
    body = await read_json_body(scope, receive, length, limit)   # cluster.http
    EncodedJSON(body, headers)                                # a JSON answer already encoded

`OpenAIEndpoint` (errors.py) sends an `EncodedJSON` or a `FastJSONResponse` as its two ASGI messages
itself. Every refusal is cluster.http's, word for word: anything off the common path goes through
`read_json_object` (worker/api/native.py reads its run requests the same way).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from cluster.http import FastJSONResponse
from cluster.traffic.canary import check_request_key
from worker.routing import KEY_HEADER

KEY = KEY_HEADER.encode()


def run_headers(headers: Any) -> tuple[bytes | None, str | None]:
    """The raw Content-Length and the X-Flowfleet-Key of a request, in one pass over its ASGI headers
    (names come lower-cased); the first of each counts, as with Starlette's `Headers.get`."""
    length: bytes | None = None
    key: str | None = None
    for name, value in headers:
        if name == b"content-length":
            if length is None:
                length = value
        elif name == KEY and key is None:
            key = value.decode("latin-1")
    return length, key


def routing_key(header: str | None, user: str | None) -> str | None:
    """`X-Flowfleet-Key`, else the request's `user`: the same key gets the same canary answer."""
    return user if header is None else check_request_key(header, "X-Flowfleet-Key")


class EncodedJSON(Response):
    """A 200 JSON answer from a body already encoded, with `headers` encoded too (lower-case names):
    cluster.http's FastJSONResponse, minus the encoding."""

    media_type = "application/json"

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        length = (b"content-length", str(len(body)).encode())
        self.raw_headers = [length, (b"content-type", b"application/json"), *headers]


# Responses that are a status, headers and a body, nothing else (no background task).
PLAIN = frozenset({EncodedJSON, FastJSONResponse})
