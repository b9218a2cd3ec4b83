"""A run's answer nested as LangFlow nests it (its `RunResponse` of `RunOutputs` of `ResultData`).

    {"session_id": "s1",
     "outputs": [{"inputs": {"input_value": "hi"},
                  "outputs": [{"results": {"message": {"text": "Hello!", "sender": "Machine", ...}},
                               "artifacts": {...},
                               "outputs": {"message": {"message": {...}, "type": "message"}},
                               "logs": {"message": []}, "messages": [...],
                               "component_display_name": "Chat Output", "component_id": "ChatOutput-x1",
                               "used_frozen_result": false, ...}]}]}

So `outputs[0].outputs[0].results.message.text` is a ChatOutput's answer, and `...outputs.message.message`
holds the message as LangFlow's JS client reads it. Messages carry LangFlow's fields (as LangFlow 1.13's
`Message` dumps them, content blocks in its v1 shape); their `flow_id` is the flow's name and their `id`
a fresh uuid4, the same in a streamed run's events and its final result. Pure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cluster.flow.templates import to_text
from worker.api.langflow.plan import NO_SOURCE, OutputNode


def timestamp() -> str:
    """LangFlow's message timestamps: `2025-03-04 20:59:39.123456 UTC`."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


class Messages:
    """The ids and timestamps of one run's messages (by node id), made on first use."""

    def __init__(self, flow: str, session_id: str) -> None:
        self.flow, self.session_id = flow, session_id
        self._made: dict[str, tuple[str, str]] = {}

    def stamp(self, node_id: str) -> tuple[str, str]:
        made = self._made.get(node_id)
        if made is None:
            made = self._made[node_id] = (str(uuid.uuid4()), timestamp())
        return made

    def data(
        self,
        node_id: str,
        text: str,
        *,
        sender: str | None,
        sender_name: str | None,
        source: Mapping[str, Any] = NO_SOURCE,
        state: str = "complete",
    ) -> dict[str, Any]:
        """A message as LangFlow stores it: its `data`, which is also its JSON form."""
        message_id, at = self.stamp(node_id)
        properties: dict[str, Any] = {
            "text_color": None,
            "background_color": None,
            "edited": False,
            "source": dict(source),
            "icon": None,
            "allow_markdown": False,
            "positive_feedback": None,
            "state": state,
            "targets": [],
            "usage": None,
            "build_duration": None,
        }
        return {
            "timestamp": at,
            "sender": sender,
            "sender_name": sender_name,
            "session_id": self.session_id,
            "context_id": "",
            "text": text,
            "files": [],
            "error": False,
            "edit": False,
            "properties": properties,
            "category": "message",
            "content_blocks": [],
            "id": message_id,
            "flow_id": self.flow,
            "duration": None,
        }


def message_dump(data: Mapping[str, Any]) -> dict[str, Any]:
    """The message as LangFlow's `Message.model_dump()` writes it: its fields (`data` among them), then
    `text`."""
    return {
        "text_key": "text",
        "data": dict(data),
        "default_value": "",
        "sender": data["sender"],
        "sender_name": data["sender_name"],
        "files": [],
        "session_id": data["session_id"],
        "context_id": "",
        "run_id": None,
        "timestamp": data["timestamp"],
        "flow_id": data["flow_id"],
        "error": False,
        "edit": False,
        "properties": data["properties"],
        "category": "message",
        "content_blocks": [],
        "duration": None,
        "session_metadata": None,
        "text": data["text"],
    }


def event_message(data: Mapping[str, Any]) -> dict[str, Any]:
    """An `add_message` event's data: the dump with the message id copied to the top, as LangFlow does."""
    return {**message_dump(data), "id": data["id"]}


def output_message(messages: Messages, node: OutputNode, value: Any) -> dict[str, Any]:
    """The message a ChatOutput or TextOutput answers with."""
    chat = node.type_name == "ChatOutput"
    return messages.data(
        node.node_id,
        to_text(value),
        sender="Machine" if chat else None,
        sender_name=node.sender_name if chat else None,
        source=node.source,
    )


def _log_type(value: Any) -> str:
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return "text"


def result_data(messages: Messages, node: OutputNode, value: Any) -> dict[str, Any]:
    """One output's `ResultData`."""
    tail = {
        "timedelta": None,
        "duration": None,
        "component_display_name": node.display_name,
        "component_id": node.node_id,
        "used_frozen_result": False,
        "token_usage": None,
    }
    if node.type_name not in ("ChatOutput", "TextOutput"):
        kind, text = _log_type(value), to_text(value)
        return {
            "results": {node.key: value},
            "artifacts": {node.key: {"repr": text, "raw": value, "type": kind}},
            "outputs": {node.key: {"message": value, "type": kind}},
            "logs": {node.key: []},
            "messages": [],
            **tail,
        }
    data = output_message(messages, node, value)
    text = data["text"]
    if node.type_name == "TextOutput":
        return {
            "results": {"text": message_dump(data)},
            "artifacts": {"text": {"repr": text, "raw": text, "type": "text"}},
            "outputs": {"text": {"message": data, "type": "message"}},
            "logs": {"text": []},
            "messages": [],
            **tail,
        }
    said = {"sender": "Machine", "sender_name": data["sender_name"]}
    shown = {
        "message": text,
        **said,
        "session_id": messages.session_id,
        "stream_url": None,
        "component_id": node.node_id,
        "files": [],
        "type": "message",
    }
    return {
        "results": {"message": message_dump(data)},
        "artifacts": {"message": text, **said, "files": [], "type": "object"},
        "outputs": {"message": {"message": data, "type": "message"}},
        "logs": {"message": []},
        "messages": [shown],
        **tail,
    }


def run_response(
    messages: Messages,
    input_value: str | None,
    outputs: Iterable[OutputNode],
    values: Mapping[str, Any],
) -> dict[str, Any]:
    """LangFlow's `RunResponse` for one run: the selected outputs' values (`values` by output key)."""
    results = [result_data(messages, node, values.get(node.key)) for node in outputs]
    inputs = {"input_value": input_value} if input_value is not None else {}
    return {"session_id": messages.session_id, "outputs": [{"inputs": inputs, "outputs": results}]}
