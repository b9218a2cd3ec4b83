"""PromptTemplate: a safe `{name}` template whose variables become required input ports.

    {"id": "prompt", "type": "PromptTemplate",
     "params": {"template": "Context:\\n{context}\\n\\nQuestion: {question}"}}

has inputs `context` and `question` and one output, `text`. With a single variable, that variable is
the default input, so a plain edge feeds it. Variables no edge feeds are read from the run's inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.errors import FlowValidationError, Problem
from cluster.flow.templates import check_template, parse_template, render

MAX_TEMPLATE_CHARS = 100_000


class PromptTemplate(Component):
    type_name = "PromptTemplate"
    description = "Fills a {name} template from its inputs (one input port per variable); output `text`."
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["template"],
        "properties": {
            "template": {"type": "string", "maxLength": MAX_TEMPLATE_CHARS},
            "description": {"type": "string", "maxLength": 1000},
        },
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.template = parse_template(params["template"])

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        # Ports are asked for only after check_params passed, but stay total for any string.
        try:
            names = parse_template(params["template"]).variables
        except FlowValidationError:
            names = ()
        return Ports(
            inputs=names,
            required=frozenset(names),
            default_input=names[0] if len(names) == 1 else None,
            outputs=("text",),
            default_output="text",
        )

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        return check_template(params["template"], f"{path}/template")

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        return {"text": render(self.template, inputs)}
