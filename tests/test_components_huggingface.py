"""HuggingFaceLLM: the operator's HF endpoint and HF_TOKEN against a fake OpenAI-compatible server, its
params and outbound uses, and the design note's flow (flows/design_note.json)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster.components.base import BuildContext
from cluster.components.huggingface import HuggingFaceLLM
from cluster.components.llm import LLM
from cluster.components.providers.echo import EchoProvider
from cluster.egress.policy import HF_DEFAULT_BASE_URL, OutboundPolicy
from cluster.egress.runtime import Runtime
from cluster.engine import compile_flow
from cluster.errors import MissingSecret
from cluster.flow.validation import validate
from cluster.settings import Settings
from control.localcluster.bootstrap import read_examples
from tests.component_helpers import build, problems_of, run
from tests.openai_server import FakeOpenAI, Reply, completion, run_fake_openai

DESIGN_NOTE = Path(__file__).resolve().parent.parent / "flows" / "design_note.json"
TOKEN = "hf_test_token_123"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


def hf_runtime(base_url: str, environ: dict[str, str] | None = None) -> Runtime:
    """A replica's runtime whose operator points HF_BASE_URL at `base_url` (allowed automatically)."""
    policy = OutboundPolicy.from_settings(Settings.from_env({"HF_BASE_URL": base_url}))
    return Runtime.from_environ(policy, {"HF_TOKEN": TOKEN} if environ is None else environ)


async def test_request_goes_to_the_operator_endpoint_with_the_hf_token(fake: FakeOpenAI) -> None:
    fake.script = [Reply(body=completion(f"summary (token {TOKEN})"))]
    params = {"model_name": "Qwen/Qwen2.5-7B-Instruct", "system": "be brief", "max_tokens": 64}
    node = build(HuggingFaceLLM, params, hf_runtime(fake.url))
    assert await run(node, {"prompt": "long text"}) == {"text": "summary (token [redacted])"}
    (request,) = fake.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body == {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "long text"}],
        "max_tokens": 64,
    }
    assert node.params == params  # the node keeps its own params
    await node.aclose()


async def test_a_node_base_url_and_a_keyless_endpoint(fake: FakeOpenAI) -> None:
    runtime = Runtime.from_environ(OutboundPolicy.build(egress_allow="127.0.0.1"), {})
    node = build(HuggingFaceLLM, {"model_name": "tgi", "base_url": fake.url, "api_key_env": None}, runtime)
    assert await run(node, {"prompt": "hi"}) == {"text": "hello"}
    assert "authorization" not in fake.requests[0].headers
    assert node.provider.config.url == f"{fake.url}/chat/completions"
    await node.aclose()


def test_operator_endpoint_default_and_setting() -> None:
    assert Settings().hf_base_url is None
    assert OutboundPolicy().hf_base_url == HF_DEFAULT_BASE_URL == OutboundPolicy.build().hf_base_url
    assert Settings.from_env({}).flow_secrets == "OPENAI_API_KEY,HF_TOKEN"
    assert OutboundPolicy().secrets == {"OPENAI_API_KEY", "HF_TOKEN"}
    # A private TGI set by the operator is reachable without opening private addresses to flows.
    policy = OutboundPolicy.from_settings(Settings.from_env({"HF_BASE_URL": "http://10.0.0.5:8080/v1"}))
    assert policy.hf_base_url == "http://10.0.0.5:8080/v1"
    assert problems_of(HuggingFaceLLM, {"model_name": "m"}, policy) == []
    assert (
        problems_of(HuggingFaceLLM, {"model_name": "m", "base_url": "http://10.0.0.5:8080/v1"}, policy) == []
    )
    denied = problems_of(HuggingFaceLLM, {"model_name": "m", "base_url": "http://10.0.0.6/v1"}, policy)
    assert [(p.path, p.code) for p in denied] == [("/nodes/0/params/base_url", "egress_denied")]
    # `none` lets through the endpoints the operator set, and nothing it did not: not even HF's router.
    assert (
        OutboundPolicy.build(egress_allow="none", hf_base_url="http://10.0.0.5:8080/v1").egress.check_url(
            "http://10.0.0.5:8080/v1"
        )
        is None
    )
    assert OutboundPolicy.build(egress_allow="none").egress.check_url(HF_DEFAULT_BASE_URL) is not None


async def test_offline_it_answers_like_echo_under_its_model_name() -> None:
    assert problems_of(HuggingFaceLLM, {"model_name": "qwen"}, OutboundPolicy()) == []
    node = HuggingFaceLLM("llm", {"model_name": "qwen"}, BuildContext(flow_name="f"))  # no runtime
    assert isinstance(node.provider, EchoProvider)
    assert await run(node, {"prompt": "hi", "system": "s"}) == {"text": "[qwen] (system: s) hi"}
    assert HuggingFaceLLM.ports({"model_name": "q"}) == LLM.ports({})


@pytest.mark.parametrize(
    ("params", "path", "code"),
    [
        ({}, "/nodes/0/params", "invalid_params"),
        ({"model_name": "m", "model": "m"}, "/nodes/0/params", "invalid_params"),
        ({"model_name": "m", "provider": "openai"}, "/nodes/0/params", "invalid_params"),
        ({"model_name": "m", "base_url": "ftp://x"}, "/nodes/0/params/base_url", "invalid_params"),
        (
            {"model_name": "m", "api_key_env": "AWS_SECRET"},
            "/nodes/0/params/api_key_env",
            "secret_not_allowed",
        ),
        ({"model_name": "m", "base_url": "http://127.0.0.1/v1"}, "/nodes/0/params/base_url", "egress_denied"),
    ],
)
def test_bad_params(params: dict[str, object], path: str, code: str) -> None:
    problems = problems_of(HuggingFaceLLM, params, OutboundPolicy())
    assert [(p.path, p.code) for p in problems] == [(path, code)]


def test_outbound_uses() -> None:
    assert [u.value for u in HuggingFaceLLM.outbound({"model_name": "m"})] == ["HF_TOKEN"]
    assert HuggingFaceLLM.outbound({"model_name": "m", "api_key_env": None}) == ()


async def test_the_design_note_flow_validates_and_runs_offline() -> None:
    document = json.loads(DESIGN_NOTE.read_text())
    assert validate(document) == []
    assert validate(document, policy=OutboundPolicy.from_settings(Settings.from_env({}))) == []
    result = await compile_flow(document).run({"input": "今天的会议"})
    assert result.outputs == {"llm_1": "[qwen] 请总结以下内容今天的会议"}


def test_a_replica_without_hf_token_refuses_the_design_note() -> None:
    document = json.loads(DESIGN_NOTE.read_text())
    with pytest.raises(MissingSecret) as info:
        compile_flow(document, runtime=Runtime.from_environ(OutboundPolicy(), {"OPENAI_API_KEY": "k"}))
    assert info.value.names == ("HF_TOKEN",)
    # Built directly (no compile-time check first), the provider asks the runtime and is refused too.
    with pytest.raises(MissingSecret):
        runtime = Runtime.from_environ(OutboundPolicy(), {})
        HuggingFaceLLM("llm", {"model_name": "qwen"}, BuildContext(flow_name="f", runtime=runtime))


def test_make_up_leaves_the_design_note_for_replicas_that_have_hf_token() -> None:
    """`flowfleet up` activates the file named after each flow, unless the flow needs a secret: its
    replicas would refuse the version (missing_secret) and the start would abort."""
    examples = {e.path.name: e for e in read_examples(DESIGN_NOTE.parent)}
    note = examples["design_note.json"]
    assert note.name == "design_note" and note.secrets == ("HF_TOKEN",) and not note.active
    assert examples["support_qa.json"].active and examples["support_qa.json"].secrets == ()
