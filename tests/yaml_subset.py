"""A strict reader for the YAML subset the deployment files are written in (no PyYAML dependency).

Supported: block mappings and sequences (indentation by spaces), `- key: value` items, plain, single-
and double-quoted scalars, flow sequences of scalars (`["a", "b"]`), `{}` and `[]`, comments, and
`---` document separators. Anything else (anchors, tags, block scalars, flow mappings with content)
raises YamlSubsetError with the line number, so a file drifting out of the subset fails loudly
instead of being misread.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
KEY = re.compile(
    r"""^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s'"#&*!|>%@`{}\[\],?-][^:#]*?|-[^\s:#][^:#]*?)\s*:(?:\s+|$)"""
)


class YamlSubsetError(ValueError):
    pass


@dataclass
class Line:
    number: int
    indent: int
    text: str


def load_all(text: str) -> list[Any]:
    docs: list[list[Line]] = [[]]
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.rstrip() == "---":
            docs.append([])
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"line {number}: tab in indentation")
        stripped = _strip_comment(raw, number).rstrip()
        if stripped.strip():
            docs[-1].append(Line(number, len(stripped) - len(stripped.lstrip(" ")), stripped.strip()))
    return [_document(lines) for lines in docs if lines]


def load(text: str) -> Any:
    docs = load_all(text)
    if len(docs) != 1:
        raise YamlSubsetError(f"expected one document, found {len(docs)}")
    return docs[0]


def _document(lines: list[Line]) -> Any:
    value, end = _block(lines, 0, lines[0].indent)
    if end != len(lines):
        raise YamlSubsetError(f"line {lines[end].number}: unexpected indentation")
    return value


def _strip_comment(raw: str, number: int) -> str:
    quote: str | None = None
    for i, ch in enumerate(raw):
        if quote:
            if ch == "\\" and quote == '"':
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or raw[i - 1] in " [,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or raw[i - 1] == " "):
            return raw[:i]
    return raw


def _block(lines: list[Line], i: int, indent: int) -> tuple[Any, int]:
    if lines[i].text == "-" or lines[i].text.startswith("- "):
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent)


def _sequence(lines: list[Line], i: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while i < len(lines) and lines[i].indent == indent:
        line = lines[i]
        if not (line.text == "-" or line.text.startswith("- ")):
            raise YamlSubsetError(f"line {line.number}: expected a '- ' item")
        rest = line.text[1:].strip()
        if not rest:
            if i + 1 >= len(lines) or lines[i + 1].indent <= indent:
                raise YamlSubsetError(f"line {line.number}: empty item")
            value, i = _block(lines, i + 1, lines[i + 1].indent)
        elif KEY.match(rest):
            # "- key: value": a mapping whose first key sits on the item's line.
            inner = indent + 1 + (len(line.text) - 1 - len(line.text[1:].lstrip()))
            lines[i] = Line(line.number, inner, rest)
            value, i = _mapping(lines, i, inner)
        else:
            value, i = _scalar(rest, line.number), i + 1
        items.append(value)
    return items, i


def _mapping(lines: list[Line], i: int, indent: int) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    while i < len(lines) and lines[i].indent == indent:
        line = lines[i]
        match = KEY.match(line.text)
        if not match:
            raise YamlSubsetError(f"line {line.number}: expected 'key: value', got {line.text!r}")
        key = _scalar(match.group(1), line.number)
        if not isinstance(key, str):
            key = str(key)
        if key in result:
            raise YamlSubsetError(f"line {line.number}: duplicate key {key!r}")
        rest = line.text[match.end() :].strip()
        if rest:
            result[key], i = _scalar(rest, line.number), i + 1
        elif i + 1 < len(lines) and lines[i + 1].indent > indent:
            result[key], i = _block(lines, i + 1, lines[i + 1].indent)
        else:
            result[key], i = None, i + 1
    if i < len(lines) and lines[i].indent > indent:
        raise YamlSubsetError(f"line {lines[i].number}: unexpected indentation")
    return result, i


def _scalar(text: str, number: int) -> Any:
    if text.startswith('"'):
        try:
            value, end = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError as e:
            raise YamlSubsetError(f"line {number}: bad double-quoted string {text!r}") from e
        if text[end:].strip():
            raise YamlSubsetError(f"line {number}: text after a quoted string: {text!r}")
        return value
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise YamlSubsetError(f"line {number}: bad single-quoted string {text!r}")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        return _flow_sequence(text, number)
    if text == "{}":
        return {}
    if text[0] in "&*!|>%@`{":
        raise YamlSubsetError(f"line {number}: {text!r} is outside the supported YAML subset")
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    if INT.match(text):
        return int(text)
    if ": " in text or text.endswith(":"):
        raise YamlSubsetError(f"line {number}: ambiguous plain scalar {text!r}; quote it")
    return text


def _flow_sequence(text: str, number: int) -> list[Any]:
    if not text.endswith("]"):
        raise YamlSubsetError(f"line {number}: flow sequence must end on its line: {text!r}")
    body = text[1:-1].strip()
    if not body:
        return []
    items: list[str] = []
    current = ""
    quote: str | None = None
    for ch in body:
        if quote:
            current += ch
            if ch == quote and not current.endswith("\\" + quote):
                quote = None
        elif ch in "\"'":
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current.strip())
            current = ""
        elif ch in "[]{}":
            raise YamlSubsetError(f"line {number}: nested flow collections are not supported")
        else:
            current += ch
    items.append(current.strip())
    return [_scalar(item, number) for item in items]
