"""The OpenAI API's hot path (worker/api/openai/wire.py, chat.py's made answer, the usual-request
shortcuts): each must answer exactly what the general path answers, refusals included."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from cluster.components.providers.usage import COUNTER, TokenCount, count_tokens
from cluster.errors import BadRequest, Unavailable
from cluster.http import PayloadTooLarge, read_json_body
from tests.test_openai_api import ask, chat_doc, replica
from worker.api.openai import chat
from worker.api.openai.chat import completion
from worker.api.openai.chat_stream import ID_BATCH, ID_PREFIX, chat_usage, completion_id, fingerprint
from worker.api.openai.errors import ModelNotFound, OpenAIRequestError, ScopeEndpoint
from worker.api.openai.mapping import MODELS_KEPT, parse_model
from worker.api.openai.params import CHAT_FIELDS, CHAT_REFUSED, CHAT_USUAL, check_fields, common
from worker.api.openai.run import replica_at
from worker.api.openai.wire import EncodedJSON, routing_key, run_headers

H = "358fb271e383fae2535b9dc5bd0d6b22f6a74bb75803420631c4a70fd76ff1a9"


# -- the made answer --------------------------------------------------------------------------------
def as_dict(model: str, digest: str, text: str, tokens: TokenCount, id_: str, created: int) -> bytes:
    """A chat completion as the API built it before it was made as bytes: a dict, through orjson."""
    answer = {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint(digest),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": chat_usage(tokens),
    }
    return orjson.dumps(answer, option=orjson.OPT_NON_STR_KEYS)


@pytest.mark.parametrize(
    "text",
    ["", "plain", 'a "quoted" \\ back\\slash', "line\nbreak\ttab\x00\x1f", "é 中文 🙂", "</script>"],
)
@pytest.mark.parametrize("model", ["qa", "qa@6af6fe80", "a.b-c_d"])
def test_the_made_answer_is_what_orjson_writes(model: str, text: str) -> None:
    tokens = TokenCount(7, 3)
    before = int(time.time())
    made = completion(model, H, text, tokens)
    parsed = orjson.loads(made)
    assert parsed["created"] >= before
    assert made == as_dict(model, H, text, tokens, parsed["id"], parsed["created"])


def test_made_answers_have_ids_of_their_own() -> None:
    ids = {orjson.loads(completion("qa", H, "x", TokenCount()))["id"] for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("chatcmpl-") and len(i) == 9 + 12 + 12 for i in ids)


def test_ids_stay_unique_across_batches_plain_and_streamed_alike() -> None:
    plain = [orjson.loads(completion("qa", H, "x", TokenCount()))["id"] for _ in range(ID_BATCH + 3)]
    streamed = [completion_id() for _ in range(ID_BATCH + 3)]
    assert len(set(plain + streamed)) == 2 * (ID_BATCH + 3)
    assert {i[: 9 + 12] for i in plain + streamed} == {ID_PREFIX}


def test_a_new_second_is_a_new_created() -> None:
    before = orjson.loads(completion("qa", H, "x", TokenCount()))["created"]
    stale = chat._MIDDLES["qa", H][1].replace(b":%d," % before, b":%d," % (before - 5))
    chat._MIDDLES["qa", H] = (before - 5, stale)  # as if made five seconds ago
    assert orjson.loads(completion("qa", H, "x", TokenCount()))["created"] >= before


def test_the_names_an_answer_carries_are_kept_within_bounds() -> None:
    for i in range(chat.MIDDLES_KEPT + 5):
        completion(f"m{i}", H, "x", TokenCount())
    assert 0 < len(chat._MIDDLES) <= chat.MIDDLES_KEPT
    assert orjson.loads(completion("m0", H[::-1], "x", TokenCount()))["system_fingerprint"] == (
        "fp_" + H[::-1][:12]
    )


def test_an_encoded_answer_states_its_length() -> None:
    answer = EncodedJSON(b'{"a":1}', [(b"x-flowfleet-version", b"v")])
    assert (answer.status_code, answer.body, answer.background) == (200, b'{"a":1}', None)
    assert answer.raw_headers == [
        (b"content-length", b"7"),
        (b"content-type", b"application/json"),
        (b"x-flowfleet-version", b"v"),
    ]


# -- the usual request, checked sooner ----------------------------------------------------------------
def test_a_usual_request_is_one_the_general_checks_pass() -> None:
    assert CHAT_USUAL <= CHAT_FIELDS
    assert CHAT_USUAL.isdisjoint(CHAT_REFUSED)
    assert CHAT_USUAL.isdisjoint({"stream", "stream_options", "user"})
    body = {name: 1 for name in CHAT_USUAL} | {"model": "qa@abc", "messages": []}
    check_fields(body, CHAT_FIELDS, CHAT_REFUSED)
    assert tuple(common(body)) == (parse_model("qa@abc"), False, None)


def test_models_are_parsed_once_and_refusals_never_kept() -> None:
    assert parse_model("keep-me") is parse_model("keep-me")
    for bad in ("", "qa@", "no spaces", None, ["qa"], {"m": 1}):
        with pytest.raises((ModelNotFound, OpenAIRequestError)):
            parse_model(bad)
    for i in range(MODELS_KEPT + 5):
        parse_model(f"flow{i}")
    from worker.api.openai import mapping

    assert "no spaces" not in mapping._MODELS
    assert 0 < len(mapping._MODELS) <= MODELS_KEPT


# -- headers and bodies -------------------------------------------------------------------------------
def test_run_headers_takes_the_first_of_each() -> None:
    headers = [
        (b"host", b"h"),
        (b"content-length", b"12"),
        (b"x-flowfleet-key", b"k1"),
        (b"content-length", b"99"),
        (b"x-flowfleet-key", b"k2"),
    ]
    assert run_headers(headers) == (b"12", "k1")
    assert run_headers([]) == (None, None)
    assert routing_key(None, "ada") == "ada" and routing_key("k", "ada") == "k"
    with pytest.raises(Exception, match="X-Flowfleet-Key"):
        routing_key("", "ada")


def receiving(*messages: Message) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    return receive


def body(data: bytes, more: bool = False) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


SCOPE: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}


async def test_a_body_is_read_as_cluster_http_reads_it() -> None:
    assert await read_json_body(SCOPE, receiving(body(b'{"a": [1]}')), b"10", 100) == {"a": [1]}
    # Several messages, no Content-Length: the general reader joins them.
    chunks = receiving(body(b'{"a"', more=True), body(b": 2}"))
    assert await read_json_body(SCOPE, chunks, None, 100) == {"a": 2}
    declared = {**SCOPE, "headers": [(b"content-length", b"5000")]}
    with pytest.raises(PayloadTooLarge):  # refused by its declared length, before reading
        await read_json_body(declared, receiving(body(b"x" * 10)), b"5000", 100)
    refusals: list[tuple[Receive, bytes | None, type[Exception], str | None]] = [
        (receiving(body(b"[" + b"1," * 60 + b"1]")), None, PayloadTooLarge, "exceeds"),
        (receiving(body(b"{not json")), None, BadRequest, "not valid JSON"),
        (receiving(body(b"  ")), None, BadRequest, "empty"),
        (receiving(body(b"[1, 2]")), None, BadRequest, "JSON object, not"),
        (receiving({"type": "http.disconnect"}), None, ClientDisconnect, None),
    ]
    for receive, length, error, words in refusals:
        with pytest.raises(error, match=words):
            await read_json_body(SCOPE, receive, length, 100)


# -- the endpoint ---------------------------------------------------------------------------------------
def asgi(handler: Callable[[Scope, Receive], Awaitable[Response]]) -> Callable[..., Awaitable[Any]]:
    """Call `handler` as a ScopeEndpoint; returns (the messages it sent)."""
    endpoint = ScopeEndpoint(handler)

    async def call() -> list[Message]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await endpoint({**SCOPE}, receiving(body(b"{}")), send)
        return sent

    return call


async def test_a_scope_endpoint_answers_in_openai_shape() -> None:
    async def fine(scope: Scope, receive: Receive) -> Response:
        return EncodedJSON(b"{}", [(b"x-a", b"1")])

    async def busy(scope: Scope, receive: Receive) -> Response:
        raise Unavailable("overloaded", "busy")

    async def crash(scope: Scope, receive: Receive) -> Response:
        raise RuntimeError("a bug")

    async def gone(scope: Scope, receive: Receive) -> Response:
        raise ClientDisconnect()

    start, sent = await asgi(fine)()
    assert start == {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", b"2"), (b"content-type", b"application/json"), (b"x-a", b"1")],
    }
    assert sent == {"type": "http.response.body", "body": b"{}"}
    start, sent = await asgi(busy)()
    assert start["status"] == 503 and (b"retry-after", b"1") in start["headers"]
    assert json.loads(sent["body"])["error"]["code"] == "overloaded"
    start, sent = await asgi(crash)()
    assert start["status"] == 500 and b"a bug" not in sent["body"]
    assert await asgi(gone)() == []  # nobody to answer


def test_each_app_has_its_own_replica() -> None:
    first, second = Starlette(), Starlette()
    one, two = object(), object()
    first.state.replica, second.state.replica = one, two
    for app, expected in ((first, one), (second, two), (first, one), (first, one)):
        assert replica_at({"app": app}) is expected


def test_a_counter_set_by_hand_counts_as_a_block_does() -> None:
    tokens = TokenCount()
    token = COUNTER.set(tokens)
    count_tokens({"prompt_tokens": 2, "completion_tokens": 1})
    COUNTER.reset(token)
    count_tokens({"prompt_tokens": 5})  # nobody counts
    assert (tokens.prompt, tokens.completion) == (2, 1)


# -- the route: the usual shortcuts answer as the general path does --------------------------------------
async def test_usual_and_unusual_requests_answer_alike(redis_server: Any, namespace: str) -> None:
    async with replica(redis_server, namespace, [chat_doc()]) as http:
        shapes = [
            ask("hi"),
            ask("hi", temperature=0.2, max_tokens=5),  # ignored fields: still the usual request
            ask("hi", n=1, user="ada"),  # the general field checks
            {"model": "chat", "messages": [{"role": "user", "content": "hi", "name": "ada"}]},
            {"model": "chat", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            {
                "model": "chat",
                "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
            },
        ]
        for request in shapes:
            r = await http.post("/chat/completions", json=request)
            assert r.status_code == 200, (request, r.text)
            assert r.json()["choices"][0]["message"]["content"] == "[echo-1] hi", request
            assert int(r.headers["content-length"]) == len(r.content)
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"model": "chat", "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
            ({"model": "chat", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
            ({"model": "chat", "messages": [{"content": "hi", "role": "tool"}]}, "messages[0]"),
            ({"model": "chat", "messages": [["user", "hi"]]}, "messages[0]"),
            ({"model": "chat"}, "messages"),
            ({"model": 5, "messages": []}, "model"),
            ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ]
        for request, param in refusals:
            r = await http.post("/chat/completions", json=request)
            assert (r.status_code, r.json()["error"]["param"]) == (400, param), (request, r.text)
        keyed = await http.post("/chat/completions", json=ask("hi"), headers={"x-flowfleet-key": ""})
        assert (keyed.status_code, keyed.json()["error"]["param"]) == (400, "X-Flowfleet-Key")
        missing = await http.post("/chat/completions", json=ask(model="chat@00000000"))
        assert (missing.status_code, missing.json()["error"]["code"]) == (403, "version_selection_off")
        assert missing.headers["x-flowfleet-version"]  # refused after admission: the version is known
        assert http.replica.gate.in_flight == 0  # type: ignore[attr-defined]  # each refusal settled its run
