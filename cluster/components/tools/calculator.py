"""Calculator: evaluates an arithmetic expression, safely; input `expression`, output `result` (text).

    {"id": "calc", "type": "Calculator", "params": {}}

    "2 * (3 + 4) ** 2"  ->  "98"        "sqrt(2) / 2"  ->  "0.707106781186548"

Only numbers, `+ - * / // % **`, parentheses, the functions sqrt, abs, round, min, max, floor, ceil, log,
sin, cos and the constants pi and e. No other names, no attribute or index access, no strings, no
comparisons: the expression is parsed into an AST and walked by simpleeval with only those operators, and
every operation is bounded (exponent, integer size), so a model or a user cannot make it run for long.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from simpleeval import InvalidExpression, NumberTooHigh, SimpleEval

from cluster.components.base import Component, Ports, RunContext
from cluster.components.tools.common import arguments_schema, text_argument, tool_params_schema
from cluster.errors import ComponentError

MAX_EXPRESSION_CHARS = 1_000
MAX_EXPONENT = 10_000
# Integers beyond ~10**1000 are refused: their arithmetic gets slow and no answer needs them.
MAX_INT_BITS = 3_322
MAX_ROUND_DIGITS = 100

Number = int | float


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounded(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise NumberTooHigh("result too large")
    return value


def _power(a: Number, b: Number) -> Number:
    if abs(b) > MAX_EXPONENT:
        raise NumberTooHigh(f"exponent above {MAX_EXPONENT:,}")
    # A lower bound of the result's size, so a huge power is refused before it is computed.
    if isinstance(a, int) and isinstance(b, int) and b > 0 and (a.bit_length() - 1) * b > MAX_INT_BITS:
        raise NumberTooHigh("result too large")
    result: Number | complex = a**b
    if isinstance(result, complex):
        raise InvalidExpression("a negative number to a fractional power")
    return _bounded(result)


def _multiply(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
        raise NumberTooHigh("result too large")
    return a * b


def _round(value: Number, digits: int = 0) -> Number:
    # int.__round__ with a very negative `digits` computes 10**-digits: bound it.
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise InvalidExpression(f"round() takes a whole number of digits within ±{MAX_ROUND_DIGITS}")
    return round(value, digits) if digits else round(value)


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: lambda a, b: _bounded(a + b),
    ast.Sub: lambda a, b: _bounded(a - b),
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "sin": math.sin,
    "cos": math.cos,
}
NAMES: dict[str, float] = {"pi": math.pi, "e": math.e}
# How refused kinds of node are named in errors (others by their lower-cased AST name).
_REFUSED: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Compare: "comparison",
    ast.BoolOp: "and/or",
    ast.IfExp: "if/else",
}


class ArithmeticEval(SimpleEval):  # type: ignore[misc]  # simpleeval ships no type hints
    """simpleeval reduced to arithmetic: number literals, the operators above, calls of the functions
    above by name, and the names pi and e; every other kind of node is refused."""

    def __init__(self) -> None:
        super().__init__(operators=dict(OPERATORS), functions=dict(FUNCTIONS), names=dict(NAMES))
        allowed = (ast.Expr, ast.Constant, ast.UnaryOp, ast.BinOp, ast.Call, ast.Name)
        self.nodes: dict[type, Callable[..., Any]] = {
            kind: handler for kind, handler in self.nodes.items() if kind in allowed
        }

    def _eval(self, node: ast.AST) -> Any:
        if type(node) not in self.nodes:
            kind = _REFUSED.get(type(node), type(node).__name__.lower())
            raise InvalidExpression(f"{kind} is not allowed")
        return super()._eval(node)

    def _eval_constant(self, node: ast.Constant) -> Any:
        if not _is_number(node.value):
            raise InvalidExpression(f"only numbers are allowed, not {node.value!r}")
        return node.value

    def _eval_name(self, node: ast.Name) -> Any:
        if node.id not in NAMES:  # a function name on its own would evaluate to the function
            raise InvalidExpression(f"unknown name {node.id!r}")
        return NAMES[node.id]

    def _eval_call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise InvalidExpression("only calls like sqrt(x) are allowed")
        if node.func.id not in FUNCTIONS:
            raise InvalidExpression(f"unknown function {node.func.id!r}")
        return super()._eval_call(node)


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; raises ComponentError with a short reason.

    >>> evaluate("2 + 3 * 4"), evaluate("floor(7 / 2)")
    (14, 3)
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ComponentError(f"invalid expression: longer than {MAX_EXPRESSION_CHARS:,} characters")
    try:
        # Line breaks would end the expression; nothing arithmetic needs them.
        tree = ast.parse(" ".join(expression.split()), mode="eval")
        value = ArithmeticEval()._eval(tree.body)
    except ZeroDivisionError as e:
        raise ComponentError("division by zero") from e
    except SyntaxError as e:
        raise ComponentError(f"invalid expression: {e.msg}") from e
    except NumberTooHigh as e:
        raise ComponentError(f"invalid expression: {e}") from e
    except InvalidExpression as e:
        raise ComponentError(f"invalid expression: {_short(e)}") from e
    except OverflowError as e:
        raise ComponentError("invalid expression: result too large") from e
    except RecursionError as e:
        raise ComponentError("invalid expression: nested too deeply") from e
    except (ValueError, TypeError) as e:  # math domain errors, wrong argument counts
        raise ComponentError(f"invalid expression: {e}") from e
    if not _is_number(value):
        raise ComponentError("invalid expression: the result is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ComponentError("invalid expression: the result is not a finite number")
    return value  # type: ignore[no-any-return]


def _short(error: InvalidExpression) -> str:
    # simpleeval's own messages quote the whole expression; ours are short already.
    message = str(error)
    return message.split(" in expression ", 1)[0]


def format_number(value: Number) -> str:
    """Integers as they are; floats with 15 significant digits, so 0.1 + 0.2 reads "0.3"."""
    return str(value) if isinstance(value, int) else f"{value:.15g}"


class Calculator(Component):
    type_name = "Calculator"
    description = (
        "Evaluates an arithmetic expression and returns the result. Supports + - * / // % ** and "
        "parentheses, the functions sqrt, abs, round, min, max, floor, ceil, log, sin, cos (radians) "
        "and the constants pi and e. Example: (2 + 3) * sqrt(16)."
    )
    params_schema = tool_params_schema({})
    tool_mode = True

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(
            inputs=("expression",),
            required=frozenset({"expression"}),
            default_input="expression",
            outputs=("result",),
            default_output="result",
        )

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        expression = {
            "type": "string",
            "maxLength": MAX_EXPRESSION_CHARS,
            "description": "an arithmetic expression, e.g. 2 * (3 + 4) ** 2 or round(sqrt(2), 3)",
        }
        return arguments_schema({"expression": expression}, required=("expression",))

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        expression = text_argument(inputs, "expression", MAX_EXPRESSION_CHARS)
        return {"result": format_number(evaluate(expression))}
