"""Shared by the control-plane tests: flow documents, principals and a tokens file."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

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
