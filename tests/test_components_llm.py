"""LLM with the echo provider, its params and ports; the openai provider has its own test file."""

from __future__ import annotations

import pytest

from cluster.components.base import BuildContext
from cluster.components.llm import LLM
from cluster.components.providers.echo import EchoProvider
from cluster.components.providers.openai import OpenAIProvider
from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime
from tests.component_helpers import build, problems_of, run
from tests.egress_support import loopback_runtime


def test_ports() -> None:
    ports = LLM.ports({})
    assert ports.inputs == ("prompt", "system")
    assert ports.required == {"prompt"}
    assert ports.default_input == "prompt"
    assert ports.outputs == ("text",) and ports.default_output == "text"


async def test_echo_shows_model_and_prompt() -> None:
    component = build(LLM, {"provider": "echo", "model": "tiny-2"})
    assert isinstance(component.provider, EchoProvider)
    assert await run(component, {"prompt": "hello"}) == {"text": "[tiny-2] hello"}


async def test_echo_defaults() -> None:
    component = build(LLM, {})
    assert await run(component, {"prompt": "x"}) == {"text": "[echo-1] x"}
    await component.aclose()  # nothing to release, and harmless


async def test_system_from_params() -> None:
    component = build(LLM, {"system": "be brief"})
    assert await run(component, {"prompt": "p"}) == {"text": "[echo-1] (system: be brief) p"}
    # Fixed in the params, the system message has no port, so neither an edge nor a run input can replace it.
    assert LLM.ports({"system": "be brief"}).inputs == ("prompt",)


async def test_system_from_input() -> None:
    component = build(LLM, {})
    assert await run(component, {"prompt": "p", "system": "be loud"}) == {
        "text": "[echo-1] (system: be loud) p"
    }
    assert await run(component, {"prompt": "p", "system": None}) == {"text": "[echo-1] p"}


async def test_non_text_prompt_is_rendered_as_json() -> None:
    assert await run(build(LLM, {}), {"prompt": {"q": 1}}) == {"text": '[echo-1] {"q":1}'}


async def test_openai_provider_is_built_once_and_closed() -> None:
    params = {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    component = build(LLM, params, loopback_runtime({"OPENAI_API_KEY": "k"}))
    assert isinstance(component.provider, OpenAIProvider)
    assert component.provider.config.model == "m"
    assert component.provider.config.url == "http://127.0.0.1:9/v1/chat/completions"
    await component.aclose()
    assert component.provider._client.is_closed


def test_openai_needs_a_model() -> None:
    problems = problems_of(LLM, {"provider": "openai"})
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/model", "missing_param")]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"provider": "claude"}, "/nodes/0/params/provider"),
        ({"provider": "openai", "model": "m", "base_url": "ftp://x"}, "/nodes/0/params/base_url"),
        ({"provider": "openai", "model": "m", "api_key_env": "sk-live-123"}, "/nodes/0/params/api_key_env"),
        ({"provider": "openai", "model": "m", "api_key": "sk-123"}, "/nodes/0/params"),
        ({"temperature": 3}, "/nodes/0/params/temperature"),
        ({"retries": 11}, "/nodes/0/params/retries"),
        ({"timeout_s": 0}, "/nodes/0/params/timeout_s"),
    ],
)
def test_bad_params(params: dict[str, object], path: str) -> None:
    problems = problems_of(LLM, params)
    assert [(p.path, p.code) for p in problems] == [(path, "invalid_params")]


async def test_without_a_runtime_an_openai_node_answers_offline() -> None:
    component = build(LLM, {"provider": "openai", "model": "gpt-4o-mini", "system": "be brief"})
    assert isinstance(component.provider, EchoProvider)
    assert await run(component, {"prompt": "hi"}) == {"text": "[gpt-4o-mini] (system: be brief) hi"}


async def test_operator_base_url_is_used_when_a_node_sets_none() -> None:
    policy = OutboundPolicy.build(openai_base_url="http://10.1.2.3:4000/v1")
    runtime = Runtime.from_environ(policy, {"OPENAI_API_KEY": "k"})
    component = build(LLM, {"provider": "openai", "model": "m"}, runtime)
    assert component.provider.config.url == "http://10.1.2.3:4000/v1/chat/completions"
    await component.aclose()


def test_secrets_outside_the_operator_list_are_refused() -> None:
    params = {"provider": "openai", "model": "m", "api_key_env": "FLOWFLEET_ADMIN_TOKEN"}
    problems = problems_of(LLM, params, OutboundPolicy())
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/api_key_env", "secret_not_allowed")]
    assert "FLOWFLEET_FLOW_SECRETS lists: HF_TOKEN, OPENAI_API_KEY" in problems[0].message
    assert problems_of(LLM, {**params, "api_key_env": "OPENAI_API_KEY"}, OutboundPolicy()) == []
    # An echo node names no secret, whatever its params say.
    assert problems_of(LLM, {"provider": "echo"}, OutboundPolicy()) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://2130706433/v1",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/v1",
        "http://[::ffff:127.0.0.1]/v1",
    ],
)
def test_literal_private_base_urls_are_refused_by_the_default_policy(url: str) -> None:
    problems = problems_of(LLM, {"provider": "openai", "model": "m", "base_url": url}, OutboundPolicy())
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/base_url", "egress_denied")]


def test_api_key_env_may_be_null_for_keyless_endpoints() -> None:
    assert problems_of(LLM, {"provider": "openai", "model": "m", "api_key_env": None}) == []


async def test_a_node_reports_the_tokens_its_provider_used() -> None:
    from dataclasses import replace

    from tests.agent_support import RecordingMeter
    from tests.openai_server import Reply, completion, run_fake_openai

    meter = RecordingMeter()
    async with run_fake_openai() as fake:
        body = {**completion("hi"), "usage": {"prompt_tokens": 7, "completion_tokens": 2}}
        fake.script = [Reply(body=body)]
        runtime = replace(loopback_runtime({"OPENAI_API_KEY": "k"}), meter=meter)
        params = {"provider": "openai", "model": "m", "base_url": fake.url}
        component = LLM("node", params, BuildContext(flow_name="f", runtime=runtime))
        assert await run(component, {"prompt": "p"}) == {"text": "hi"}
        await component.aclose()
    assert meter.token_counts == [("f", "m", "prompt", 7), ("f", "m", "completion", 2)]
