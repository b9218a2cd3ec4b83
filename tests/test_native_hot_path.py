"""The native run route as `worker.app.ReplicaHeader` serves it before the router
(`worker.api.native.serve_run`): the request body read off the ASGI messages with every error
`cluster.http.read_json_object` gives, strict flags, and a run's inputs checked once (by `Run.prepare`,
not again by the engine). In-process replica with a real redis-server behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from cluster.engine import CompiledFlow
from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.test_worker_run_api import FLOW, chat_doc, release, serving
from tests.worker_support import wait_for
from worker.app import create_app

LIMIT = 1024
URL = f"/v1/flows/{FLOW}/run"


@pytest.fixture
def store(redis_client, namespace):
    return Store(redis_client, Keys(namespace))


@asynccontextmanager
async def served(
    redis_url: str, namespace: str, digest: str
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    settings = Settings.from_env(
        {}, redis_url=redis_url, namespace=namespace, replica_id="r1", max_body_bytes=LIMIT
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            await wait_for(lambda: serving(client, digest), what="v1 served")
            yield app, client


@pytest.mark.parametrize(
    ("content", "status", "error", "message"),
    [
        (b"", 400, "bad_request", "request body is empty; expected JSON"),
        (b"  \n", 400, "bad_request", "request body is empty; expected JSON"),
        (b"{not json", 400, "bad_request", "request body is not valid JSON"),
        (b"[1]", 400, "bad_request", "request body must be a JSON object, not array"),
        (b'"x"', 400, "bad_request", "request body must be a JSON object, not string"),
        (b'{"inputs": {"question": "' + b"x" * LIMIT + b'"}}', 413, "payload_too_large", "exceeds 1024"),
        (b'{"inputs": {"question": "q"}, "stream": null}', 400, "bad_request", "'stream' must be true"),
        (b'{"inputs": {"question": "q"}, "trace": "yes"}', 400, "bad_request", "'trace' must be true"),
        (b'{"inputs": {"question": "q"}, "version": 7}', 400, "bad_request", "'version' must be"),
        (b'{"inputs": [1]}', 422, "invalid_inputs", "'inputs' must be a JSON object, not array"),
    ],
)
async def test_bad_run_bodies_get_the_errors_of_the_routers_path(
    redis_server, namespace, store, content: bytes, status: int, error: str, message: str
) -> None:
    digest = await release(store, chat_doc("v1"))
    async with served(redis_server.url, namespace, digest) as (_, client):
        r = await client.post(URL, content=content, headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]) == (status, error), r.text
        assert message in r.json()["message"]
        assert r.headers["x-flowfleet-replica"] == "r1"


async def asgi_run(app: Starlette, messages: list[dict[str, Any]], length: int) -> tuple[int, Any]:
    """POST the run route straight through the ASGI app, the body in the given messages."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": URL, "raw_path": URL.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"replica"), (b"content-length", str(length).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    pending = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))


async def test_a_body_in_several_messages_is_read_whole_and_still_bounded(redis_server, namespace, store):
    digest = await release(store, chat_doc("v1"))
    async with served(redis_server.url, namespace, digest) as (app, _):
        body = b'{"inputs": {"question": "in parts"}}'
        parts = [body[:5], b"", body[5:]]
        messages = [{"type": "http.request", "body": p, "more_body": i < 2} for i, p in enumerate(parts)]
        status, answer = await asgi_run(app, messages, len(body))
        assert status == 200 and "Q: in parts" in answer["outputs"]["answer"]
        big = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 2
        status, answer = await asgi_run(app, [*big, {"type": "http.request", "body": b""}], 20)
        assert (status, answer["error"]) == (413, "payload_too_large")  # the length said 20, in vain


async def test_a_run_checks_its_inputs_once(redis_server, namespace, store, monkeypatch) -> None:
    checks: list[Any] = []
    check = CompiledFlow.check_inputs

    def counted(self: CompiledFlow, inputs: Any) -> None:
        checks.append(dict(inputs))
        check(self, inputs)

    monkeypatch.setattr(CompiledFlow, "check_inputs", counted)
    digest = await release(store, chat_doc("v1"))
    async with served(redis_server.url, namespace, digest) as (_, client):
        checks.clear()
        ok = await client.post(URL, json={"inputs": {"question": "once"}})
        assert ok.status_code == 200 and checks == [{"question": "once"}]
        checks.clear()
        bad = await client.post(URL, json={"inputs": {"question": "q", "nope": 1}})
        assert (bad.status_code, bad.json()["details"]["unknown"]) == (422, ["nope"])
        assert checks == [{"question": "q", "nope": 1}]
        checks.clear()
        streamed = await client.post(URL, json={"inputs": {"question": "s"}, "stream": True})
        assert streamed.status_code == 200 and "event: done" in streamed.text
        assert checks == [{"question": "s"}]
