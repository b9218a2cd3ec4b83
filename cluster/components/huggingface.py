"""HuggingFaceLLM: an LLM over Hugging Face's OpenAI-compatible endpoints.

    {"id": "llm", "type": "HuggingFaceLLM", "params": {"model_name": "meta-llama/Llama-3.1-8B-Instruct"}}

The Inference Providers router (`https://router.huggingface.co/v1`) or a self-hosted TGI / vLLM: the
operator's HF_BASE_URL (OutboundPolicy.hf_base_url, allowed automatically) unless the node sets
`base_url`. The key is the secret `HF_TOKEN` unless `api_key_env` names another (or null). Everything
else — ports (`prompt`, `system` → `text`), the provider, retries, redaction, answering offline like
`echo` under the model's name in dry runs, an example's recorded reply — is the LLM component's: a
node stands for an `openai` LLM node (`llm_params`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext
from cluster.components.llm import LLM
from cluster.egress.policy import HF_DEFAULT_BASE_URL, Outbound
from cluster.errors import Problem

HF_TOKEN = "HF_TOKEN"
_LLM_PROPERTIES: dict[str, Any] = LLM.params_schema["properties"]
_SHARED = ("system", "temperature", "max_tokens", "timeout_s", "retries", "backoff_s", "description")


def llm_params(params: Mapping[str, Any], build: BuildContext) -> dict[str, Any]:
    """The params of the `openai` LLM node a HuggingFaceLLM node stands for.

    >>> params = llm_params({"model_name": "qwen", "temperature": 0.1}, BuildContext(flow_name="f"))
    >>> params["model"], params["api_key_env"], params["base_url"], params["temperature"]
    ('qwen', 'HF_TOKEN', 'https://router.huggingface.co/v1', 0.1)
    """
    operator_url = build.runtime.policy.hf_base_url if build.runtime is not None else HF_DEFAULT_BASE_URL
    return {
        **{name: params[name] for name in _SHARED if name in params},
        "provider": "openai",
        "model": params["model_name"],
        "api_key_env": params.get("api_key_env", HF_TOKEN),
        "base_url": params.get("base_url") or operator_url,
    }


class HuggingFaceLLM(LLM):
    type_name = "HuggingFaceLLM"
    description = (
        "Asks a model served by Hugging Face (Inference Providers, TGI, vLLM): inputs `prompt` (default) "
        "and `system`; output `text`."
    )
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model_name"],
        "properties": {
            "model_name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "model id, e.g. Qwen/Qwen2.5-7B-Instruct (a `:provider` suffix is fine)",
            },
            "base_url": {
                **_LLM_PROPERTIES["base_url"],
                "description": f"default: the operator's HF_BASE_URL ({HF_DEFAULT_BASE_URL} unless set)",
            },
            "api_key_env": {**_LLM_PROPERTIES["api_key_env"], "default": HF_TOKEN},
            **{name: _LLM_PROPERTIES[name] for name in _SHARED},
        },
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, llm_params(params, build), build)
        self.params = params

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        return []  # the schema requires model_name, the one thing LLM checks beyond its schema

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        uses = []
        key_name = params.get("api_key_env", HF_TOKEN)
        if key_name:
            uses.append(Outbound("secret", "api_key_env", key_name))
        if "base_url" in params:
            uses.append(Outbound("url", "base_url", params["base_url"]))
        return tuple(uses)
