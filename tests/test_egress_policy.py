"""The operator's outbound policy: secret names, settings, the runtime a replica builds, redaction."""

from __future__ import annotations

import logging

import pytest

from cluster.egress.policy import Outbound, OutboundPolicy, parse_secret_names
from cluster.egress.runtime import RedactingFilter, Runtime
from cluster.engine import compile_flow, needed_secrets, run_examples
from cluster.errors import MissingSecret
from cluster.flow.validation import check_and_analyse, validate
from cluster.settings import Settings, SettingsError


def openai_flow(key: str | None = "OPENAI_API_KEY", **params: object) -> dict[str, object]:
    llm = {"provider": "openai", "model": "gpt-4o-mini", "api_key_env": key, **params}
    return {
        "nodes": [
            {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Q: {question}"}},
            {"id": "llm", "type": "LLM", "params": llm},
        ],
        "edges": [{"source": "prompt", "target": "llm"}],
    }


@pytest.mark.parametrize(
    "listed",
    [
        "FLOWFLEET_ADMIN_TOKEN",
        "FLOWFLEET_REDIS_URL",
        "flowfleet_token",
        "REDISCLI_AUTH",
        "OPENAI_API_KEY, REDIS_URL",
    ],
)
def test_flowfleets_own_credentials_can_never_be_listed(listed: str) -> None:
    with pytest.raises(SettingsError, match="can never be given to flows"):
        parse_secret_names(listed)
    with pytest.raises(SettingsError):
        OutboundPolicy.from_settings(Settings.from_env({"FLOWFLEET_FLOW_SECRETS": listed}))


def test_secret_names_and_settings() -> None:
    assert parse_secret_names("OPENAI_API_KEY, HF_TOKEN  GROQ_API_KEY") == {
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "GROQ_API_KEY",
    }
    with pytest.raises(SettingsError, match="not an environment variable name"):
        parse_secret_names("OPENAI-KEY")
    policy = OutboundPolicy.from_settings(Settings.from_env({}))
    assert policy.secrets == {"OPENAI_API_KEY", "HF_TOKEN"} and policy.egress.public
    with pytest.raises(SettingsError, match="FLOWFLEET_EGRESS_ALLOW"):
        OutboundPolicy.build(egress_allow="10.0.0.0/33")
    assert not OutboundPolicy.build(egress_allow="none").egress.public


def test_operator_base_url_is_allowed_without_opening_private_addresses() -> None:
    policy = OutboundPolicy.build(openai_base_url="http://10.0.0.5:4000/v1")
    uses = [
        Outbound("url", "base_url", "http://10.0.0.5:4000/v1"),
        Outbound("url", "base_url", "http://10.0.0.6/v1"),
    ]
    assert [p.code for p in policy.problems(uses, "/nodes/1/params")] == ["egress_denied"]


def test_validation_names_the_secret_at_its_pointer_and_lists_what_is_allowed() -> None:
    problems = validate(openai_flow("AWS_SECRET_ACCESS_KEY"))
    assert [(p.path, p.code) for p in problems] == [("/nodes/1/params/api_key_env", "secret_not_allowed")]
    assert "AWS_SECRET_ACCESS_KEY" in problems[0].message
    assert "lists: HF_TOKEN, OPENAI_API_KEY" in problems[0].message
    allowed = OutboundPolicy.build(flow_secrets="AWS_SECRET_ACCESS_KEY")
    assert validate(openai_flow("AWS_SECRET_ACCESS_KEY"), policy=allowed) == []
    assert validate(openai_flow(None)) == []  # a keyless endpoint names no secret


def test_needed_secrets_and_a_runtime_that_lacks_one() -> None:
    analysis = check_and_analyse(openai_flow())
    assert needed_secrets(analysis) == ["OPENAI_API_KEY"]
    runtime = Runtime.from_environ(OutboundPolicy(), {"OPENAI_API_KEY": ""})
    with pytest.raises(MissingSecret) as info:
        compile_flow(openai_flow(), runtime=runtime)
    assert info.value.code == "missing_secret" and info.value.names == ("OPENAI_API_KEY",)
    assert str(info.value) == "secret OPENAI_API_KEY not set on this replica"


def test_a_runtime_keeps_only_the_listed_secrets() -> None:
    environ = {"OPENAI_API_KEY": "sk-1", "FLOWFLEET_ADMIN_TOKEN": "t", "HOME": "/root", "HF_TOKEN": "hf"}
    runtime = Runtime.from_environ(OutboundPolicy.build(flow_secrets="OPENAI_API_KEY HF_TOKEN"), environ)
    assert dict(runtime.secrets) == {"OPENAI_API_KEY": "sk-1", "HF_TOKEN": "hf"}
    with pytest.raises(MissingSecret):
        runtime.secret("FLOWFLEET_ADMIN_TOKEN")


async def test_examples_run_offline_with_echo_or_recorded_replies() -> None:
    flow = openai_flow(base_url="http://127.0.0.1:9/v1")
    flow["tests"] = [
        {"name": "echo", "inputs": {"question": "hi"}, "expect": {"llm": {"equals": "[gpt-4o-mini] Q: hi"}}},
        {
            "name": "recorded",
            "inputs": {"question": "x"},
            "replies": {"llm": "42"},
            "expect": {"llm": {"equals": "42"}},
        },
    ]
    # Validated against a policy that allows loopback, compiled without a runtime: nothing is called.
    compiled = compile_flow(flow, policy=OutboundPolicy.build(egress_allow="127.0.0.1"))
    assert await run_examples(compiled) == []
    flow["tests"] = [{"name": "bad", "inputs": {"question": "x"}, "replies": {"nope": "42"}}]
    problems = validate(flow, policy=OutboundPolicy.build(egress_allow="127.0.0.1"))
    assert [(p.path, p.code) for p in problems] == [("/tests/0/replies/nope", "unknown_reply_target")]


def test_redacting_filter_cleans_messages_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.redaction")
    redactor = RedactingFilter(["sk-secret-value", "ab"])  # too short values are not redacted
    caplog.handler.addFilter(redactor)
    try:
        logger.warning("key %s in a line", "sk-secret-value")
        try:
            raise RuntimeError("boom sk-secret-value")
        except RuntimeError:
            logger.exception("failed")
    finally:
        caplog.handler.removeFilter(redactor)
    assert "sk-secret-value" not in caplog.text
    assert caplog.text.count("[redacted]") == 3  # the message, the traceback's source line and its text
