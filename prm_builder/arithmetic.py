"""Safe evaluation of calculator expressions such as GSM8K's `<<48/2=24>>`, and GSM8K's number style.

Expressions are read by a small recursive-descent parser (never `eval`, and cheaper than
`ast.parse` for the hundred thousand expressions of a build) and evaluated over Decimals: sums and products of written
numbers are exact (0.1 + 0.2 is 0.3), a quotient carries 28 significant digits and is compared
after rounding to the digits a solution writes. Anything but plain written numbers,
+ - * / // % **, unary signs and parentheses is rejected.

Hostile input is bounded before it costs anything: an expression longer than a solver would
write, nested deeper than one would, a number in exponent notation, or a value beyond 10**30 is
an `UnsafeExpression`, so the evaluator never overflows a Decimal or the Python stack.
"""

import functools
import re
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, DecimalException

# Bounds far above anything in GSM8K (its longest expression is under 100 characters, nested
# 3 deep) and far below what could overflow a Decimal, the parser or the stack.
MAX_EXPRESSION_LENGTH = 300
MAX_NESTING = 12
MAX_OPERATORS = 60
MAX_EXPONENT = 64
MAX_MAGNITUDE = Decimal(10) ** 30

_PLAIN_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_OPERATOR_CHARS = re.compile(r"[-+*/%]")
_EXPONENT_NOTATION = re.compile(r"[\d.][eE][-+]?\d")
_SIMPLE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([-+*/])\s*(\d+(?:\.\d*)?|\.\d+)")
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(\*\*|//|[-+*/%()])|(\S))")


class ExpressionError(ValueError):
    """The expression is not plain arithmetic, or has no finite value (division by zero)."""


class UnsafeExpression(ExpressionError):
    """The expression is too long, too deep or too large to evaluate safely."""


@functools.lru_cache(maxsize=65536)
def evaluate(expression: str) -> Decimal:
    """The value of an arithmetic expression such as '(16-3-4)*2' or '.5*12'."""
    source = expression.strip()
    _check_size(source)
    simple = _SIMPLE.fullmatch(source)
    if simple:  # most calculator annotations: one operator between two numbers
        return _simple(simple, source, expression)
    tokens = _tokens(source)
    try:
        value, position = _sum(tokens, 0, source)
    except (DecimalException, ZeroDivisionError) as error:
        raise ExpressionError(f"no finite value for {expression!r}") from error
    if position != len(tokens):
        raise ExpressionError(f"not an arithmetic expression: {expression!r} (unexpected {tokens[position]!r})")
    return value


def _simple(match: re.Match, source: str, expression: str) -> Decimal:
    """`a op b`, evaluated exactly as the parser would (same bounds, same errors), minus its overhead."""
    left, op, right = match.groups()
    left, right = _bounded(Decimal(left), source), _bounded(Decimal(right), source)
    try:
        if op == "+":
            value = left + right
        elif op == "-":
            value = left - right
        elif op == "*":
            value = left * right
        else:
            value = left / right
    except (DecimalException, ZeroDivisionError) as error:
        raise ExpressionError(f"no finite value for {expression!r}") from error
    return _bounded(value, source)


def _check_size(source: str) -> None:
    """Linear pre-checks, so that parsing and evaluation stay small whatever the input."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise UnsafeExpression(f"expression longer than {MAX_EXPRESSION_LENGTH} characters ({len(source)})")
    depth = deepest = 0
    for char in source if "(" in source else ():  # most expressions have no parentheses at all
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    if deepest > MAX_NESTING:
        raise UnsafeExpression(f"parentheses nested deeper than {MAX_NESTING} in {source[:60]!r}")
    # Each check is skipped where it cannot fire: a short source cannot hold that many operators.
    if len(source) > MAX_OPERATORS and len(_OPERATOR_CHARS.findall(source)) > MAX_OPERATORS:
        raise UnsafeExpression(f"more than {MAX_OPERATORS} operators in {source[:60]!r}...")
    if ("e" in source or "E" in source) and _EXPONENT_NOTATION.search(source):
        raise UnsafeExpression(f"numbers in exponent notation are not written by solvers: {source[:60]!r}")


def _tokens(source: str) -> list:
    """Numbers (as Decimals, exactly as written) and operator strings; anything else is an error."""
    tokens = []
    for match in _TOKEN.finditer(source):
        number, symbol, other = match.groups()
        if other:
            raise ExpressionError(f"not plain arithmetic: unexpected {other!r} in {source!r}")
        tokens.append(_bounded(Decimal(number), source) if number else symbol)
    return tokens


# A recursive-descent reading of Python's precedence: sum > product > sign > power > atom.
# Chains (1+1+...+1) loop instead of recursing; nesting is bounded by _check_size.


def _sum(tokens: list, position: int, source: str) -> tuple[Decimal, int]:
    value, position = _product(tokens, position, source)
    while position < len(tokens) and tokens[position] in ("+", "-"):
        op = tokens[position]
        right, position = _product(tokens, position + 1, source)
        value = _bounded(value + right if op == "+" else value - right, source)
    return value, position


def _product(tokens: list, position: int, source: str) -> tuple[Decimal, int]:
    value, position = _signed(tokens, position, source)
    while position < len(tokens) and tokens[position] in ("*", "/", "//", "%"):
        op = tokens[position]
        right, position = _signed(tokens, position + 1, source)
        if op == "*":
            value = value * right
        elif op == "/":
            value = value / right
        elif op == "//":  # Python's floor semantics, not Decimal's truncation
            value = (value / right).to_integral_value(rounding=ROUND_FLOOR)
        else:
            value = value - right * (value / right).to_integral_value(rounding=ROUND_FLOOR)
        value = _bounded(value, source)
    return value, position


def _signed(tokens: list, position: int, source: str) -> tuple[Decimal, int]:
    if position < len(tokens) and tokens[position] in ("+", "-"):
        value, end = _signed(tokens, position + 1, source)
        return (-value if tokens[position] == "-" else value), end
    return _power(tokens, position, source)


def _power(tokens: list, position: int, source: str) -> tuple[Decimal, int]:
    base, position = _atom(tokens, position, source)
    if position < len(tokens) and tokens[position] == "**":
        exponent, position = _signed(tokens, position + 1, source)
        if not is_integer(exponent) or abs(exponent) > MAX_EXPONENT:
            raise UnsafeExpression(f"only small whole exponents are supported, got {exponent} in {source!r}")
        base = _bounded(base ** int(exponent), source)
    return base, position


def _atom(tokens: list, position: int, source: str) -> tuple[Decimal, int]:
    if position >= len(tokens):
        raise ExpressionError(f"not an arithmetic expression: {source!r} ends early")
    token = tokens[position]
    if isinstance(token, Decimal):
        return token, position + 1
    if token == "(":
        value, position = _sum(tokens, position + 1, source)
        if position >= len(tokens) or tokens[position] != ")":
            raise ExpressionError(f"not an arithmetic expression: unclosed parenthesis in {source!r}")
        return value, position + 1
    raise ExpressionError(f"not an arithmetic expression: unexpected {token!r} in {source!r}")


def _bounded(value: Decimal, source: str) -> Decimal:
    if abs(value) > MAX_MAGNITUDE:
        raise UnsafeExpression(f"value beyond 10**30 in {source[:60]!r}")
    return value


def is_integer(value: Decimal) -> bool:
    return value == value.to_integral_value()


@functools.lru_cache(maxsize=65536)
def parse_decimal(text: str) -> Decimal:
    """A written number as an exact Decimal: '1,200' -> 1200, '.5' -> 0.5, '7.50' -> 7.50.

    Strict: anything but one plain number (with optional sign and thousands separators) raises
    ValueError. For lenient answer matching see grading.parse_number.
    """
    cleaned = text.replace(",", "").strip()
    if not _PLAIN_DECIMAL.fullmatch(cleaned):
        raise ValueError(f"not a number: {text!r}")
    return Decimal(cleaned)


def decimals_of(text: str) -> int:
    """How many digits a written number has after its decimal point."""
    _, dot, fraction = text.partition(".")
    return len(fraction) if dot else 0


@functools.lru_cache(maxsize=65536)
def format_number(value: Decimal, like: str = "", money: bool = False) -> str:
    """Write `value` in GSM8K's style, following how the number it replaces (`like`) was written.

    Integers stay integers ('12', never '12.0'). Other values are rounded to as many decimals
    as `like` had, at least two; money keeps both ('7.50'), anything else drops trailing zeros
    ('23.5'), and whole money written with cents keeps them ('45.00' for '60.00'). Thousands
    separators are kept when `like` used them.
    """
    integral = value.to_integral_value()
    if value == integral:  # the common case, and the cheap one
        if money and decimals_of(like) == 2:
            return format_number(value, like.replace(".", ""), False) + ".00"  # $60.00 stays $45.00
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
