"""The OpenAI-compatible API: how flows map onto it (pure), and the routes in-process (httpx.ASGITransport)
over the real engine, a real redis-server and a local fake OpenAI upstream for token usage."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cluster.components.conversation import ChatMessage
from cluster.components.providers.usage import TokenCount, count_tokens
from cluster.engine import compile_flow
from cluster.errors import Forbidden, RunInputError, Unauthorized, Unavailable
from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.openai_server import FakeOpenAI, Reply, completion, run_fake_openai
from tests.worker_support import wait_for
from worker.api.openai.errors import ModelNotFound, OpenAIRequestError, error_body, error_response
from worker.api.openai.mapping import AnswerText, answer_nodes, answer_text, chat_input, parse_model
from worker.api.openai.messages import chat_turn, responses_turn
from worker.api.openai.params import CHAT_FIELDS, CHAT_REFUSED, check_fields
from worker.api.openai.responses import conversation_of, response_id
from worker.app import create_app


def chat_doc(name: str = "chat", **llm: Any) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {"id": "question", "type": "ChatInput", "params": {"name": "question"}},
            {"id": "llm", "type": "LLM", "params": {"provider": "echo", "model": "echo-1", **llm}},
            {"id": "answer", "type": "ChatOutput", "params": {"name": "answer"}},
        ],
        "edges": [
            {"source": "question", "target": "llm", "source_output": "message"},
            {"source": "llm", "target": "answer"},
        ],
    }


def two_inputs_doc() -> dict[str, Any]:
    return {
        "name": "two",
        "nodes": [
            {"id": "q", "type": "ChatInput", "params": {"name": "question"}},
            {"id": "p", "type": "PromptTemplate", "params": {"template": "{context} / {question}"}},
            {"id": "llm", "type": "LLM"},
        ],
        "edges": [
            {"source": "q", "target": "p", "source_output": "message", "target_input": "question"},
            {"source": "p", "target": "llm"},
        ],
    }


def parsed_doc() -> dict[str, Any]:
    """PromptTemplate {input} -> LLM -> OutputParser -> ChatOutput: the answer is not the model's text."""
    return {
        "name": "parsed",
        "nodes": [
            {"id": "p", "type": "PromptTemplate", "params": {"template": "say {input}"}},
            {"id": "llm", "type": "LLM"},
            {"id": "parse", "type": "OutputParser", "params": {"mode": "format", "template": ">> {text}"}},
            {"id": "out", "type": "ChatOutput"},
        ],
        "edges": [
            {"source": "p", "target": "llm"},
            {"source": "llm", "target": "parse", "target_input": "text"},
            {"source": "parse", "target": "out"},
        ],
    }


# -- mapping (pure) ---------------------------------------------------------------------------------
def test_parse_model() -> None:
    assert parse_model("qa").flow == "qa" and parse_model("qa").version is None
    assert (parse_model("qa@6af6fe80").flow, parse_model("qa@6af6fe80").version) == ("qa", "6af6fe80")
    with pytest.raises(OpenAIRequestError):
        parse_model("")
    for bad in ("qa@", "no spaces", "../x"):
        with pytest.raises(ModelNotFound):
            parse_model(bad)


def test_the_chat_input_of_a_flow() -> None:
    assert chat_input(compile_flow(chat_doc())) == "question"
    assert chat_input(compile_flow(parsed_doc())) == "input"  # a prompt variable named input
    with pytest.raises(OpenAIRequestError, match="context") as refused:
        chat_input(compile_flow(two_inputs_doc()))
    assert refused.value.code == "flow_not_chat_compatible"


def test_the_answer_is_the_chat_output_and_its_model_streams_it() -> None:
    compiled = compile_flow(chat_doc())
    assert answer_nodes(compiled) == {"llm"}
    assert answer_text(compiled, {"answer": "hi"}) == "hi"
    assert answer_text(compiled, {"answer": {"a": [1]}}) == '{"a":[1]}'
    assert answer_text(compiled, {}) == ""  # a Router skipped every answer
    assert answer_nodes(compile_flow(parsed_doc())) == {"parse"}


def test_streamed_pieces_always_add_up_to_the_answer() -> None:
    compiled = compile_flow(chat_doc())
    answer = AnswerText()
    assert answer.delta(compiled, {"event": "token", "node": "other", "delta": "x"}) is None
    assert answer.delta(compiled, {"event": "tool_call", "node": "llm"}) is None
    assert answer.delta(compiled, {"event": "token", "node": "llm", "delta": "Hel"}) == "Hel"
    assert answer.rest("Hello") == "lo"
    nothing_streamed = AnswerText()
    assert nothing_streamed.rest("all of it") == "all of it"
    assert answer.rest("Bye") == ""  # what went out cannot be taken back


def test_tokens_are_counted_only_inside_a_count() -> None:
    count_tokens({"prompt_tokens": 5})  # nobody counts: nothing happens
    with TokenCount() as tokens:
        count_tokens({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 99})
        count_tokens({})
    assert (tokens.prompt, tokens.completion, tokens.total) == (3, 2, 5)


# -- messages and fields (pure) -------------------------------------------------------------------
def test_chat_messages_become_history_and_input() -> None:
    turn = chat_turn(
        [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "My name "}, {"type": "text", "text": "is Ada"}],
            },
            {"role": "assistant", "content": "Hello Ada"},
            {"role": "developer", "content": "ignored too"},
            {"role": "user", "content": "Who am I?", "name": "ada"},
        ]
    )
    assert turn.message == "Who am I?"
    assert turn.history == (ChatMessage("user", "My name is Ada"), ChatMessage("assistant", "Hello Ada"))


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "assistant", "content": "hi"}], "messages"),
        ([{"role": "tool", "content": "42", "tool_call_id": "c1"}], "messages[0]"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0]",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c"}]}, {"role": "user", "content": "x"}],
            "messages[0]",
        ),
    ],
)
def test_chat_messages_a_flow_cannot_take(messages: Any, param: str) -> None:
    with pytest.raises(OpenAIRequestError) as refused:
        chat_turn(messages)
    assert refused.value.details["param"] == param


def test_responses_input() -> None:
    assert responses_turn("hi").message == "hi" and responses_turn("hi").history == ()
    items = [
        {"role": "user", "content": "a"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "c"}]},
    ]
    turn = responses_turn(items)
    assert turn.message == "c" and [m.content for m in turn.history] == ["a", "b"]
    with pytest.raises(OpenAIRequestError, match="function_call_output"):
        responses_turn([{"type": "function_call_output", "call_id": "c", "output": "1"}])


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("tools", [{"type": "function", "function": {"name": "f"}}], "unsupported_parameter"),
        ("tool_choice", "required", "unsupported_parameter"),
        ("n", 2, "unsupported_parameter"),
        ("n", True, "unsupported_parameter"),
        ("response_format", {"type": "json_object"}, "unsupported_parameter"),
        ("logprobs", True, "unsupported_parameter"),
        ("frobnicate", 1, "unknown_parameter"),
    ],
)
def test_refused_chat_fields(field: str, value: Any, code: str) -> None:
    with pytest.raises(OpenAIRequestError) as refused:
        check_fields({"model": "m", "messages": [], field: value}, CHAT_FIELDS, CHAT_REFUSED)
    assert (refused.value.code, refused.value.details["param"]) == (code, field)


def test_accepted_chat_fields() -> None:
    body = {"model": "m", "messages": [], "n": 1, "tools": [], "tool_choice": "none", "temperature": 0.1}
    body |= {"max_tokens": 5, "seed": 1, "response_format": {"type": "text"}, "logprobs": False}
    check_fields(body, CHAT_FIELDS, CHAT_REFUSED)


def test_errors_are_openai_shaped() -> None:
    assert error_body(Unauthorized("invalid token")) == (
        401,
        {
            "error": {
                "message": "invalid token",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "param": None,
            }
        },
    )
    status, body = error_body(RunInputError("missing", field="inputs"))
    assert status == 400 and body["error"]["param"] == "inputs"  # OpenAI never answers 422
    status, body = error_body(Forbidden("no", reason="version_selection_off"))
    assert (status, body["error"]["type"], body["error"]["code"]) == (
        403,
        "permission_error",
        "version_selection_off",
    )
    assert error_body(None)[1]["error"]["type"] == "server_error"
    busy = error_response(Unavailable("overloaded", "busy"))
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "x-should-retry" not in busy.headers  # worth retrying
    timeout = error_response(ModelNotFound("m"))
    assert timeout.status_code == 404 and orjson.loads(timeout.body)["error"]["code"] == "model_not_found"


async def test_an_endpoint_answers_its_own_failures_in_openai_shape() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from worker.api.openai.errors import OpenAIEndpoint

    async def refuse(request: Request) -> Response:
        raise OpenAIRequestError("no", "n", "unsupported_parameter")

    async def crash(request: Request) -> Response:
        raise RuntimeError("a bug")

    routes = [Route("/refuse", OpenAIEndpoint(refuse)), Route("/crash", OpenAIEndpoint(crash))]
    transport = httpx.ASGITransport(app=Starlette(routes=routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        refused = await http.get("/refuse")
        assert refused.status_code == 400
        assert refused.json() == {
            "error": {
                "message": "no",
                "type": "invalid_request_error",
                "code": "unsupported_parameter",
                "param": "n",
            }
        }
        crashed = await http.get("/crash")
        assert crashed.status_code == 500 and crashed.json()["error"]["type"] == "server_error"
        assert "a bug" not in crashed.text  # the log has it, not the client


def test_response_ids_carry_their_conversation() -> None:
    conversation = "0123456789abcdef" * 2
    stored = response_id(conversation)
    assert conversation_of(stored) == conversation and stored != response_id(conversation)
    unstored = response_id(None)
    with pytest.raises(Exception, match="not found"):
        conversation_of(unstored)


# -- the routes, in process -------------------------------------------------------------------------
@asynccontextmanager
async def replica(
    redis_server: Any, namespace: str, docs: list[dict[str, Any]], token: str | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A replica app serving `docs` (published and activated first), and a client of its `/v1`."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    store = Store(client, Keys(namespace))
    for doc in docs:
        data, digest = content_address(doc)
        await store.publish(doc["name"], data, digest, author="t", message="t", node_count=len(doc["nodes"]))
        await store.activate(doc["name"], digest, by="t", reason="t")
    await client.aclose()
    options = {"redis_url": redis_server.url, "namespace": namespace, "replica_id": "oa", **settings}
    app = create_app(Settings.from_env({}, **options), environ={})
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://replica/v1", headers=headers
        ) as http:

            async def ready() -> bool:
                return (await http.get("http://replica/readyz")).status_code == 200

            await wait_for(ready, what="flows loaded")
            http.replica = app.state.replica  # type: ignore[attr-defined]
            yield http


def ask(text: str = "hi", model: str = "chat", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_a_chat_completion(redis_server: Any, namespace: str) -> None:
    async with replica(redis_server, namespace, [chat_doc(), two_inputs_doc()]) as http:
        r = await http.post("/chat/completions", json=ask("hello", user="ada", temperature=0.3))
        assert r.status_code == 200, r.text
        body = r.json()
        digest = r.headers["x-flowfleet-version"]
        assert r.headers["x-flowfleet-replica"]  # served before the router, still named
        assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
        assert (body["model"], body["system_fingerprint"]) == ("chat", "fp_" + digest[:12])
        assert body["choices"][0]["message"]["content"] == "[echo-1] hello"
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

        refusals = [
            (ask(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported_parameter"),
            (ask(n=2), 400, "unsupported_parameter"),
            (ask(bogus=1), 400, "unknown_parameter"),
            (ask(model="nope"), 404, "model_not_found"),
            (ask(model="two"), 400, "flow_not_chat_compatible"),
            (ask(model="chat@0123456789ab"), 403, "version_selection_off"),
            (ask(stream=True, stream_options=[]), 400, "invalid_request_error"),
            ({"model": "chat", "messages": "hi"}, 400, "invalid_request_error"),
        ]
        for request, status, code in refusals:
            r = await http.post("/chat/completions", json=request)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (request, r.text)
            assert r.headers["x-flowfleet-replica"]
            assert set(r.json()["error"]) == {"message", "type", "code", "param"}
        bad = await http.post(
            "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert (bad.status_code, bad.json()["error"]["type"]) == (400, "invalid_request_error")
        assert http.replica.gate.in_flight == 0  # no refusal kept a place in the gate
        big = await http.post("/chat/completions", json=ask("x" * 5000))
        assert big.status_code == 200
        models = (await http.get("/models")).json()
        assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["chat", "two"]
        assert (await http.get("/models/chat")).json()["owned_by"] == "flowfleet"
        assert (await http.get("/models/nope")).status_code == 404


def selectable(tag: str, input_name: str) -> dict[str, Any]:
    doc = chat_doc("sel", model=f"echo-{tag}")
    doc["nodes"][0]["params"]["name"] = input_name
    return {**doc, "api": {"version_selection": True}}


async def test_a_version_is_chosen_by_its_fingerprint(redis_server: Any, namespace: str) -> None:
    old, new = selectable("v1", "question"), selectable("v2", "input")  # the chat input was renamed
    old_hash = content_address(old)[1]
    async with replica(redis_server, namespace, [old, new]) as http:
        current = (await http.post("/chat/completions", json=ask("hi", model="sel"))).json()
        assert current["choices"][0]["message"]["content"] == "[echo-v2] hi"
        pinned = await http.post("/chat/completions", json=ask("hi", model=f"sel@{old_hash[:12]}"))
        assert pinned.status_code == 200, pinned.text
        assert pinned.json()["system_fingerprint"] == "fp_" + old_hash[:12]
        assert pinned.json()["choices"][0]["message"]["content"] == "[echo-v1] hi"
        assert pinned.json()["model"] == f"sel@{old_hash[:12]}"
        streamed = await http.post(
            "/chat/completions", json=ask("yo", model=f"sel@{old_hash[:12]}", stream=True)
        )
        assert "echo-v1" in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
        missing = await http.post("/chat/completions", json=ask("hi", model="sel@00000000"))
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "version_not_found")


async def test_oversize_bodies_are_refused(redis_server: Any, namespace: str) -> None:
    async with replica(redis_server, namespace, [chat_doc()], max_body_bytes=1000) as http:
        r = await http.post("/chat/completions", json=ask("x" * 2000))
        assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")


async def test_a_streamed_answer_adds_up_to_the_plain_one(redis_server: Any, namespace: str) -> None:
    async with replica(redis_server, namespace, [chat_doc(), parsed_doc()]) as http:
        for model, text in (("chat", "one two three"), ("parsed", "four five")):
            plain = (await http.post("/chat/completions", json=ask(text, model=model))).json()
            r = await http.post(
                "/chat/completions",
                json=ask(text, model=model, stream=True, stream_options={"include_usage": True}),
            )
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-flowfleet-replica"]  # a stream gets it too
            lines = [line for line in r.text.split("\n\n") if line]
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
            assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
            assert "".join(pieces) == plain["choices"][0]["message"]["content"]
            assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 0
        streamed = (await http.post("/chat/completions", json=ask("a b c", stream=True))).text
        # The role, one chunk per word of "[echo-1] a b c" as the model streamed it, the finish, [DONE].
        assert streamed.count("data: ") == 1 + 4 + 1 + 1


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


async def test_usage_is_what_the_providers_report(
    redis_server: Any, namespace: str, fake: FakeOpenAI
) -> None:
    model = {"provider": "openai", "model": "gpt-test", "base_url": "", "api_key_env": None}
    doc = chat_doc("paid", **{**model, "base_url": fake.url})
    reply = {**completion("Hello Ada"), "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    fake.script = [Reply(body=reply)]
    async with replica(redis_server, namespace, [doc], egress_allow="127.0.0.1") as http:
        plain = (await http.post("/chat/completions", json=ask(model="paid"))).json()
        assert plain["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        assert plain["choices"][0]["message"]["content"] == "Hello Ada"
        streamed = await http.post(
            "/chat/completions", json=ask(model="paid", stream=True, stream_options={"include_usage": True})
        )
        last = json.loads(streamed.text.split("\n\n")[-3].removeprefix("data: "))
        assert last["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        response = (await http.post("/responses", json={"model": "paid", "input": "hi"})).json()
        assert response["usage"]["input_tokens"] == 7 and response["usage"]["total_tokens"] == 10
        assert fake.requests[-1].body["messages"][-1] == {"role": "user", "content": "hi"}


def memory_doc() -> dict[str, Any]:
    """A chat flow whose answer shows the conversation it was given (MessageHistory)."""
    return {
        "name": "memo",
        "nodes": [
            {"id": "question", "type": "ChatInput", "params": {"name": "question"}},
            {
                "id": "history",
                "type": "MessageHistory",
                "params": {"n_messages": 20, "template": "{role}: {text}"},
            },
            {"id": "prompt", "type": "PromptTemplate", "params": {"template": "{history}|{question}"}},
            {"id": "llm", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
            {"id": "answer", "type": "ChatOutput", "params": {"name": "answer"}},
        ],
        "edges": [
            {
                "source": "question",
                "target": "prompt",
                "source_output": "message",
                "target_input": "question",
            },
            {"source": "history", "target": "prompt", "source_output": "text", "target_input": "history"},
            {"source": "prompt", "target": "llm"},
            {"source": "llm", "target": "answer", "source_output": "text", "target_input": "message"},
        ],
    }


async def test_chat_history_is_the_callers(redis_server: Any, namespace: str) -> None:
    earlier = [{"role": "user", "content": "I am Ada"}, {"role": "assistant", "content": "Hi Ada"}]
    async with replica(redis_server, namespace, [memory_doc()]) as http:
        body = {"model": "memo", "messages": [*earlier, {"role": "user", "content": "Who am I?"}]}
        answer = (await http.post("/chat/completions", json=body)).json()["choices"][0]["message"]["content"]
        assert answer == "[echo-1] user: I am Ada\nassistant: Hi Ada|Who am I?"
        alone = (await http.post("/chat/completions", json=ask("Who?", model="memo"))).json()
        assert alone["choices"][0]["message"]["content"] == "[echo-1] |Who?"  # nothing was stored


async def test_responses_remember_only_what_is_stored(redis_server: Any, namespace: str) -> None:
    async def respond(**body: Any) -> dict[str, Any]:
        r = await http.post("/responses", json={"model": "memo", **body})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def text(response: dict[str, Any]) -> str:
        return str(response["output"][0]["content"][0]["text"])

    async with replica(redis_server, namespace, [memory_doc()]) as http:
        first = await respond(input="I am Ada")
        assert (first["status"], first["store"], text(first)) == ("completed", True, "[echo-1] |I am Ada")
        second = await respond(input="Who?", previous_response_id=first["id"])
        assert text(second) == "[echo-1] user: I am Ada\nassistant: [echo-1] |I am Ada|Who?"
        assert second["id"] != first["id"] and second["previous_response_id"] == first["id"]
        aside = await respond(input="Not kept", previous_response_id=second["id"], store=False)
        assert aside["store"] is False and "Who?" in text(aside)  # read, not added to
        third = await respond(input="And?", previous_response_id=second["id"])
        assert "Who?" in text(third) and "Not kept" not in text(third)
        gone = await http.post(
            "/responses", json={"model": "memo", "input": "y", "previous_response_id": aside["id"]}
        )
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "previous_response_not_found")
        both = {
            "model": "memo",
            "input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        }
        refused = await http.post("/responses", json={**both, "previous_response_id": first["id"]})
        assert (refused.status_code, refused.json()["error"]["param"]) == (400, "input")
        given = await respond(**both)
        assert given["store"] is False and text(given) == "[echo-1] user: a|b"
        for field, value in (("tools", [{"type": "function", "name": "f"}]), ("conversation", "c1")):
            r = await http.post("/responses", json={"model": "memo", "input": "x", field: value})
            assert (r.status_code, r.json()["error"]["param"]) == (400, field)


async def test_run_authentication(redis_server: Any, namespace: str, tmp_path: Path) -> None:
    tokens = tmp_path / "run-tokens.json"
    entries = [{"name": "web", "sha256": hashlib.sha256(b"s3cret").hexdigest(), "flows": ["chat"]}]
    tokens.write_text(json.dumps(entries))
    docs = [chat_doc(), chat_doc("other")]
    async with replica(redis_server, namespace, docs, "s3cret", run_tokens_file=str(tokens)) as http:
        assert (await http.post("/chat/completions", json=ask())).status_code == 200
        models = (await http.get("/models")).json()["data"]
        assert [m["id"] for m in models] == ["chat"]  # only what the caller may run
        hidden = await http.post("/chat/completions", json=ask(model="other"))
        assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "model_not_found")
        assert (await http.get("/models/other")).status_code == 404
        for headers in ({"authorization": "Bearer wrong"}, {"authorization": ""}):
            r = await http.post("/chat/completions", json=ask(), headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "invalid_api_key", r.text
            assert (await http.get("/models", headers=headers)).status_code == 401
