"""Shared by the control-plane tests: flow documents, principals and a tokens file."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import free_port

FLOWFLEET = str(Path(sys.executable).with_name("flowfleet"))

ADMIN_TOKEN = "admin-token-0123456789abcdef"
DEPLOYER_TOKEN = "deployer-token-0123456789abcdef"
VIEWER_TOKEN = "viewer-token-0123456789abcdef"

BASE_FLOW: dict[str, Any] = {
    "name": "support_qa",
    "description": "Summarises the question",
    "nodes": [
        {"id": "prompt_1", "type": "PromptTemplate", "params": {"template": "Summarise: {input}"}},
        {"id": "llm_1", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
    ],
    "edges": [{"source": "prompt_1", "target": "llm_1", "source_output": "text", "target_input": "prompt"}],
    "tests": [{"name": "smoke", "inputs": {"input": "hi"}, "expect": {"llm_1": {"contains": "hi"}}}],
}


def flow_doc(
    template: str = "Summarise: {input}", *, name: str | None = "support_qa", **extra: Any
) -> dict[str, Any]:
    """A valid flow; a different `template` gives a different version."""
    doc = copy.deepcopy(BASE_FLOW)
    doc["nodes"][0]["params"]["template"] = template
    if name is None:
        del doc["name"]
    else:
        doc["name"] = name
    doc.update(extra)
    return doc


def invalid_doc() -> dict[str, Any]:
    """Two independent problems: an unknown component type and an edge to a missing node."""
    doc = flow_doc()
    doc["nodes"][1]["type"] = "NoSuchComponent"
    doc["edges"].append({"source": "llm_1", "target": "ghost"})
    return doc


def failing_example_doc() -> dict[str, Any]:
    """Valid, but its own example expects text the flow never produces."""
    return flow_doc(
        tests=[{"name": "smoke", "inputs": {"input": "hi"}, "expect": {"llm_1": {"contains": "zzz"}}}]
    )


def write_tokens_file(directory: Path) -> Path:
    entries = [
        {"name": "ci", "role": "deployer", "sha256": hashlib.sha256(DEPLOYER_TOKEN.encode()).hexdigest()},
        {"name": "grafana", "role": "viewer", "sha256": hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest()},
    ]
    path = directory / "tokens.json"
    path.write_text(json.dumps(entries))
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def base_env() -> dict[str, str]:
    """This process's environment without any FLOWFLEET_* setting, so tests say exactly what they set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLOWFLEET_")}


class ControlProcess:
    """`flowfleet control` on a free loopback port (admin, deployer `ci` and viewer `grafana` tokens)."""

    def __init__(self, redis_url: str, namespace: str, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.namespace = namespace
        self.log_path = directory / "control.log"
        self.env = base_env() | {
            "FLOWFLEET_REDIS_URL": redis_url,
            "FLOWFLEET_NAMESPACE": namespace,
            "FLOWFLEET_ADMIN_TOKEN": ADMIN_TOKEN,
            "FLOWFLEET_TOKENS_FILE": str(write_tokens_file(directory)),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ControlProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [FLOWFLEET, "control", "--port", str(self.port)], env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "control server did not become healthy\n" + self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cli:
    """Runs `flowfleet ...` as a subprocess against one control server."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(
        self,
        *args: str,
        token: str | None = DEPLOYER_TOKEN,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CliResult:
        env = base_env() | (env or {}) | {"FLOWFLEET_URL": self.url}
        if token is not None:
            env["FLOWFLEET_TOKEN"] = token
        proc = subprocess.run(
            [FLOWFLEET, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"
