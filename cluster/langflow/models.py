"""LangFlow's language model components (`LanguageModelComponent`, `OpenAIModel`) as flowfleet `LLM` nodes.

Field mapping: `model_name` (or the newer `model` picker) → `model` (an empty one, as in LangFlow 1.13's
starter projects, becomes the converter's default model with a warning), `temperature`, `max_tokens`,
`system_message` → `system` (or the `system` port when an edge feeds it), `openai_api_base` →
`base_url`, `timeout` → `timeout_s`, `max_retries` → `retries`, and `api_key` → `api_key_env`: the
*name* of the environment variable holding the key. An API key itself is never copied: LangFlow keeps
it in a global variable (`load_from_db`), whose name we keep; a key typed in as text is dropped with a
warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cluster.langflow.export import LfNode
from cluster.langflow.nodes import Mapped, NodeContext, Unsupported, fixed_prompt, text_field

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_URL = re.compile(r"https?://\S+\Z")
# The bounds of flowfleet's LLM params; LangFlow allows more (a 700 s timeout by default).
MAX_TIMEOUT_S = 600.0
MAX_RETRIES = 10
MAX_TEMPERATURE = 2.0


def _number(value: Any) -> float | None:
    """LangFlow stores numbers as numbers or, after some edits, as strings; "" means unset."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _model(node: LfNode) -> tuple[str, str | None]:
    """(model name, provider name or None) from `model_name`/`provider` or the newer `model` list."""
    provider = text_field(node, "provider") or None
    name = text_field(node, "model_name")
    picked = node.fields.get("model")
    if not name and isinstance(picked, str):
        name = picked
    elif not name and isinstance(picked, list) and picked and isinstance(picked[0], Mapping):
        # LangFlow 1.6+: a list of {"name": "gpt-4o-mini", "provider": "OpenAI", ...} entries.
        entry_name, entry_provider = picked[0].get("name"), picked[0].get("provider")
        name = entry_name if isinstance(entry_name, str) else ""
        provider = entry_provider if isinstance(entry_provider, str) and entry_provider else provider
    return name.strip(), provider


def _api_key_env(node: LfNode, warnings: list[str]) -> str | None:
    value = text_field(node, "api_key").strip()
    if not value:
        return None
    if "api_key" in node.from_variables and _ENV_NAME.match(value):
        return value
    # A key typed in as text: dropping it is the point, so say where the key must come from instead.
    warnings.append(
        f"node {node.id}: the API key typed into LangFlow was not copied; "
        f"set the environment variable {DEFAULT_KEY_ENV} on the replicas"
    )
    return None


def _tuning(node: LfNode, params: dict[str, Any], warnings: list[str]) -> None:
    temperature = _number(node.fields.get("temperature"))
    if temperature is not None:
        if 0 <= temperature <= MAX_TEMPERATURE:
            params["temperature"] = temperature
        else:
            warnings.append(f"node {node.id}: temperature {temperature} is out of range; left unset")
    max_tokens = _number(node.fields.get("max_tokens"))
    # LangFlow's 0 means "no limit", which is flowfleet's default too.
    if max_tokens is not None and max_tokens >= 1:
        params["max_tokens"] = int(max_tokens)
    timeout = _number(node.fields.get("timeout"))
    if timeout is not None and timeout > 0:
        params["timeout_s"] = min(timeout, MAX_TIMEOUT_S)
    retries = _number(node.fields.get("max_retries"))
    if retries is not None and retries >= 0:
        params["retries"] = min(int(retries), MAX_RETRIES)
    base_url = text_field(node, "openai_api_base").strip()
    if base_url:
        if _URL.match(base_url):
            params["base_url"] = base_url
        else:
            warnings.append(f"node {node.id}: API base {base_url!r} is not an http(s) URL; left unset")
    for flag in ("json_mode", "stream"):
        if node.fields.get(flag) is True:
            warnings.append(f"node {node.id}: {flag} is not supported and was ignored")
    if node.fields.get("model_kwargs"):
        warnings.append(f"node {node.id}: model_kwargs are not supported and were ignored")


def model_params(
    node: LfNode, ctx: NodeContext, provider: str | None = None
) -> tuple[dict[str, Any], list[str]] | Unsupported:
    """The model params shared by LLM and Agent (`provider`, `model`, `api_key_env`, tuning), and the
    warnings; Unsupported for a provider other than OpenAI (unless converting to echo). No model set
    means `ctx.model` for openai (with a warning naming the node and the model) and echo-1 for echo.

    `provider` is the LangFlow provider when the caller knows it from another field (e.g. the Agent's
    older `agent_llm`); the `model` picker's provider wins over it.
    """
    model, picked_provider = _model(node)
    provider = picked_provider or provider
    if provider is None and node.type == "OpenAIModel":
        provider = "OpenAI"
    if ctx.provider != "echo" and provider not in (None, "OpenAI"):
        return Unsupported(
            f"model provider {provider!r} is not supported (flowfleet speaks the OpenAI chat API); "
            "convert with provider 'echo' for offline runs"
        )
    warnings: list[str] = []
    if not model and ctx.provider == "echo":
        model = "echo-1"
    elif not model:
        # LangFlow leaves the model for the user to pick when the flow is opened: pick `ctx.model`, aloud.
        model = ctx.model
        warnings.append(
            f"node {node.id}: no model is set (LangFlow asks when the flow is opened); using {model!r}"
        )
    params: dict[str, Any] = {"provider": ctx.provider, "model": model}
    if ctx.provider == "openai":
        key_env = _api_key_env(node, warnings)
        if key_env is not None:
            params["api_key_env"] = key_env
    _tuning(node, params, warnings)
    return params, warnings


def convert_model(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    result = model_params(node, ctx)
    if isinstance(result, Unsupported):
        return result
    params, warnings = result
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    system = text_field(node, "system_message")
    if system and "system_message" not in ctx.connected:
        params["system"] = system
    prompt = text_field(node, "input_value")
    if prompt and "input_value" not in ctx.connected:
        helper, edge = fixed_prompt(ctx.node_id, prompt, "prompt")
        nodes.append(helper)
        edges.append(edge)
    main = {"id": ctx.node_id, "type": "LLM", "params": params}
    return Mapped(
        nodes=(main, *nodes),
        inputs={"input_value": "prompt", "system_message": "system"},
        # `model_output` hands a LangChain model object to another component; it has no equivalent.
        outputs={"text_output": "text"},
        default_output="text",
        edges=tuple(edges),
        warnings=tuple(warnings),
    )


MODEL_TYPES = ("LanguageModelComponent", "OpenAIModel")


# LangFlow's output_schema types (the editor's table) as JSON Schema types.
_SCHEMA_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "dict": "object"}
_SCHEMA_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def _flag(value: Any) -> bool:
    """LangFlow's table writes booleans as booleans or as the strings "True" / "False"."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def output_schema(rows: Any) -> dict[str, Any] | str:
    """The JSON Schema of one object from LangFlow's `output_schema` table, or why it cannot be.

    >>> output_schema([{"name": "n", "type": "int", "multiple": "True", "description": "counts"}])
    {'type': 'object', 'properties': {'n': {'type': 'array', 'items': {'type': 'integer'}, \
'description': 'counts'}}, 'required': ['n'], 'additionalProperties': False}
    """
    if not isinstance(rows, list) or not rows:
        return "output_schema is empty"
    properties: dict[str, Any] = {}
    for position, row in enumerate(rows):
        name = row.get("name") if isinstance(row, Mapping) else None
        if not isinstance(name, str) or not name.strip():
            return f"output_schema row {position} has no name"
        kind = row.get("type") or "str"
        if kind not in _SCHEMA_TYPES:
            return f"output_schema field {name!r} has type {kind!r}; known: {', '.join(_SCHEMA_TYPES)}"
        schema: dict[str, Any] = {"type": _SCHEMA_TYPES[kind]}
        if _flag(row.get("multiple")):
            schema = {"type": "array", "items": schema}
        description = row.get("description")
        if isinstance(description, str) and description.strip():
            schema["description"] = description.strip()
        properties[name.strip()] = schema
    # Every field required and no others: what OpenAI's strict structured outputs ask for.
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def convert_structured_output(node: LfNode, ctx: NodeContext) -> Mapped | Unsupported:
    """StructuredOutput → StructuredOutput: `output_schema` becomes a JSON Schema of one object,
    `system_prompt` the `system` param (or port), `schema_name` kept, the model as for LLM.

    LangFlow asks the model for a list of such objects and outputs the first (`structured_output`)
    or all of them as a table (`dataframe_output`); flowfleet asks for one object, which both
    outputs give (a Parser downstream formats it as a one-row table).
    """
    schema = output_schema(node.fields.get("output_schema"))
    if isinstance(schema, str):
        return Unsupported(schema)
    result = model_params(node, ctx)
    if isinstance(result, Unsupported):
        return result
    params, warnings = result
    params["schema"] = schema
    name = _SCHEMA_NAME_BAD.sub("_", text_field(node, "schema_name")).strip("_")[:64]
    if name:
        params["schema_name"] = name
    system = text_field(node, "system_prompt")
    if system.strip() and "system_prompt" not in ctx.connected:
        params["system"] = system
    warnings.append(
        f"node {node.id}: LangFlow extracts a list of objects; flowfleet's StructuredOutput extracts "
        "one object that fits the schema"
    )
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    prompt = text_field(node, "input_value")
    if prompt and "input_value" not in ctx.connected:
        helper, edge = fixed_prompt(ctx.node_id, prompt, "input")
        nodes.append(helper)
        edges.append(edge)
    main = {"id": ctx.node_id, "type": "StructuredOutput", "params": params}
    return Mapped(
        nodes=(main, *nodes),
        inputs={"input_value": "input", "system_prompt": "system"},
        outputs={"structured_output": "data", "dataframe_output": "data"},
        default_output="data",
        edges=tuple(edges),
        warnings=tuple(warnings),
    )
