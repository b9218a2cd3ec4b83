"""Streamed replies of the `openai` and `echo` providers, and the LLM / Agent nodes' events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cluster.components.providers.echo import EchoProvider
from cluster.components.providers.openai import OpenAIConfig, OpenAIProvider
from cluster.engine import compile_flow
from cluster.errors import ComponentError, NodeFailed
from tests.agent_support import tool_calls
from tests.egress_support import loopback_runtime
from tests.openai_server import FakeOpenAI, Reply, StreamReply, completion, run_fake_openai, stream_chunks

ENV = {"TEST_LLM_KEY": "sk-test-123"}
RUNTIME = loopback_runtime(ENV, "TEST_LLM_KEY")


def no_deadline() -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeOpenAI) -> AsyncIterator[OpenAIProvider]:
    config = OpenAIConfig(base_url=fake.url, model="gpt-test", backoff_s=0.01, timeout_s=5.0)
    made = OpenAIProvider(config, "sk-test-123", RUNTIME.http_client(timeout=5.0), RUNTIME.redact)
    yield made
    await made.aclose()


async def test_streamed_text_arrives_in_pieces_and_equals_the_reply(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.script = [Reply(body={**completion("Paris is the capital."), "usage": {"prompt_tokens": 7}})]
    pieces: list[str] = []
    reply = await provider.chat([{"role": "user", "content": "?"}], no_deadline, on_delta=pieces.append)
    assert pieces == ["Paris ", "is ", "the ", "capital."]
    assert reply.content == "Paris is the capital." and reply.tool_calls == ()
    assert reply.usage == {"prompt_tokens": 7}
    sent = fake.requests[0].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert fake.requests[0].headers["accept"] == "text/event-stream"


async def test_non_streamed_calls_are_unchanged(fake: FakeOpenAI, provider: OpenAIProvider) -> None:
    fake.script = [Reply(body=completion("plain"))]
    reply = await provider.chat([{"role": "user", "content": "?"}], no_deadline)
    assert reply.content == "plain"
    assert "stream" not in fake.requests[0].body


async def test_tool_call_fragments_are_assembled_by_index(fake: FakeOpenAI, provider: OpenAIProvider) -> None:
    body = tool_calls(("lookup", {"key": "a"}), ("lookup", {"key": "b"}))
    fake.script = [StreamReply(list(stream_chunks(body)))]
    pieces: list[str] = []
    reply = await provider.chat([{"role": "user", "content": "?"}], no_deadline, on_delta=pieces.append)
    assert pieces == [] and reply.content is None
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("lookup", '{"key":"a"}'),
        ("lookup", '{"key":"b"}'),
    ]


async def test_a_stream_broken_after_text_fails_without_retrying(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.script = [StreamReply(list(stream_chunks(completion("one two three four"))), break_after=3)]
    pieces: list[str] = []
    with pytest.raises(ComponentError, match="broke after part of the answer"):
        await provider.chat([{"role": "user", "content": "?"}], no_deadline, on_delta=pieces.append)
    assert pieces == ["one ", "two "] and len(fake.requests) == 1


async def test_a_failure_before_any_text_is_retried(fake: FakeOpenAI, provider: OpenAIProvider) -> None:
    fake.script = [Reply(status=503, body={"error": {"message": "busy"}}), Reply(body=completion("ok"))]
    pieces: list[str] = []
    reply = await provider.chat([{"role": "user", "content": "?"}], no_deadline, on_delta=pieces.append)
    assert reply.content == "ok" and pieces == ["ok"] and len(fake.requests) == 2


async def test_an_error_event_in_the_stream_fails_the_call(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.script = [StreamReply(['{"error": {"message": "model overloaded"}}'])]
    with pytest.raises(ComponentError, match="model overloaded"):
        await provider.chat([{"role": "user", "content": "?"}], no_deadline, on_delta=lambda _: None)


async def test_echo_streams_word_by_word() -> None:
    pieces: list[str] = []
    reply = await EchoProvider("e").chat(
        [{"role": "user", "content": "a b"}], no_deadline, on_delta=pieces.append
    )
    assert pieces == ["[e] ", "a ", "b"] and "".join(pieces) == reply.content


async def test_llm_and_agent_nodes_emit_events_only_when_streamed() -> None:
    doc = {
        "name": "t",
        "nodes": [
            {"id": "q", "type": "Agent", "params": {"system_prompt": "s"}},
            {"id": "calc", "type": "Calculator"},
            {"id": "llm", "type": "LLM", "params": {}},
        ],
        "edges": [
            {"source": "calc", "target": "q", "target_input": "tools"},
            {"source": "q", "target": "llm"},
        ],
    }
    compiled = compile_flow(doc)
    events: list[dict[str, Any]] = []
    result = await compiled.run({"input": "1+2"}, stream=events.append)
    kinds = [(e["event"], e["node"]) for e in events]
    assert kinds[:2] == [("tool_call", "q"), ("tool_result", "q")]
    assert events[1]["outcome"] == "ok" and events[1]["result"] == "3"
    by_node: dict[str, str] = {}
    for e in events:
        if e["event"] == "token":
            by_node[e["node"]] = by_node.get(e["node"], "") + e["delta"]
    assert by_node["llm"] == result.outputs["llm"]
    plain = await compiled.run({"input": "1+2"})  # no sink: nothing emitted, same answer
    assert plain.outputs == result.outputs and len(events) == len(kinds)


async def test_a_node_failure_mid_stream_is_a_node_failure(fake: FakeOpenAI) -> None:
    params = {"provider": "openai", "model": "m", "base_url": fake.url, "api_key_env": None, "retries": 0}
    doc = {"name": "t", "nodes": [{"id": "llm", "type": "LLM", "params": params}], "edges": []}
    compiled = compile_flow(doc, runtime=loopback_runtime({}))
    fake.script = [StreamReply(list(stream_chunks(completion("a b c"))), break_after=2)]
    events: list[dict[str, Any]] = []
    try:
        with pytest.raises(NodeFailed):
            await compiled.run({"prompt": "x"}, stream=events.append)
    finally:
        await compiled.aclose()
    assert [e["delta"] for e in events] == ["a "]


def test_flowfleet_run_stream_prints_tokens_then_the_outputs(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    import orjson

    from control.cli.local import cmd_run

    flow = tmp_path / "t.json"
    flow.write_bytes(orjson.dumps({"name": "t", "nodes": [{"id": "llm", "type": "LLM"}], "edges": []}))
    args = argparse.Namespace(
        file=str(flow),
        input=["prompt=hi there"],
        input_json=None,
        trace=False,
        offline=True,
        timeout=None,
        stream=True,
    )
    assert cmd_run(args) == 0
    out = capsys.readouterr().out
    text, _, outputs = out.partition("\n")
    assert text == "[echo-1] hi there"
    assert orjson.loads(outputs) == {"llm": "[echo-1] hi there"}


async def test_streamed_calls_reuse_one_upstream_connection(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    # The body is read to its end after `data: [DONE]`, so the connection goes back to the pool: no new
    # TCP (and, upstream, TLS) handshake per run.
    fake.script = [Reply(body=completion(f"answer {i}")) for i in range(3)] + [Reply()]
    for i in range(3):
        pieces: list[str] = []
        reply = await provider.chat([{"role": "user", "content": "hi"}], no_deadline, on_delta=pieces.append)
        assert "".join(pieces) == reply.content == f"answer {i}"
    ports = {r.client_port for r in fake.requests}
    assert len(fake.requests) == 3 and len(ports) == 1, ports
