"""Safe {name} templates: parsing, every refused construct with its code, and rendering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.errors import ComponentError, FlowValidationError
from cluster.flow.templates import (
    Template,
    Var,
    _fast_parts,
    _ParseCache,
    _scan,
    check_template,
    clear_cache,
    parse_template,
    render,
    to_text,
)


def test_parse_splits_literals_and_variables() -> None:
    t = parse_template("Context: {context}\nQ: {question} ({question})")
    assert t.parts == ("Context: ", Var("context"), "\nQ: ", Var("question"), " (", Var("question"), ")")
    assert t.variables == ("context", "question")


def test_escaped_braces_are_literal() -> None:
    t = parse_template('{{"answer": "{x}"}}')
    assert t.variables == ("x",)
    assert render(t, {"x": "yes"}) == '{"answer": "yes"}'


def test_template_without_variables() -> None:
    assert parse_template("plain text").variables == ()
    assert render(parse_template(""), {}) == ""


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("{x.__class__}", "unsafe_template", "attribute access in {x.__class__}"),
        ("{x.__class__.__mro__}", "unsafe_template", "attribute access"),
        ("{x[0]}", "unsafe_template", "index access in {x[0]}"),
        ("{x[__globals__]}", "unsafe_template", "index access"),
        ("{x!r}", "unsafe_template", "conversion in {x!r}"),
        ("{x:>10}", "unsafe_template", "format spec in {x:>10}"),
        ("{x:{y}}", "unsafe_template", "format spec in {x:{y}}"),
        ("{a{b}}", "template_syntax", "nested braces"),
        ("{a{b}", "template_syntax", "unclosed '{' at position 0"),
        ("{}", "template_syntax", "empty placeholder"),
        ("{0}", "template_syntax", "positional placeholder {0}"),
        ("{ x }", "template_syntax", "invalid variable name"),
        ("{1x}", "template_syntax", "invalid variable name"),
        ("open {x", "template_syntax", "unclosed '{' at position 5"),
        ("close x}", "template_syntax", "single '}' at position 7"),
        ("{{x}", "template_syntax", "single '}'"),
    ],
)
def test_refused_constructs(text: str, code: str, fragment: str) -> None:
    problems = check_template(text, "/nodes/0/params/template")
    assert [p.code for p in problems] == [code]
    assert problems[0].path == "/nodes/0/params/template"
    assert fragment in problems[0].message


def test_every_problem_is_reported() -> None:
    problems = check_template("{a.b} ok {c} {0} {d[1]} }", "/t")
    assert [p.code for p in problems] == [
        "unsafe_template",
        "template_syntax",
        "unsafe_template",
        "template_syntax",
    ]


def test_hostile_brace_soup_is_fast() -> None:
    # Linear scanning: a megabyte of unbalanced braces is reported, not a hang.
    assert check_template("{a" * 500_000)[0].code == "template_syntax"
    assert len(check_template("a}" * 100_000)) == 100_000


def test_long_field_is_shortened_in_message() -> None:
    (problem,) = check_template("{" + "a." * 100 + "}", "/t")
    assert len(problem.message) < 150


def test_parse_raises_validation_error_with_all_problems() -> None:
    with pytest.raises(FlowValidationError) as info:
        parse_template("{a.b} {c!s}", "/p")
    assert [p.code for p in info.value.problems] == ["unsafe_template", "unsafe_template"]


def test_values_containing_braces_stay_literal() -> None:
    t = parse_template("Q: {q}")
    assert render(t, {"q": "{q.__class__} {0} {{x}}"}) == "Q: {q.__class__} {0} {{x}}"


def test_render_missing_value_names_the_variable() -> None:
    with pytest.raises(ComponentError, match="'b'"):
        render(parse_template("{a}{b}"), {"a": 1})


def test_render_never_uses_str_format() -> None:
    class Hostile:
        def __format__(self, spec: str) -> str:  # pragma: no cover - must never be called
            raise AssertionError("str.format reached a value")

        def __str__(self) -> str:
            return "hostile"

    assert render(Template(("x=", Var("x")), ("x",)), {"x": Hostile()}) == "x=hostile"


@pytest.mark.parametrize(
    ("value", "text"),
    [("s", "s"), (None, ""), (3, "3"), (True, "true"), ([1, "a"], '[1,"a"]'), ({"k": 1}, '{"k":1}')],
)
def test_to_text(value: object, text: str) -> None:
    assert to_text(value) == text


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)


@given(st.text(max_size=80))
def test_check_never_raises_and_codes_are_known(text: str) -> None:
    for problem in check_template(text, "/t"):
        assert problem.code in {"unsafe_template", "template_syntax"}
        assert problem.path == "/t"


@given(
    st.lists(
        st.one_of(st.text(alphabet="ab {}.", max_size=6), _names.map(lambda n: "{" + n + "}")), max_size=8
    )
)
def test_safe_templates_render_like_str_format(pieces: list[str]) -> None:
    # The oracle: for the safe subset, plain substitution must agree with Python's own formatter.
    text = "".join(pieces)
    if check_template(text):
        with pytest.raises(FlowValidationError):
            parse_template(text)
        return
    template = parse_template(text)
    values = {name: f"<{name}>" for name in template.variables}
    assert render(template, values) == text.format(**values)


@given(st.text(alphabet="a_1 {}.!", max_size=40))
def test_fast_tokenizer_agrees_with_the_full_scan(text: str) -> None:
    # The one-pass tokenizer must read every safe template exactly as the brace scanner does, and give
    # up (None) on every template the scanner finds a problem in.
    parts, problems = _scan(text, "")
    assert _fast_parts(text) == (None if problems else parts)


def test_parsed_templates_are_cached_and_problems_located_per_call() -> None:
    clear_cache()
    first = parse_template("Q: {q} {{x}}")
    assert parse_template("Q: {q} {{x}}") is first
    assert check_template("{a.b}", "/one")[0].path == "/one"
    assert check_template("{a.b}", "/two")[0].path == "/two"
    with pytest.raises(FlowValidationError) as raised:
        parse_template("{a.b}", "/three")
    assert [p.path for p in raised.value.problems] == ["/three"]
    clear_cache()
    assert parse_template("Q: {q} {{x}}") is not first


def test_parse_cache_is_bounded_by_weight() -> None:
    cache = _ParseCache(max_weight=1000)
    for i in range(100):
        text = f"template {i}: {{v{i}}}"
        cache.put(text, parse_template(text))
    assert 0 < len(cache) < 100
    assert cache.get("template 99: {v99}") is not None  # the most recent stay
    assert cache.get("template 0: {v0}") is None  # the oldest went first
    huge = "x" * 2000
    cache.put(huge, parse_template(huge))
    assert cache.get(huge) is None  # heavier than the whole cache: never held
