"""Flows reach only the secrets and addresses the operator gave them: a real control plane, real worker
processes and a local server that plays the attacker (the egress policy lets flows reach it, the worst
case) and records everything it receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.flow.hashing import content_address
from tests.control_support import ADMIN_TOKEN, DEPLOYER_TOKEN, Cli, ControlProcess, bearer
from tests.e2e.fleet import WorkerProcess, wait_all_serve, wait_ready
from tests.openai_server import FakeOpenAI, Reply, run_fake_openai
from tests.redis_server import RedisServer

FLOW = "assistant"
PLANTED_KEY = "sk-planted-5b1f0c9e7a"
LEAKY_BODY = f"stack trace: db password=hunter2-planted; your key {PLANTED_KEY}"
# What the flow must never reach: flowfleet's own credentials and anything not listed.
WORKER_SECRETS = {
    "FLOWFLEET_ADMIN_TOKEN": "admin-planted-9d2c41",
    "FLOWFLEET_TOKEN": "cli-token-planted-77ab",
    "UNLISTED_SECRET": "unlisted-planted-e3f0",
}


def llm_flow(base_url: str, key_env: str = "OPENAI_API_KEY") -> dict[str, Any]:
    return {
        "name": FLOW,
        "nodes": [
            {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Q: {question}"}},
            {
                "id": "llm",
                "type": "LLM",
                "params": {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "base_url": base_url,
                    "api_key_env": key_env,
                    "retries": 0,
                },
            },
        ],
        "edges": [{"source": "prompt", "target": "llm"}],
        "tests": [
            {"name": "offline", "inputs": {"question": "hi"}, "expect": {"llm": {"contains": "Q: hi"}}},
            {
                "name": "recorded",
                "inputs": {"question": "refund?"},
                "replies": {"llm": "Refunds take 5 days."},
                "expect": {"llm": {"equals": "Refunds take 5 days."}},
            },
        ],
    }


@pytest.fixture
async def attacker() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


@pytest.fixture
def control(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[ControlProcess]:
    server = ControlProcess(redis_server.url, namespace, tmp_path)
    # No provider key here: the control plane never needs one. LEGACY_KEY shows `flowfleet check`.
    server.env |= {
        "FLOWFLEET_EGRESS_ALLOW": "127.0.0.1",
        "FLOWFLEET_FLOW_SECRETS": "OPENAI_API_KEY,LEGACY_KEY",
        "FLOWFLEET_GUARD_S": "0",
        "FLOWFLEET_PREPARE_TIMEOUT_S": "5",
    }
    server.env.pop("OPENAI_API_KEY", None)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


def worker(redis_server: RedisServer, namespace: str, replica: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        redis_server.url,
        namespace,
        replica,
        FLOWFLEET_EGRESS_ALLOW="127.0.0.1",
        FLOWFLEET_FLOW_SECRETS="OPENAI_API_KEY,LEGACY_KEY",
        **WORKER_SECRETS,
        **env,
    )


async def publish(control: ControlProcess, http: httpx.AsyncClient, doc: dict[str, Any]) -> httpx.Response:
    return await http.post(
        f"{control.url}/v1/flows/{FLOW}/versions", json=doc, headers=bearer(DEPLOYER_TOKEN)
    )


def received(attacker: FakeOpenAI) -> str:
    return "\n".join(f"{r.headers} {r.body}" for r in attacker.requests)


async def test_publish_refuses_unlisted_secrets_and_calls_out_nowhere(
    control: ControlProcess, http: httpx.AsyncClient, attacker: FakeOpenAI
) -> None:
    for name in ("FLOWFLEET_ADMIN_TOKEN", "FLOWFLEET_REDIS_URL", "UNLISTED_SECRET"):
        reply = await publish(control, http, llm_flow(attacker.url, name))
        assert reply.status_code == 422, reply.text
        body = reply.json()
        assert body["error"] == "invalid_flow"
        assert [(p["path"], p["code"]) for p in body["details"]["problems"]] == [
            ("/nodes/1/params/api_key_env", "secret_not_allowed")
        ]
    metadata = llm_flow("http://169.254.169.254/latest/v1")
    reply = await publish(control, http, metadata)
    assert reply.status_code == 422 and "egress_denied" in reply.text, reply.text
    # A listed secret and an allowed address: stored, its examples run offline (echo and recorded).
    reply = await publish(control, http, llm_flow(attacker.url))
    assert reply.status_code == 201, reply.text
    assert attacker.requests == []
    assert "OPENAI_API_KEY" not in control.env


async def test_a_replica_sends_only_the_listed_secret_and_never_reads_back_the_upstream_body(
    control: ControlProcess,
    http: httpx.AsyncClient,
    attacker: FakeOpenAI,
    redis_server: RedisServer,
    namespace: str,
) -> None:
    replica = worker(redis_server, namespace, "s0", OPENAI_API_KEY=PLANTED_KEY).start()
    try:
        await wait_ready(http, [replica])
        reply = await publish(control, http, llm_flow(attacker.url))
        digest = reply.json()["hash"]
        activated = await http.post(
            f"{control.url}/v1/flows/{FLOW}/activate", json={"hash": digest}, headers=bearer(DEPLOYER_TOKEN)
        )
        assert activated.status_code == 200, activated.text
        await wait_all_serve(http, [replica], FLOW, digest)
        attacker.script = [Reply(500, {"error": {"message": LEAKY_BODY}})]
        run = await http.post(
            f"{replica.url}/v1/flows/{FLOW}/run", json={"inputs": {"question": "hi"}, "trace": True}
        )
        assert run.status_code == 502, run.text
        assert "upstream returned 500" in run.text
        # What the flow's upstream got: the listed key, nothing of flowfleet's own or unlisted ones.
        got = received(attacker)
        assert f"Bearer {PLANTED_KEY}" in got
        for value in [*WORKER_SECRETS.values(), redis_server.url]:
            assert value not in got
        # Nothing of the upstream body or the key reaches a caller: response, trace, metrics, show, audit.
        shown = [run.text, (await http.get(f"{replica.url}/metrics")).text]
        cli = Cli(control.url)
        for args in (("show", FLOW), ("show", FLOW, digest), ("audit",), ("history", FLOW), ("status",)):
            result = await asyncio.to_thread(cli, *args, token=ADMIN_TOKEN)
            assert result.code == 0, result
            shown.append(result.out + result.err)
        for text in shown:
            assert PLANTED_KEY not in text and "hunter2" not in text
        # The replica's log has the upstream's detail for the operator, with the key redacted.
        log = replica.log()
        assert "hunter2-planted" in log and "[redacted]" in log
        assert PLANTED_KEY not in log and PLANTED_KEY not in control.log()
    finally:
        replica.stop()


async def test_a_replica_without_the_secret_refuses_the_version_in_prepare(
    control: ControlProcess,
    http: httpx.AsyncClient,
    attacker: FakeOpenAI,
    redis_server: RedisServer,
    namespace: str,
) -> None:
    with_key = worker(redis_server, namespace, "k0", OPENAI_API_KEY=PLANTED_KEY)
    without = worker(redis_server, namespace, "k1", OPENAI_API_KEY="")  # empty counts as unset
    replicas = [with_key.start(), without.start()]
    try:
        await wait_ready(http, replicas)
        await wait_subscribed(http, control, 2)
        digest = (await publish(control, http, llm_flow(attacker.url))).json()["hash"]
        refused = await asyncio.to_thread(Cli(control.url), "activate", FLOW, digest)
        assert refused.code == 6, refused
        assert "k1" in refused.err and "missing_secret" in refused.err, refused
        assert "OPENAI_API_KEY" in refused.err and PLANTED_KEY not in refused.err
        release = (await http.get(f"{control.url}/v1/flows/{FLOW}", headers=bearer(DEPLOYER_TOKEN))).json()
        assert release["release"] is None  # nothing switched
        assert attacker.requests == []
    finally:
        for replica in replicas:
            replica.stop()


async def wait_subscribed(http: httpx.AsyncClient, control: ControlProcess, count: int) -> None:
    for _ in range(800):
        fleet = (await http.get(f"{control.url}/v1/fleet", headers=bearer(DEPLOYER_TOKEN))).json()
        if sum(1 for r in fleet["replicas"] if r.get("subscribed")) == count:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"replicas never subscribed: {fleet}")


async def test_check_lists_released_versions_the_policy_would_refuse(
    control: ControlProcess, http: httpx.AsyncClient, attacker: FakeOpenAI
) -> None:
    legacy = llm_flow(attacker.url, "LEGACY_KEY")
    reply = await publish(control, http, legacy)
    assert reply.status_code == 201, reply.text
    activated = await http.post(
        f"{control.url}/v1/flows/{FLOW}/activate",
        json={"hash": content_address(legacy)[1], "prepare": False},
        headers=bearer(DEPLOYER_TOKEN),
    )
    assert activated.status_code == 200, activated.text
    cli = Cli(control.url)
    # This shell's policy lists only the default secrets (OPENAI_API_KEY, HF_TOKEN) and allows 127.0.0.1.
    env = {"FLOWFLEET_EGRESS_ALLOW": "127.0.0.1"}
    refused = await asyncio.to_thread(cli, "check", env=env)
    assert refused.code == 1, refused
    assert "secret LEGACY_KEY is not one flows may use" in refused.out
    assert "1 of 1 released version(s) refused" in refused.out
    env["FLOWFLEET_FLOW_SECRETS"] = "OPENAI_API_KEY LEGACY_KEY"
    allowed = await asyncio.to_thread(cli, "check", env=env)
    assert allowed.code == 0 and "0 of 1 released version(s) refused" in allowed.out, allowed
