"""The `openai` provider against a real OpenAI-compatible server on loopback (uvicorn + Starlette)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from cluster.components.providers.chat import ToolCall, parse_reply
from cluster.components.providers.openai import OpenAIConfig, OpenAIProvider, retry_after_seconds
from cluster.engine import compile_flow
from cluster.errors import ComponentError, MissingSecret, NodeFailed
from tests.egress_support import loopback_runtime
from tests.openai_server import HANG, FakeOpenAI, Reply, completion, run_fake_openai

ENV = {"TEST_LLM_KEY": "sk-test-123"}
RUNTIME = loopback_runtime(ENV, "TEST_LLM_KEY")
MakeProvider = Callable[..., OpenAIProvider]


def no_deadline() -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


@pytest.fixture
async def make_provider(fake: FakeOpenAI) -> AsyncIterator[MakeProvider]:
    providers: list[OpenAIProvider] = []

    def make(key: str | None = "sk-test-123", **overrides: Any) -> OpenAIProvider:
        settings: dict[str, Any] = {
            "base_url": fake.url,
            "model": "gpt-test",
            "backoff_s": 0.01,
            "timeout_s": 5.0,
        }
        settings.update(overrides)
        config = OpenAIConfig(**settings)
        provider = OpenAIProvider(config, key, RUNTIME.http_client(timeout=config.timeout_s), RUNTIME.redact)
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


async def test_success_sends_model_messages_and_bearer_key(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    fake.script = [Reply(body=completion("Hi there"))]
    provider = make_provider(temperature=0.2, max_tokens=50)
    assert await provider.complete("Hello?", "Be kind.", no_deadline) == "Hi there"
    (request,) = fake.requests
    assert request.headers["authorization"] == "Bearer sk-test-123"
    assert request.body == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello?"}],
        "temperature": 0.2,
        "max_tokens": 50,
    }


async def test_client_is_reused_across_requests(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    provider = make_provider()
    client = provider._client
    for _ in range(3):
        assert await provider.complete("p", None, no_deadline) == "hello"
    assert provider._client is client and len(fake.requests) == 3
    assert fake.requests[0].body["messages"] == [{"role": "user", "content": "p"}]
    assert "temperature" not in fake.requests[0].body


async def test_429_then_success_honours_retry_after(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    fake.script = [Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.2"}), Reply()]
    started = time.monotonic()
    assert await make_provider().complete("p", None, no_deadline) == "hello"
    assert len(fake.requests) == 2
    assert time.monotonic() - started >= 0.2


async def test_500_retries_then_fails(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    fake.script = [Reply(500, {"error": {"message": "upstream exploded"}})]
    with pytest.raises(
        ComponentError, match=r"^failed after 3 attempt\(s\); last error: upstream returned 500$"
    ):
        await make_provider(retries=2).complete("p", None, no_deadline)
    assert len(fake.requests) == 3


async def test_5xx_then_success(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    fake.script = [Reply(503, "overloaded"), Reply(502, ""), Reply(body=completion("finally"))]
    assert await make_provider(retries=3).complete("p", None, no_deadline) == "finally"
    assert len(fake.requests) == 3


async def test_non_retryable_status_fails_at_once(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    fake.script = [Reply(401, {"error": {"message": "Incorrect API key provided"}})]
    with pytest.raises(ComponentError, match="^upstream returned 401$") as info:
        await make_provider(retries=3).complete("p", None, no_deadline)
    assert info.value.details["status"] == 401
    assert len(fake.requests) == 1


async def test_timeout(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    fake.script = [HANG]
    with pytest.raises(ComponentError, match=r"timed out after 0.2s"):
        await make_provider(timeout_s=0.2, retries=1).complete("p", None, no_deadline)
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("<html>oops</html>", "body is not JSON"),
        ({"choices": []}, r"no choices\[0\].message"),
        ({"unexpected": True}, r"no choices\[0\].message"),
        ({"choices": [{"message": {"content": None}}]}, "message content is null, not text"),
        ({"choices": [{"message": {"content": 3}}]}, "message content is not text"),
        ({"choices": [{"message": {"content": None, "tool_calls": "x"}}]}, "tool_calls is not a list"),
    ],
)
async def test_malformed_body(fake: FakeOpenAI, make_provider: MakeProvider, body: Any, why: str) -> None:
    fake.script = [Reply(200, body)]
    with pytest.raises(ComponentError, match=f"malformed response: {why}"):
        await make_provider().complete("p", None, no_deadline)
    assert len(fake.requests) == 1  # a malformed success is not retried


def test_missing_key_fails_the_compile_before_any_request(fake: FakeOpenAI) -> None:
    with pytest.raises(MissingSecret, match="secret TEST_LLM_KEY not set") as info:
        compile_flow(llm_document(fake.url), runtime=loopback_runtime({}, "TEST_LLM_KEY"))
    assert info.value.code == "missing_secret"
    assert fake.requests == []


async def test_keyless_endpoint_sends_no_authorization(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    await make_provider(key=None).complete("p", None, no_deadline)
    assert "authorization" not in fake.requests[0].headers


async def test_retry_after_beyond_the_deadline_gives_up_at_once(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    fake.script = [Reply(429, {"error": "rate limited"}, {"Retry-After": "30"})]
    deadline = time.monotonic() + 2.0
    started = time.monotonic()
    with pytest.raises(
        ComponentError, match="would pass the run deadline; last error: upstream returned 429$"
    ):
        await make_provider(retries=5).complete("p", None, lambda: deadline - time.monotonic())
    assert time.monotonic() - started < 1.5
    assert len(fake.requests) == 1


async def test_request_timeout_is_capped_by_the_deadline(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    fake.script = [HANG]
    deadline = time.monotonic() + 0.3
    with pytest.raises(ComponentError):
        await make_provider(timeout_s=60, retries=5).complete("p", None, lambda: deadline - time.monotonic())
    assert time.monotonic() < deadline + 1.0


async def test_spent_deadline_sends_nothing(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    with pytest.raises(ComponentError, match=r"run deadline reached after 0 attempt\(s\)$"):
        await make_provider().complete("p", None, lambda: 0.0)
    assert fake.requests == []


async def test_connection_refused_is_retried_then_reported(make_provider: MakeProvider) -> None:
    provider = make_provider(base_url="http://127.0.0.1:9/v1", retries=1)
    with pytest.raises(ComponentError, match="connection failed"):
        await provider.complete("p", None, no_deadline)


def llm_document(base_url: str) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Capital of {country}?"}},
            {
                "id": "llm",
                "type": "LLM",
                "params": {
                    "provider": "openai",
                    "model": "m",
                    "base_url": base_url,
                    "api_key_env": "TEST_LLM_KEY",
                    "system": "Answer in one word.",
                    "backoff_s": 0.01,
                },
            },
        ],
        "edges": [{"source": "prompt", "target": "llm"}],
    }


async def test_llm_node_in_a_compiled_flow(fake: FakeOpenAI) -> None:
    fake.script = [Reply(body=completion("Paris")), Reply(400, {"error": {"message": "context too long"}})]
    flow = compile_flow(llm_document(fake.url), runtime=RUNTIME)
    try:
        assert (await flow.run({"country": "France"})).outputs == {"llm": "Paris"}
        assert fake.requests[0].body["messages"][1] == {"role": "user", "content": "Capital of France?"}
        with pytest.raises(NodeFailed, match="upstream returned 400$") as info:
            await flow.run({"country": "France"})
        assert info.value.node_id == "llm"
        assert "context too long" not in str(info.value)
    finally:
        await flow.aclose()
    llm = next(step.component for step in flow.steps if step.node_id == "llm")
    assert llm.provider._client.is_closed


def test_retry_after_parsing() -> None:
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_seconds("garbage") is None


def test_parse_reply_reads_text_tool_calls_and_usage() -> None:
    assert parse_reply(b'{"choices": [{"message": {"content": "x"}}]}').content == "x"
    body = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "calc", "arguments": '{"a": 1}'},
                        },
                        {"function": {"name": "now", "arguments": {"tz": "UTC"}}},
                    ],
                }
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
    }
    reply = parse_reply(orjson.dumps(body))
    assert reply.tool_calls == (ToolCall("c1", "calc", '{"a": 1}'), ToolCall("call_1", "now", '{"tz":"UTC"}'))
    assert reply.usage == {"prompt_tokens": 9, "completion_tokens": 4}
    assert reply.as_message()["tool_calls"][0]["function"]["name"] == "calc"
    with pytest.raises(ComponentError):
        parse_reply(b'{"choices": "nope"}')


async def test_upstream_body_and_key_never_reach_the_caller(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream answering 500 with a secret-looking body (and the key itself): the caller's error
    carries a status only; the replica's log carries the body with the key redacted."""
    leak = "internal-db-password=hunter2 sk-test-123"
    fake.script = [Reply(500, {"error": {"message": leak}}), Reply(500, leak)]
    flow = compile_flow(llm_document(fake.url), runtime=loopback_runtime(ENV, "TEST_LLM_KEY"))
    try:
        with caplog.at_level("INFO"), pytest.raises(NodeFailed) as info:
            await flow.run({"country": "France"})
    finally:
        await flow.aclose()
    shown = f"{info.value} {info.value.details}"
    assert "upstream returned 500" in shown
    for secret in ("hunter2", "sk-test-123", "internal-db"):
        assert secret not in shown
    logged = caplog.text
    assert "hunter2" in logged  # the detail is in the replica's log ...
    assert "sk-test-123" not in logged  # ... without the key
    assert "[redacted]" in logged


async def test_a_reply_that_echoes_the_key_is_redacted(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    fake.script = [Reply(body=completion("your key is sk-test-123"))]
    assert await make_provider().complete("p", None, no_deadline) == "your key is [redacted]"
