"""Safe `{name}` templates: literal text and named variables, nothing that evaluates.

Only `{identifier}` substitutes a value; `{{` and `}}` are literal braces. Everything else inside braces
(`{x.__class__}`, `{x[0]}`, `{x!r}`, `{x:>10}`, `{}`, `{0}`) and any unbalanced brace is a problem found
at validation time, so a flow can never reach Python's format machinery.

>>> t = parse_template("Hello {name}, {{literal}}")
>>> t.variables
('name',)
>>> render(t, {"name": "Ada"})
'Hello Ada, {literal}'
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from cluster.errors import ComponentError, FlowValidationError, Problem

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_POSITIONAL = re.compile(r"[0-9]+")
_BRACE = re.compile(r"[{}]")
# Tokens of a safe template, tried left to right as `_scan` reads braces: a doubled brace, a `{name}`
# placeholder, or a lone brace (which only the slow scan can explain).
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


@dataclass(frozen=True)
class Var:
    """A `{name}` placeholder."""

    name: str


@dataclass(frozen=True)
class Template:
    """A parsed template: literal strings and variables in order; `variables` are unique, first-seen order."""

    parts: tuple[str | Var, ...]
    variables: tuple[str, ...]


def _field_problem(field: str, position: int, path: str) -> Problem:
    """Explain why the text between braces at `position` is not a plain variable name."""
    where = f"at position {position}"
    shown = "{" + (field if len(field) <= 40 else field[:37] + "...") + "}"
    if field == "":
        return Problem(
            path, "template_syntax", f"empty placeholder {{}} {where}; name the variable: {{name}}"
        )
    if _POSITIONAL.fullmatch(field):
        return Problem(
            path, "template_syntax", f"positional placeholder {shown} {where}; use a name: {{name}}"
        )
    for mark, what in (
        (".", "attribute access"),
        ("[", "index access"),
        ("!", "conversion"),
        (":", "format spec"),
    ):
        if mark in field:
            return Problem(
                path,
                "unsafe_template",
                f"{what} in {shown} {where} is not allowed; only {{name}} substitutes",
            )
    if "{" in field:
        return Problem(
            path, "template_syntax", f"nested braces in {shown} {where}; only {{name}} substitutes"
        )
    return Problem(path, "template_syntax", f"invalid variable name {shown} {where}; use letters, digits, _")


def _field_end(text: str, braces: list[int], k: int) -> int | None:
    """Index into `braces` of the brace closing the field opened at braces[k] (nesting counted)."""
    depth = 0
    for m in range(k, len(braces)):
        depth += 1 if text[braces[m]] == "{" else -1
        if depth == 0:
            return m
    return None


def _flush(literal: list[str], parts: list[str | Var]) -> None:
    joined = "".join(literal)
    if joined:
        parts.append(joined)
    literal.clear()


def _scan(text: str, path: str) -> tuple[list[str | Var], list[Problem]]:
    parts: list[str | Var] = []
    problems: list[Problem] = []
    literal: list[str] = []
    # One pass over brace positions keeps scanning linear even for text made of braces.
    braces = [m.start() for m in _BRACE.finditer(text)]
    i = k = 0
    while k < len(braces):
        j = braces[k]
        literal.append(text[i:j])
        doubled = k + 1 < len(braces) and braces[k + 1] == j + 1 and text[j + 1] == text[j]
        if doubled:
            literal.append(text[j])
            i, k = j + 2, k + 2
            continue
        if text[j] == "}":
            problems.append(
                Problem(path, "template_syntax", f"single '}}' at position {j}; write '}}}}' for a brace")
            )
            i, k = j + 1, k + 1
            continue
        close = _field_end(text, braces, k)
        if close is None:
            # Python's formatter stops here too: what follows an unclosed brace has no reliable reading.
            problems.append(
                Problem(path, "template_syntax", f"unclosed '{{' at position {j}; write '{{{{' for a brace")
            )
            return parts, problems
        field = text[j + 1 : braces[close]]
        if _NAME.fullmatch(field):
            _flush(literal, parts)
            parts.append(Var(field))
        else:
            problems.append(_field_problem(field, j, path))
        i, k = braces[close] + 1, close + 1
    literal.append(text[i:])
    _flush(literal, parts)
    return parts, problems


def _fast_parts(text: str) -> list[str | Var] | None:
    """The parts of a template without problems, in one regex pass; None at the first lone brace, which
    `_scan` then explains. Agrees with `_scan` on every safe template (tests/test_templates.py)."""
    parts: list[str | Var] = []
    literal: list[str] = []
    start = 0
    for match in _TOKEN.finditer(text):
        name = match.group(1)
        token_start = match.start()
        if name is not None:
            literal.append(text[start:token_start])
            _flush(literal, parts)
            parts.append(Var(name))
        elif match.end() - token_start == 2:
            literal.append(text[start:token_start])
            literal.append(text[token_start])
        else:
            return None
        start = match.end()
    literal.append(text[start:])
    _flush(literal, parts)
    return parts


class _ParseCache:
    """Parsed safe templates by text, least recently used out first, bounded by a weight that grows with
    what an entry holds (its text and its parts), so hostile documents cannot make it large."""

    def __init__(self, max_weight: int) -> None:
        self.max_weight = max_weight
        self._entries: OrderedDict[str, tuple[Template, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, text: str) -> Template | None:
        with self._lock:
            found = self._entries.get(text)
            if found is None:
                return None
            self._entries.move_to_end(text)
            return found[0]

    def put(self, text: str, template: Template) -> None:
        weight = len(text) + ENTRY_WEIGHT * (1 + len(template.parts))
        if weight > self.max_weight:
            return
        with self._lock:
            if text in self._entries:
                return
            self._entries[text] = (template, weight)
            self._weight += weight
            while self._weight > self.max_weight:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._weight -= dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._weight = 0

    def __len__(self) -> int:
        return len(self._entries)


# A template is parsed when its component checks its params, again for its ports, and again when the
# component is built; the cache makes that one parse. An entry weighs its text's length plus 64 per
# part, roughly the bytes it holds, so the cache stays within a few MB; a 5,000-node flow of short
# templates weighs about 0.5 M.
ENTRY_WEIGHT = 64
CACHE_WEIGHT = 2_000_000
_CACHE = _ParseCache(CACHE_WEIGHT)


def clear_cache() -> None:
    """Forget every parsed template (benchmarks measure parsing from scratch this way)."""
    _CACHE.clear()


def _parsed(text: str) -> tuple[Template | None, list[Problem]]:
    """The template, or None and its problems located at "" (invalid templates are not cached)."""
    template = _CACHE.get(text)
    if template is not None:
        return template, []
    parts = _fast_parts(text)
    if parts is None:
        parts, problems = _scan(text, "")
        if problems:
            return None, problems
    names = tuple(dict.fromkeys(p.name for p in parts if isinstance(p, Var)))
    template = Template(tuple(parts), names)
    _CACHE.put(text, template)
    return template, []


def _located(problems: list[Problem], path: str) -> list[Problem]:
    return [dataclasses.replace(p, path=path) for p in problems] if path else problems


def check_template(text: str, path: str = "") -> list[Problem]:
    """Every problem in `text`, each located at `path` (a JSON pointer); empty when the template is safe."""
    return _located(_parsed(text)[1], path)


def parse_template(text: str, path: str = "") -> Template:
    """Parse a template; raises FlowValidationError listing every problem if it is not safe.

    Templates are immutable, so the same text may give the same (cached) Template object.
    """
    template, problems = _parsed(text)
    if template is None:
        raise FlowValidationError(_located(problems, path))
    return template


def to_text(value: Any) -> str:
    """How a value appears in rendered text: strings as they are, None as nothing, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return str(value)


def render(template: Template, values: Mapping[str, Any]) -> str:
    """Substitute every variable from `values`; a missing one raises ComponentError naming it.

    Plain concatenation, never str.format, so a value containing braces stays literal.
    """
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
        elif part.name in values:
            out.append(to_text(values[part.name]))
        else:
            raise ComponentError(f"no value for template variable {part.name!r}", variable=part.name)
    return "".join(out)
