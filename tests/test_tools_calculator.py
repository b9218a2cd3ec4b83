"""Calculator: arithmetic through a restricted simpleeval, and everything else refused with a short reason."""

from __future__ import annotations

import pytest

from cluster.components.tools.calculator import Calculator, evaluate
from cluster.errors import ComponentError
from tests.component_helpers import build, problems_of, run


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("1 + 2", "3"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("2 ** 3 ** 2", "512"),
        ("-2 ** 2", "-4"),
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("10 / 4", "2.5"),
        ("10 / 2", "5"),
        ("0.1 + 0.2", "0.3"),
        ("sqrt(16) + abs(-3)", "7"),
        ("round(2.567, 2)", "2.57"),
        ("min(3, 1, 2) + max(3, 1, 2)", "4"),
        ("floor(-2.5) + ceil(2.1)", "0"),
        ("log(e)", "1"),
        ("log(8, 2)", "3"),
        ("cos(pi)", "-1"),
        ("sin(0)", "0"),
        ("2 ** 100", "1267650600228229401496703205376"),
        ("  1 +\n 1 ", "2"),
    ],
)
async def test_arithmetic(expression: str, result: str) -> None:
    assert await run(build(Calculator, {}), {"expression": expression}) == {"result": result}


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("x + 1", "unknown name 'x'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("(1).__class__", "attribute access is not allowed"),
        ("pi.real", "attribute access is not allowed"),
        ("sqrt", "unknown name 'sqrt'"),
        ("'a' * 3", "only numbers are allowed"),
        ("[1, 2][0]", "not allowed"),
        ("1 < 2", "comparison is not allowed"),
        ("1 if 1 else 2", "if/else is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("True + 1", "only numbers are allowed"),
        ("sqrt(x=4)", "only calls like sqrt(x)"),
        ("a = 1", "invalid syntax"),
        ("1; 2", "invalid syntax"),
        ("2 ** 100000", "exponent above 10,000"),
        ("9 ** 9 ** 9", "exponent above 10,000"),
        ("10 ** 5000", "result too large"),
        ("10.0 ** 400", "result too large"),
        ("round(5, -1000000000)", "round() takes a whole number of digits"),
        ("1e999", "not a finite number"),
        ("(-8) ** 0.5", "negative number to a fractional power"),
        ("sqrt(-1)", "math domain error"),
        ("-" * 990 + "1", "nested too deeply"),
        ("1 +" * 400 + "1", "longer than 1,000 characters"),
    ],
)
def test_refused(expression: str, reason: str) -> None:
    with pytest.raises(ComponentError, match="^invalid expression: ") as caught:
        evaluate(expression)
    assert reason in str(caught.value)
    assert len(str(caught.value)) < 200  # short, and never the whole expression echoed back


@pytest.mark.parametrize("expression", ["1 / 0", "1 // 0", "5 % 0", "0 ** -1"])
def test_division_by_zero(expression: str) -> None:
    with pytest.raises(ComponentError, match="^division by zero$"):
        evaluate(expression)


async def test_empty_and_non_text_inputs() -> None:
    calculator = build(Calculator, {})
    with pytest.raises(ComponentError, match="expression is empty"):
        await run(calculator, {"expression": "  "})
    assert await run(calculator, {"expression": 42}) == {"result": "42"}  # a number is written as text


def test_ports_and_tool_mode() -> None:
    ports = Calculator.ports({})
    assert (ports.inputs, ports.required, ports.default_input) == (
        ("expression",),
        {"expression"},
        "expression",
    )
    assert (ports.outputs, ports.default_output) == (("result",), "result")
    assert Calculator.tool_mode
    schema = Calculator.tool_parameters({})
    assert schema["required"] == ["expression"] and schema["additionalProperties"] is False
    spec = build(Calculator, {"tool_name": "calc", "tool_description": "does sums"}).tool_spec()
    assert (spec.name, spec.description, spec.parameters) == ("calc", "does sums", schema)


def test_params() -> None:
    assert problems_of(Calculator, {"description": "sums", "tool_name": "calc"}) == []
    assert [p.path for p in problems_of(Calculator, {"precision": 3})] == ["/nodes/0/params"]
    assert [p.path for p in problems_of(Calculator, {"tool_name": "has space"})] == [
        "/nodes/0/params/tool_name"
    ]
