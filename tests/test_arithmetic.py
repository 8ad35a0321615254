from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prm_builder.arithmetic import ExpressionError, evaluate, format_number, is_integer, parse_number


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
        ('__import__("os").system("true")', "unsupported syntax Call"),
        ("a+1", "unsupported syntax Name"),
        ("2**1000", "small whole exponents"),
        ("9**9**9", "small whole exponents"),
        ("1/0", "no finite value"),
        ("5%0", "no finite value"),
        ("3+", "not an arithmetic expression"),
        ("[1,2]", "unsupported syntax List"),
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
    ],
)
def test_format_number_follows_gsm8k_style(value, like, money, expected):
    assert format_number(Decimal(value), like, money) == expected


def test_format_rounds_quotients_to_written_precision():
    assert format_number(evaluate("10/3"), "3") == "3.33"
    assert format_number(evaluate("1/3*3"), "1") == "1"


@pytest.mark.parametrize("text, expected", [("1,200", "1200"), (".5", "0.5"), ("7.50", "7.5"), ("-3", "-3")])
def test_parse_number(text, expected):
    assert parse_number(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["", "3/4", "12a", "1.2.3", "$5"])
def test_parse_number_rejects(text):
    with pytest.raises(ValueError, match="not a number"):
        parse_number(text)


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_integers_round_trip(n):
    written = format_number(Decimal(n), "1,000")
    assert parse_number(written) == n
    assert "." not in written and is_integer(parse_number(written))


@given(st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), places=2, allow_nan=False))
def test_money_keeps_cents(value):
    written = format_number(value, "1.00", money=True)
    assert parse_number(written) == value
    if not is_integer(value):
        assert len(written.split(".")[1]) == 2


@given(st.integers(0, 999), st.sampled_from("+-*"), st.integers(0, 999))
def test_evaluate_agrees_with_python_on_integers(a, op, b):
    assert evaluate(f"{a}{op}{b}") == {"+": a + b, "-": a - b, "*": a * b}[op]
