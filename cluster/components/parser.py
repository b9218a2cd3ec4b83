"""OutputParser: turns a model's reply into data.

Modes (`params.mode`):
- `json` (default): the first fenced block (```json ... ``` or a plain ``` fence) whose content is JSON,
  else the first JSON object or array appearing raw in the text.
- `regex`: `params.pattern` searched in the text; the result is `params.group` (number or name) if
  given, else the dict of named groups if the pattern has any, else group 1 if it has groups, else the
  whole match.
- `strip`: surrounding whitespace removed, and one enclosing code fence if the whole text is fenced.
- `format`: `params.template` (a `{field}` template) filled from each record of the input, the results
  joined with `params.sep` (default a newline): a list is one record per item, an object one record, a
  string the record `{"text": ...}` (JSON text is decoded first). A field a record lacks is empty.
  This is LangFlow's Parser over Data or a DataFrame.

Input `text` (default). Outputs `parsed` (default; the value) and `text` (the fragment it came from).
Nothing found is a ComponentError saying what was looked for. Only the first `max_chars` characters of
the text are examined.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.regexes import MAX_PATTERN_CHARS, regex_problems
from cluster.errors import ComponentError, Problem
from cluster.flow.templates import check_template, parse_template, render, to_text

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_WHOLE_FENCE = re.compile(r"\A```[ \t]*[A-Za-z0-9_+-]*[ \t]*\r?\n(.*?)\r?\n?```\Z", re.DOTALL)
# Each candidate start costs a scan, so hostile text full of '{' is bounded to this many attempts.
MAX_JSON_STARTS = 256
_DECODER = json.JSONDecoder()
_FLAG_NAMES = {"ignore_case": re.IGNORECASE, "multiline": re.MULTILINE, "dotall": re.DOTALL}
_FORMAT_ONLY = ("template", "sep")
MAX_TEMPLATE_CHARS = 100_000
# `format` mode formats at most this many records (a list longer than that fails instead).
MAX_RECORDS = 10_000


def _decode(text: str, start: int = 0) -> tuple[Any, int] | None:
    try:
        return _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        return None


def extract_json(text: str) -> tuple[Any, str]:
    """(value, source fragment) of the first JSON in `text`; raises ComponentError if there is none.

    >>> extract_json('Sure! {"answer": 42} Anything else?')
    ({'answer': 42}, '{"answer": 42}')
    """
    for match in _FENCE.finditer(text):
        if match.group(1).lower() not in ("", "json"):
            continue
        body = match.group(2).strip()
        decoded = _decode(body)
        if decoded is not None and decoded[1] == len(body):
            return decoded[0], body
    starts = 0
    for match in re.finditer(r"[\[{]", text):
        starts += 1
        if starts > MAX_JSON_STARTS:
            break
        decoded = _decode(text, match.start())
        if decoded is not None:
            return decoded[0], text[match.start() : decoded[1]]
    raise ComponentError(
        "no JSON object or array found in the text (looked for a ```json block, then raw JSON)"
    )


def strip_text(text: str) -> str:
    """Whitespace and one enclosing code fence removed.

    >>> strip_text("  ```text\\nhello\\n```  ")
    'hello'
    """
    stripped = text.strip()
    fenced = _WHOLE_FENCE.match(stripped)
    return fenced.group(1).strip() if fenced else stripped


def records(value: Any) -> list[Mapping[str, Any]]:
    """The records `format` mode fills its template from, one per item of a list.

    >>> records([{"a": 1}, "hi"]), records('{"a": 2}'), records("plain")
    ([{'a': 1}, {'text': 'hi'}], [{'a': 2}], [{'text': 'plain'}])
    """
    if isinstance(value, str):
        decoded = _decode(value.strip()) if value.strip()[:1] in ("{", "[") else None
        if decoded is None or decoded[1] != len(value.strip()):
            return [{"text": value}]
        value = decoded[0]
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_RECORDS:
        raise ComponentError(f"{len(items)} records to format; at most {MAX_RECORDS}")
    return [item if isinstance(item, Mapping) else {"text": item} for item in items]


def _flags(params: Mapping[str, Any]) -> int:
    flags = 0
    for name, flag in _FLAG_NAMES.items():
        if params.get(name, False):
            flags |= flag
    return flags


class OutputParser(Component):
    type_name = "OutputParser"
    description = (
        "Extracts JSON, a regex capture or stripped text, or formats records with a template: input "
        "`text`; outputs `parsed`, `text`."
    )
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mode": {"enum": ["json", "regex", "strip", "format"], "default": "json"},
            "pattern": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_CHARS},
            "group": {
                "oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": 99},
                    {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                ]
            },
            "ignore_case": {"type": "boolean", "default": False},
            "multiline": {"type": "boolean", "default": False},
            "dotall": {"type": "boolean", "default": False},
            "max_chars": {"type": "integer", "minimum": 1, "maximum": 10_000_000, "default": 100_000},
            "template": {"type": "string", "maxLength": MAX_TEMPLATE_CHARS},
            "sep": {"type": "string", "maxLength": 1000, "default": "\n"},
            "description": {"type": "string", "maxLength": 1000},
        },
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.mode = str(params.get("mode", "json"))
        self.max_chars = int(params.get("max_chars", 100_000))
        self.pattern = re.compile(params["pattern"], _flags(params)) if self.mode == "regex" else None
        self.template = parse_template(params["template"]) if self.mode == "format" else None

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(
            inputs=("text",),
            required=frozenset({"text"}),
            default_input="text",
            outputs=("parsed", "text"),
            default_output="parsed",
        )

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        mode = params.get("mode", "json")
        if mode != "format":
            unused = [name for name in _FORMAT_ONLY if name in params]
            problems = [
                Problem(f"{path}/{name}", "unused_param", f"{name!r} only applies to mode 'format'")
                for name in unused
            ]
        else:
            problems = cls._format_problems(params, path)
        regex_only = [name for name in ("pattern", "group", *_FLAG_NAMES) if name in params]
        if mode != "regex":
            return problems + [
                Problem(f"{path}/{name}", "unused_param", f"{name!r} only applies to mode 'regex'")
                for name in regex_only
            ]
        if "pattern" not in params:
            return [Problem(f"{path}/pattern", "missing_param", "mode 'regex' needs a pattern")]
        problems = regex_problems(params["pattern"], f"{path}/pattern", flags=_flags(params))
        group = params.get("group")
        if problems or group is None:
            return problems
        compiled = re.compile(params["pattern"], _flags(params))
        if isinstance(group, int) and group > compiled.groups:
            message = f"the pattern has {compiled.groups} group(s), so there is no group {group}"
            problems.append(Problem(f"{path}/group", "unknown_group", message))
        elif isinstance(group, str) and group not in compiled.groupindex:
            known = ", ".join(compiled.groupindex) or "none"
            message = f"the pattern has no group named {group!r} (named groups: {known})"
            problems.append(Problem(f"{path}/group", "unknown_group", message))
        return problems

    @classmethod
    def _format_problems(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        if "template" not in params:
            return [Problem(f"{path}/template", "missing_param", "mode 'format' needs a template")]
        return check_template(params["template"], f"{path}/template")

    def format(self, value: Any) -> str:
        """`format` mode: the template filled from each record of `value`, joined with `sep`."""
        assert self.template is not None  # set in __init__ for mode 'format'
        sep: str = self.params.get("sep", "\n")
        names = self.template.variables
        # A field a record lacks renders as nothing, as LangFlow's Parser does for Data.
        return sep.join(
            render(self.template, {name: record.get(name, "") for name in names}) for record in records(value)
        )

    def _regex(self, text: str) -> tuple[Any, str]:
        assert self.pattern is not None  # set in __init__ for mode 'regex'
        match = self.pattern.search(text)
        if match is None:
            raise ComponentError(f"pattern {self.pattern.pattern!r} does not match the text")
        group = self.params.get("group")
        if group is not None:
            return match.group(group), match.group(0)
        if self.pattern.groupindex:
            return match.groupdict(), match.group(0)
        return match.group(1 if self.pattern.groups else 0), match.group(0)

    def parse(self, text: str) -> tuple[Any, str]:
        """(parsed value, source fragment) for `text`; raises ComponentError when nothing is found."""
        window = text[: self.max_chars]
        if self.mode == "json":
            return extract_json(window)
        if self.mode == "regex":
            return self._regex(window)
        stripped = strip_text(window)
        return stripped, stripped

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        if self.mode == "format":
            text = self.format(inputs["text"])
            return {"parsed": text, "text": text}
        parsed, fragment = self.parse(to_text(inputs["text"]))
        return {"parsed": parsed, "text": fragment}
