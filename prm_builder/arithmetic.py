"""Safe evaluation of calculator expressions such as GSM8K's `<<48/2=24>>`, and GSM8K's number style.

Expressions are parsed with `ast` and evaluated over Decimals: sums and products of written
numbers are exact (0.1 + 0.2 is 0.3), a quotient carries 28 significant digits and is compared
after rounding to the digits a solution writes. Anything but numbers, + - * / // % **, unary
signs and parentheses is rejected. Never `eval`.
"""

import ast
import functools
import re
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, DivisionByZero, InvalidOperation

Number = Decimal

# Bounds that keep a hostile or corrupted expression from computing 9**9**9.
_MAX_EXPONENT = 64
_MAX_MAGNITUDE = Decimal(10) ** 30

NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


class ExpressionError(ValueError):
    """The expression is not plain arithmetic, or has no finite value (division by zero, overflow)."""


@functools.lru_cache(maxsize=65536)
def evaluate(expression: str) -> Decimal:
    """The value of an arithmetic expression such as '(16-3-4)*2' or '.5*12'."""
    source = expression.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"not an arithmetic expression: {expression!r}") from error
    try:
        value = _evaluate(tree.body, source)
    except (DivisionByZero, InvalidOperation, ZeroDivisionError) as error:
        raise ExpressionError(f"no finite value for {expression!r}") from error
    if abs(value) > _MAX_MAGNITUDE:
        raise ExpressionError(f"value too large in {expression!r}")
    return value


def _evaluate(node: ast.AST, source: str) -> Decimal:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # The literal as written (the source is one line), not the float, so 0.1 stays one tenth.
        return Decimal(source[node.col_offset : node.end_col_offset])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _evaluate(node.operand, source)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, source), _evaluate(node.right, source)
        op = type(node.op)
        if op is ast.Add:
            return left + right
        if op is ast.Sub:
            return left - right
        if op is ast.Mult:
            return left * right
        if op is ast.Div:
            return left / right
        if op is ast.FloorDiv:  # Python's floor semantics, not Decimal's truncation
            return (left / right).to_integral_value(rounding=ROUND_FLOOR)
        if op is ast.Mod:
            return left - right * (left / right).to_integral_value(rounding=ROUND_FLOOR)
        if op is ast.Pow:
            if not is_integer(right) or abs(right) > _MAX_EXPONENT or abs(left) > _MAX_MAGNITUDE:
                raise ExpressionError(f"only small whole exponents are supported, got {right} in {source!r}")
            return left ** int(right)
    raise ExpressionError(f"unsupported syntax {type(node).__name__} in {source!r}")


def is_integer(value: Decimal) -> bool:
    return value == value.to_integral_value()


@functools.lru_cache(maxsize=65536)
def parse_number(text: str) -> Decimal:
    """'1,200' -> 1200, '.5' -> 0.5, '7.50' -> 7.50. Raises ValueError on anything else."""
    cleaned = text.replace(",", "").strip()
    if not _PLAIN_NUMBER.fullmatch(cleaned):
        raise ValueError(f"not a number: {text!r}")
    return Decimal(cleaned)


def decimals_of(text: str) -> int:
    """How many digits a written number has after its decimal point."""
    _, dot, fraction = text.partition(".")
    return len(fraction) if dot else 0


def format_number(value: Decimal, like: str = "", money: bool = False) -> str:
    """Write `value` in GSM8K's style, following how the number it replaces (`like`) was written.

    Integers stay integers ('12', never '12.0'). Other values are rounded to as many decimals
    as `like` had, at least two; money keeps both ('7.50'), anything else drops trailing zeros
    ('23.5'). Thousands separators are kept when `like` used them.
    """
    integral = value.to_integral_value()
    if value == integral:  # the common case, and the cheap one
        if "," not in like:
            return str(int(integral))
        rounded = value
    else:
        places = max(decimals_of(like), 2)
        rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if is_integer(rounded):
        digits = str(int(rounded))
    else:
        digits = f"{rounded:f}"
        if not money:
            digits = digits.rstrip("0")
    if "," in like and abs(rounded) >= 1000:
        whole, dot, fraction = digits.partition(".")
        digits = f"{int(whole):,}{dot}{fraction}"
    return digits
