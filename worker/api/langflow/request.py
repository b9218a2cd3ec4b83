"""LangFlow's run request (its `SimplifiedAPIRequest`), read from the body as FastAPI and pydantic read it.

    {"input_value": "hi", "input_type": "chat", "output_type": "chat", "output_component": "",
     "tweaks": {"ChatInput-abc12": {"input_value": "hi"}}, "session_id": "s1", "user_id": "u1"}

Every field is optional (null is the default) and other fields are ignored, as LangFlow ignores them. A
field of the wrong type is a 422 whose `detail` lists each problem as FastAPI does:

>>> parse_request({"input_type": "voice"})
Traceback (most recent call last):
...
worker.api.langflow.request.InvalidRequest: body.input_type: Input should be 'chat', 'text' or 'any'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cluster.errors import BadRequest, FlowfleetError

INPUT_TYPES = ("chat", "text", "any")
OUTPUT_TYPES = ("chat", "text", "any", "debug")
# What pydantic reads as a boolean in a query string (case-insensitive).
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


@dataclass(frozen=True)
class LangflowRequest:
    """One run as LangFlow's caller asked for it. `webhook`: the input is a webhook's body (a JSON body
    reaches an input that takes any value decoded, as LangFlow's Webhook component decodes it)."""

    input_value: str | None = None
    input_type: str = "chat"
    output_type: str = "chat"
    output_component: str = ""
    tweaks: Mapping[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    user_id: str | None = None
    webhook: bool = False


class InvalidRequest(FlowfleetError):
    """A request FastAPI would refuse with 422: `errors` in its `detail` format."""

    code = "invalid_request"
    http_status = 422

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0]
        super().__init__(f"{'.'.join(map(str, first['loc']))}: {first['msg']}", errors=errors)
        self.errors = errors


def _quoted(options: tuple[str, ...]) -> str:
    """pydantic's wording of a literal's options: `'a', 'b' or 'c'`."""
    names = [f"'{o}'" for o in options]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _string(body: Mapping[str, Any], name: str, errors: list[dict[str, Any]]) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    errors.append(
        {
            "type": "string_type",
            "loc": ["body", name],
            "msg": "Input should be a valid string",
            "input": value,
        }
    )
    return None


def _literal(
    body: Mapping[str, Any], name: str, options: tuple[str, ...], errors: list[dict[str, Any]]
) -> str:
    value = body.get(name)
    if value is None:
        return "chat"
    if value in options:
        return str(value)
    expected = _quoted(options)
    errors.append(
        {
            "type": "literal_error",
            "loc": ["body", name],
            "msg": f"Input should be {expected}",
            "input": value,
            "ctx": {"expected": expected},
        }
    )
    return "chat"


def parse_request(body: Any) -> LangflowRequest:
    """The request in a decoded JSON body; raises InvalidRequest listing every field that is unusable."""
    if not isinstance(body, Mapping):
        message = "Input should be a valid dictionary or object to extract fields from"
        raise InvalidRequest(
            [{"type": "model_attributes_type", "loc": ["body"], "msg": message, "input": body}]
        )
    errors: list[dict[str, Any]] = []
    input_value = _string(body, "input_value", errors)
    input_type = _literal(body, "input_type", INPUT_TYPES, errors)
    output_type = _literal(body, "output_type", OUTPUT_TYPES, errors)
    output_component = _string(body, "output_component", errors) or ""
    session_id = _string(body, "session_id", errors)
    user_id = _string(body, "user_id", errors)
    tweaks = body.get("tweaks")
    if tweaks is not None and not isinstance(tweaks, Mapping):
        message = "Input should be a valid dictionary"
        errors.append({"type": "dict_type", "loc": ["body", "tweaks"], "msg": message, "input": tweaks})
    if errors:
        raise InvalidRequest(errors)
    return LangflowRequest(
        input_value=input_value,
        input_type=input_type,
        output_type=output_type,
        output_component=output_component,
        tweaks=dict(tweaks or {}),
        session_id=session_id,
        user_id=user_id,
    )


def decode_body(raw: bytes) -> Any:
    """The JSON of a run request's body; an empty body is LangFlow's default request (`{}`).

    >>> decode_body(b""), decode_body(b'{"input_value": "hi"}')
    ({}, {'input_value': 'hi'})
    """
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from e


def query_flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter as FastAPI reads one (`?stream=true`, `1`, `yes`, `on`; absent: false).

    >>> query_flag({"stream": "True"}, "stream"), query_flag({}, "stream")
    (True, False)
    """
    value = query.get(name)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    message = "Input should be a valid boolean, unable to interpret input"
    raise InvalidRequest([{"type": "bool_parsing", "loc": ["query", name], "msg": message, "input": value}])
