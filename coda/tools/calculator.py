"""A safe calculator: arithmetic parsed with `ast` and evaluated node by node, never with eval.

Accepted: int and float literals, + - * / // % ** (and `^` as power, as on calculators),
unary + and -, parentheses, the constants pi, e and tau, and the functions listed in FUNCTIONS.
Limits keep a hostile expression from using much time or memory: its length, its number of
nodes, and the size of integer results. Every failure is a CalculationError with a readable
message; nothing else escapes `evaluate`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Context, Decimal

MAX_EXPRESSION_CHARS = 500
MAX_NODES = 300
#: Integers stay below ~4000 decimal digits (Python refuses to print more than 4300).
MAX_INT_BITS = 13_000
MAX_FLOAT_EXPONENT = 10_000

Number = int | float


class CalculationError(ValueError):
    """The expression is not acceptable or cannot be computed; the message says why."""


CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


_WIDE = Context(prec=500)


def _round(x: Number, digits: Number = 0) -> Number:
    """Halves round away from zero, as people do (round(2.5) is 3, not Python's banker's 2)."""
    if not isinstance(digits, int):
        raise CalculationError("round() takes a whole number of digits")
    if abs(digits) > 100:
        raise CalculationError("round() digits must be between -100 and 100")
    if not math.isfinite(x):
        raise CalculationError("cannot round an infinite or undefined number")
    # Enough precision for any float's digits (a float has at most 309 before the point).
    rounded = Decimal(repr(x)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP, context=_WIDE)
    return int(rounded) if digits <= 0 else float(rounded)


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    # name: (function, fewest arguments, most arguments)
    "sqrt": (math.sqrt, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
}

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_POWER = (ast.Pow, ast.BitXor)
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}

_SYMBOLS = str.maketrans({"\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-"})  # x, divide, minus, dash


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; raises CalculationError for anything else."""
    if not isinstance(expression, str):
        raise CalculationError("the expression must be text")
    text = expression.translate(_SYMBOLS).strip()
    if not text:
        raise CalculationError("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"the expression is too long (over {MAX_EXPRESSION_CHARS} characters)")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculationError(f"not a valid expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise CalculationError("not a valid expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculationError(f"the expression is too complex (over {MAX_NODES} parts)")
    try:
        result = _eval(tree.body)
    except CalculationError:
        raise
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except OverflowError:
        raise CalculationError("the result is too large") from None
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise CalculationError(f"cannot compute: {exc}") from None
    except RecursionError:
        raise CalculationError("the expression is nested too deeply") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise CalculationError("the result is not a finite number")
    return result


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculationError(f"only numbers are allowed, not {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, _POWER):
            return _power(left, right)
        function = _BINARY.get(type(node.op))
        if function is None:
            raise CalculationError(f"operator {type(node.op).__name__} is not allowed")
        return _checked(function(left, right))
    if isinstance(node, ast.UnaryOp):
        unary = _UNARY.get(type(node.op))
        if unary is None:
            raise CalculationError(f"operator {type(node.op).__name__} is not allowed")
        return unary(_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise CalculationError(f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        return _call(node)
    raise CalculationError(f"{type(node).__name__} is not allowed in an expression")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else "this"
        raise CalculationError(f"unknown function {name!r}; functions: {', '.join(FUNCTIONS)}")
    if node.keywords:
        raise CalculationError("keyword arguments are not allowed")
    function, fewest, most = FUNCTIONS[node.func.id]
    if not fewest <= len(node.args) <= most:
        expected = str(fewest) if fewest == most else f"{fewest} to {most}"
        raise CalculationError(f"{node.func.id}() takes {expected} argument(s), got {len(node.args)}")
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise CalculationError("starred arguments are not allowed")
    return _checked(function(*(_eval(arg) for arg in node.args)))


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * base.bit_length() > MAX_INT_BITS:
            raise CalculationError("the result is too large")
    elif abs(exponent) > MAX_FLOAT_EXPONENT and abs(base) != 1 and base != 0:
        raise CalculationError("the exponent is too large")
    if base == 0 and exponent < 0:
        raise CalculationError("division by zero")
    result = base**exponent
    if isinstance(result, complex):
        raise CalculationError("the result is not a real number")
    return _checked(result)


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculationError("the result is too large")
    return value
