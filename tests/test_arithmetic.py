from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prm_builder.synthetic_engine.arithmetic import ExpressionError, UnsafeExpression, evaluate, format_number, is_integer, parse_decimal


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("48/2", "24"),
        (".2*50", "10"),
        ("0.1+0.2", "0.3"),
        ("(16-3-4)*2", "18"),
        ("2**10", "1024"),
        ("7//2", "3"),
        ("-7//2", "-4"),  # Python's floor division, not truncation
        ("-7%3", "2"),
        ("-3+1", "-2"),
        ("80000*1.5", "120000"),
    ],
)
def test_evaluate_exact(expression, expected):
    assert evaluate(expression) == Decimal(expected)


@pytest.mark.parametrize(
    "expression, message",
    [
        ('__import__("os").system("true")', "unexpected '_'"),
        ("a+1", "unexpected 'a'"),
        ("1/0", "no finite value"),
        ("5%0", "no finite value"),
        ("3+", "ends early"),
        ("(3+4", "unclosed parenthesis"),
        ("3 4", "unexpected Decimal"),
        ("[1,2]", "unexpected '\\['"),
    ],
)
def test_evaluate_rejects(expression, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(expression)


@pytest.mark.parametrize(
    "value, like, money, expected",
    [
        ("24", "24", False, "24"),
        ("23.5", "24", False, "23.5"),
        ("7.5", "7.50", True, "7.50"),
        ("7.5", "7", True, "7.50"),
        ("12.0", "12", False, "12"),  # never "12.0"
        ("1300000", "130,000", False, "1,300,000"),
        ("999.5", "1,000", True, "999.50"),
        ("-1234.5", "1,000", False, "-1,234.5"),
        ("24.0001", "24", True, "24"),
        ("0.333333", "0.333", False, "0.333"),
        ("45", "60.00", True, "45.00"),  # whole money written with cents keeps them
    ],
)
def test_format_number_follows_gsm8k_style(value, like, money, expected):
    assert format_number(Decimal(value), like, money) == expected


@pytest.mark.parametrize(
    "expression, message",
    [
        ("2**1000", "small whole exponents"),
        ("9**9**9", "small whole exponents"),
        ("1e999999*1e999999", "exponent notation"),
        ("10**20*10**20", "beyond 10\\*\\*30"),
        ("(" * 13 + "1" + ")" * 13, "nested deeper"),
        ("+".join(["1"] * 5000), "longer than"),
        ("+".join(["1"] * 100), "more than 60 operators"),
    ],
)
def test_hostile_expressions_are_unsafe_not_fatal(expression, message):
    # Bounded before any work: no Decimal overflow, no RecursionError, whatever the input.
    with pytest.raises(UnsafeExpression, match=message):
        evaluate(expression)


@pytest.mark.parametrize("expression, expected", [("-2**2", "-4"), ("2**-1", "0.5"), ("2*-3", "-6"), ("((1+2))*3", "9"), ("2**3**2", "512")])
def test_precedence_as_python(expression, expected):
    assert evaluate(expression) == Decimal(expected)


def test_format_rounds_quotients_to_written_precision():
    assert format_number(evaluate("10/3"), "3") == "3.33"
    assert format_number(evaluate("1/3*3"), "1") == "1"


@pytest.mark.parametrize("text, expected", [("1,200", "1200"), (".5", "0.5"), ("7.50", "7.5"), ("-3", "-3")])
def test_parse_decimal(text, expected):
    assert parse_decimal(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["", "3/4", "12a", "1.2.3", "$5"])
def test_parse_decimal_rejects(text):
    with pytest.raises(ValueError, match="not a number"):
        parse_decimal(text)


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_integers_round_trip(n):
    written = format_number(Decimal(n), "1,000")
    assert parse_decimal(written) == n
    assert "." not in written and is_integer(parse_decimal(written))


@given(st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), places=2, allow_nan=False))
def test_money_keeps_cents(value):
    written = format_number(value, "1.00", money=True)
    assert parse_decimal(written) == value
    if not is_integer(value):
        assert len(written.split(".")[1]) == 2


@given(st.integers(0, 999), st.sampled_from("+-*"), st.integers(0, 999))
def test_evaluate_agrees_with_python_on_integers(a, op, b):
    assert evaluate(f"{a}{op}{b}") == {"+": a + b, "-": a - b, "*": a * b}[op]
