"""LangFlow prompt templates, rewritten as flowfleet templates.

LangFlow's Prompt component formats its template the way Python's ``str.format`` does (LangChain's
"f-string" templates): ``{name}`` is a variable, ``{{`` and ``}}`` are literal braces. flowfleet templates
use the same two rules and nothing else, so a template is parsed into literal text and variables with
``string.Formatter.parse`` — a lexer only; nothing is formatted or evaluated here — and written back
with each variable either kept as ``{name}`` or replaced by a fixed value typed into LangFlow.

>>> t = parse_template("Hi {name}, {{literally}} {greeting}")
>>> t.variables
('name', 'greeting')
>>> rebuild(t, {"greeting": "see {you}"})
'Hi {name}, {{literally}} see {{you}}'
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

# Variables become flowfleet port names, which are ASCII identifiers.
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


class TemplateSyntaxError(ValueError):
    """The template uses something flowfleet templates cannot express; the message says what."""


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class LfTemplate:
    """Literal text (braces already unescaped) and variables, in order; `variables` unique, in order."""

    parts: tuple[str | Var, ...]
    variables: tuple[str, ...]


def _shown(field: str, conversion: str | None, spec: str | None) -> str:
    text = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
    return "{" + (text if len(text) <= 40 else text[:37] + "...") + "}"


def parse_template(text: str) -> LfTemplate:
    """Split a LangFlow template; raises TemplateSyntaxError for anything but `{name}` and `{{ }}`."""
    parts: list[str | Var] = []
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as e:
        # Unbalanced braces: LangFlow refuses such a template too.
        raise TemplateSyntaxError(f"malformed template: {e}") from None
    for literal, field, spec, conversion in pieces:
        if literal:
            parts.append(literal)
        if field is None:
            continue
        if conversion or spec:
            raise TemplateSyntaxError(
                f"placeholder {_shown(field, conversion, spec)} uses a conversion or format spec; "
                "only {name} is supported"
            )
        if not VARIABLE.match(field):
            raise TemplateSyntaxError(
                f"placeholder {_shown(field, None, None)} is not a plain variable name; "
                "only {name} is supported"
            )
        parts.append(Var(field))
    names = tuple(dict.fromkeys(p.name for p in parts if isinstance(p, Var)))
    return LfTemplate(tuple(parts), names)


def escape(text: str) -> str:
    """Literal text as a flowfleet template: every brace doubled."""
    return text.replace("{", "{{").replace("}", "}}")


def rebuild(template: LfTemplate, fixed: Mapping[str, str]) -> str:
    """A flowfleet template: variables in `fixed` become their literal value, the others stay `{name}`."""
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, Var):
            out.append(escape(fixed[part.name]) if part.name in fixed else "{" + part.name + "}")
        else:
            out.append(escape(part))
    return "".join(out)
