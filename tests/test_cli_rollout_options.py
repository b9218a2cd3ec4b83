"""The CLI's two-phase options and its report of an aborted rollout, against a scripted control API."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx
import pytest

from control.cli import main
from control.cli.client import ApiClient, RemoteError
from control.cli.remote import cutover_payload, release_line
from control.cli.sync import LocalFlow, sync_one

ABORTED = {
    "error": "rollout_aborted",
    "message": "rollout aborted",
    "details": {
        "flow": "qa",
        "hash": "ab" * 32,
        "rollout": "r1",
        "failures": [
            {"replica": "web-2", "reason": "timeout", "message": "did not report ready"},
            {"replica": "web-3", "reason": "invalid_document", "message": "unknown component 'TestHold'"},
        ],
    },
}


def args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**({"no_prepare": False, "force": False, "prepare_timeout": None} | kw))


def test_only_non_default_options_are_sent() -> None:
    assert cutover_payload(args()) == {}
    assert cutover_payload(args(no_prepare=True, force=True, prepare_timeout=2.5)) == {
        "prepare": False, "force": True, "timeout_s": 2.5,
    }  # fmt: skip


def test_release_line_says_how_the_release_got_there() -> None:
    release = {"action": "activate", "flow": "qa", "hash": "ab" * 32, "generation": 3, "activated_by": "ci"}
    base = "activate qa -> abababababab generation 3 by ci"
    assert release_line(release) == base
    forced = {"mode": "two_phase", "ready": ["a"], "prepare_seconds": 0.02,
              "failures": [{"replica": "b", "reason": "timeout", "message": "late"}]}  # fmt: skip
    assert release_line(release | {"rollout": forced}).splitlines() == [
        base + " (prepared on 1 replica(s) in 0.02s)",
        "  forced past b: timeout: late",
    ]
    assert release_line(release | {"rollout": {"mode": "direct"}}) == base + " (one-phase, no prepare)"


def test_an_aborted_rollout_is_exit_6_with_one_line_per_replica() -> None:
    api = ApiClient(
        "http://control", "t", transport=httpx.MockTransport(lambda r: httpx.Response(409, json=ABORTED))
    )
    with pytest.raises(RemoteError) as caught:
        api.post("/v1/flows/qa/activate", json={"hash": "ab" * 32})
    assert caught.value.exit_code == 6
    assert str(caught.value).splitlines() == [
        f"rollout of qa to {'ab' * 6} aborted, nothing switched: 2 replica(s) not ready "
        "(--force commits anyway)",
        "  web-2: timeout: did not report ready",
        "  web-3: invalid_document: unknown component 'TestHold'",
    ]


def test_sync_passes_the_options_only_with_activate() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(404, json={"error": "flow_not_found", "message": "", "details": {}})
        return httpx.Response(201, json={"hash": "ab" * 32, "created": True, "release": None})

    api = ApiClient("http://control", "t", transport=httpx.MockTransport(handler))
    local = LocalFlow(Path("qa.json"), "qa", b"{}", "ab" * 32)
    sync_one(api, local, activate=True, message=None, options={"prepare": False, "force": True})
    sync_one(api, local, activate=False, message=None, options={"prepare": False})
    posts = [r for r in seen if r.method == "POST"]
    assert posts[0].url.params["prepare"] == "false" and posts[0].url.params["force"] == "true"
    assert "prepare" not in posts[1].url.params


def test_status_wait_needs_a_flow(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWFLEET_TOKEN", "t")
    assert main(["status", "--wait"]) == 2
    assert capsys.readouterr().err.strip() == "flowfleet: status --wait needs a FLOW"
