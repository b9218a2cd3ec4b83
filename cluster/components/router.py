"""Router: the intent-recognition branch point; sends its input text to exactly one route.

    {"id": "intent", "type": "Router", "params": {
       "rules": [{"route": "billing", "keywords": ["invoice", "refund", "charge"]},
                 {"route": "outage", "regex": "\\\\b(down|outage|5\\\\d\\\\d)\\\\b"}],
       "default": "general"}}

Input `text` (default). One output port per route, plus the default route; `run` returns only the chosen
port, carrying the input unchanged, so the engine skips every branch fed by the other ports. Rules are
tried in order; the first that matches wins. Keywords match whole words (or phrases), case-insensitively
unless `case_sensitive`. Only the first `max_chars` characters of the text are examined.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.regexes import MAX_PATTERN_CHARS, regex_problems
from cluster.errors import Problem
from cluster.flow.templates import to_text

_ROUTE = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$", "maxLength": 64}


def keyword_pattern(keywords: list[str]) -> str:
    """One regex matching any keyword as a whole word or phrase (never inside a longer word).

    >>> pattern = keyword_pattern(["refund", "bill"])
    >>> bool(re.search(pattern, "a refund please")), bool(re.search(pattern, "a billion"))
    (True, False)
    """
    alternatives = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    return rf"(?<!\w)(?:{alternatives})(?!\w)"


def _rule_regex(rule: Mapping[str, Any]) -> str:
    return rule["regex"] if "regex" in rule else keyword_pattern(rule["keywords"])


def _rule_flags(rule: Mapping[str, Any]) -> int:
    return 0 if rule.get("case_sensitive", False) else re.IGNORECASE


class Router(Component):
    type_name = "Router"
    description = "Chooses one route by keyword or regex rules (else the default); only that branch runs."
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["rules"],
        "properties": {
            "rules": {
                "type": "array",
                "maxItems": 200,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["route"],
                    "oneOf": [{"required": ["keywords"]}, {"required": ["regex"]}],
                    "properties": {
                        "route": _ROUTE,
                        "keywords": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1000,
                            "items": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                        "regex": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_CHARS},
                        "case_sensitive": {"type": "boolean", "default": False},
                    },
                },
            },
            "default": {**_ROUTE, "default": "default"},
            "max_chars": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 10_000},
            "description": {"type": "string", "maxLength": 1000},
        },
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.rules = tuple(
            (re.compile(_rule_regex(rule), _rule_flags(rule)), rule["route"]) for rule in params["rules"]
        )
        self.default = self.default_route(params)
        self.max_chars = int(params.get("max_chars", 10_000))

    @staticmethod
    def default_route(params: Mapping[str, Any]) -> str:
        return str(params.get("default", "default"))

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        default = cls.default_route(params)
        routes = tuple(dict.fromkeys([*(rule["route"] for rule in params["rules"]), default]))
        return Ports(
            inputs=("text",),
            required=frozenset({"text"}),
            default_input="text",
            outputs=routes,
            default_output=default,
        )

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        problems: list[Problem] = []
        for i, rule in enumerate(params["rules"]):
            if "regex" in rule:
                problems += regex_problems(rule["regex"], f"{path}/rules/{i}/regex", flags=_rule_flags(rule))
        return problems

    def choose(self, text: str) -> str:
        """The route for `text`: the first matching rule's, else the default."""
        window = text[: self.max_chars]
        for pattern, route in self.rules:
            if pattern.search(window):
                return str(route)
        return self.default

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        value = inputs["text"]
        return {self.choose(to_text(value)): value}
