"""The arithmetic a reader sees in a solution line: tokens and `a op b = c` statements.

Read from the visible text (annotations removed) with every token's span in the raw line, so a
rewrite can edit the raw line. Units between numbers are skipped ("3 hours * 8 miles/hour"),
percents read either way ("30% * 1000 = 300", "16/40 * 100% = 40%"). Linear in the line.
"""

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from .arithmetic import ExpressionError, evaluate, format_number, parse_decimal

WORD = r"[A-Za-z][A-Za-z'’]*(?:-[A-Za-z]+)*"
TIMES_X = r"x(?=[\s\d(.$])"  # "4 x 5": a lone x before a number is a times sign
# Spaces make no token; a run of words ("tubs of lip gloss") is one token, so a unit is one step.
VISIBLE_TOKEN = re.compile(
    r"(?=\S)"  # no token starts with a space: the scan skips spaces without trying every kind
    r"(?:(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,]\d)|\d+(?:\.\d+)?|\.\d+)"
    rf"|(?P<op>[-+*/×÷–−]|(?<![^\s\d)]){TIMES_X})"
    rf"|(?P<word>{WORD}(?:\s+(?!{TIMES_X}){WORD})*)"
    r"|(?P<open>\()|(?P<close>\))|(?P<eq>=)|(?P<dollar>\$)|(?P<percent>%)"
    r"|(?P<other>[^\sA-Za-z\d()=$%+\-*/×÷–−.]+|\.))"
)
VISIBLE_OPERATORS = {"+": "+", "-": "-", "–": "-", "−": "-", "*": "*", "x": "*", "×": "*", "/": "/", "÷": "/"}
# Tokens a written expression is made of, units included ("3 hours * 8 miles/hour"); anything else ends it.
_EXPRESSION_KINDS = {"number", "op", "open", "close", "dollar", "percent", "word"}
# How far back from "=" an expression may start, and how many words a unit may have.
MAX_EXPRESSION_TOKENS = 80
MAX_UNIT_WORDS = 10




class Token(NamedTuple):
    kind: str  # number, op, word (a run of words), open, close, eq, dollar, percent, other
    text: str
    span: tuple[int, int]  # in the raw line
    money: bool = False  # a number written after "$"
    percent: bool = False  # a number written before "%"


@dataclass(slots=True)
class Statement:
    """A visible `a op b = c`: token indices of the expression and of the result."""

    expression: list[int]
    result: int


def visible_tokens(text: str, annotations: list) -> list[Token]:
    """Tokens of the text outside annotations, spans in the raw line; a number never spans an annotation."""
    tokens, start = [], 0
    # Hot (every line of every solution): tuples are built directly, without NamedTuple's keyword defaults.
    new, append = tuple.__new__, tokens.append
    for end, next_start in [*((a.start(), a.end()) for a in annotations), (len(text), len(text))]:
        for match in VISIBLE_TOKEN.finditer(text, start, end):
            kind, span = match.lastgroup, match.span()
            if kind == "number":
                previous = tokens[-1] if tokens else None
                if previous is not None and previous[0] == "op" and _is_sign(tokens, start, span[0]):  # "= -4", "<<0-2=-2>>-2": a negative number
                    tokens[-1] = new(Token, (kind, text[previous[2][0] : span[1]], (previous[2][0], span[1]), False, False))
                else:
                    append(new(Token, (kind, match.group(), span, previous is not None and previous[0] == "dollar", False)))
                continue
            if kind == "percent" and tokens and tokens[-1].kind == "number" and tokens[-1].span[1] == span[0]:
                tokens[-1] = tokens[-1]._replace(percent=True)
            append(new(Token, (kind, match.group(), span, False, False)))
        start = next_start
    return tokens


def _is_sign(tokens: list[Token], segment_start: int, number_start: int) -> bool:
    """Whether the token before a number is a minus sign written against it, not a subtraction."""
    if not tokens or tokens[-1].text not in "-−" or tokens[-1].span[1] != number_start:
        return False
    sign = tokens[-1]
    return sign.span[0] == segment_start or (len(tokens) > 1 and tokens[-2].kind in ("eq", "open"))


def find_statements(tokens: list[Token]) -> list[Statement]:
    """Visible `expression = number` statements, read back from each '=' (units between numbers skipped)."""
    statements = []
    for eq, token in enumerate(tokens):
        if token.kind != "eq":
            continue
        result = _next_number(tokens, eq)
        if result is None:
            continue
        start = eq
        while start > max(eq - MAX_EXPRESSION_TOKENS, 0) and tokens[start - 1].kind in _EXPRESSION_KINDS:
            start -= 1
        expression = _expression(tokens, start, eq)
        if any(tokens[i].kind == "op" and is_binary(tokens, expression, n) for n, i in enumerate(expression)):
            statements.append(Statement(expression, result))
    return statements


def _next_number(tokens: list[Token], eq: int) -> int | None:
    for index in range(eq + 1, min(eq + 4, len(tokens))):
        if tokens[index].kind == "number":
            return index
        if tokens[index].kind != "dollar":
            return None
    return None


def _expression(tokens: list[Token], start: int, end: int) -> list[int]:
    """The arithmetic that ends at `end`: numbers, operators and parentheses, units and '$' left out.

    Read forwards; whatever cannot continue an expression (prose, two numbers in a row) starts it afresh.
    """
    kept, unclosed, expect_operand, index = [], [], True, start
    while index < end:
        token = tokens[index]
        if token.kind == "dollar":
            index += 1
        elif expect_operand and token.kind == "number":
            kept.append(index)
            expect_operand = False
            index = _after_unit(tokens, index + 1, end)
        elif expect_operand and (token.kind == "open" or (token.kind == "op" and token.text in "-–−" and not kept)):
            if token.kind == "open":
                unclosed.append(len(kept))
            kept.append(index)
            index += 1
        elif not expect_operand and token.kind == "op":
            kept.append(index)
            expect_operand = True
            index += 1
        elif not expect_operand and token.kind == "close" and unclosed:
            kept.append(index)
            unclosed.pop()
            index += 1
        else:  # start afresh here (a number after a number is read again as the start)
            restart_here = not expect_operand and token.kind in ("number", "open")
            kept, unclosed, expect_operand = [], [], True
            index += 0 if restart_here else 1
    if expect_operand:
        return []
    # "$100+($100*(10/100) = $110": the expression is what follows the last parenthesis left open.
    return kept[unclosed[-1] + 1 :] if unclosed else kept


def _after_unit(tokens: list[Token], index: int, end: int) -> int:
    """Skip the unit after a number: '%', a few words ("years old"), per-units written tight ("miles/hour")."""
    if index < end and tokens[index].kind == "percent":
        index += 1
    if index < end and tokens[index].kind == "word" and tokens[index].text.count(" ") < MAX_UNIT_WORDS:
        index += 1
    while index + 1 < end and tokens[index].text == "/" and tokens[index + 1].kind == "word":
        if not tokens[index - 1].span[1] == tokens[index].span[0] == tokens[index + 1].span[0] - 1:
            break
        index += 2
    return index


def is_binary(tokens: list[Token], expression: list[int], n: int) -> bool:
    return n > 0 and tokens[expression[n - 1]].kind in ("number", "close")


def arithmetic(tokens: list[Token], indices: list[int], percent_as_fraction: bool, edits: dict | None = None):
    """(expression, operand slots, operator slots) of the visible tokens of a statement.

    `edits` (raw span -> new text) reads the statement as a rewrite of the line would show it.
    """
    parts, operand_slots, operator_slots, length = [], [], [], 0
    for n, index in enumerate(indices):
        token = tokens[index]
        text = edits.get(token.span, token.text) if edits else token.text
        if token.kind == "number":
            written = str(parse_decimal(text))
            operand_slots.append((length, length + len(written)))
            if token.percent and percent_as_fraction:
                written += "/100"
        elif token.kind == "op":
            written = VISIBLE_OPERATORS[text]
            if is_binary(tokens, indices, n):
                operator_slots.append((length, length + 1))
        else:
            written = text
        parts.append(written)
        length += len(written)
    return "".join(parts), operand_slots, operator_slots


def statement_value(tokens: list[Token], statement: Statement, percent_as_fraction: bool = False, edits: dict | None = None) -> Decimal | None:
    """The value of a visible statement's expression; None when it is not arithmetic."""
    try:
        return evaluate(arithmetic(tokens, statement.expression, percent_as_fraction, edits)[0])
    except ExpressionError:
        return None


def statement_holds(tokens: list[Token], statement: Statement, edits: dict | None = None) -> bool:
    """Whether a visible statement is true (either reading of a percent), to the decimals its result is written with."""
    token = tokens[statement.result]
    result = edits.get(token.span, token.text) if edits else token.text
    expected = format_number(parse_decimal(result), result)
    for percent_as_fraction in (False, True):
        value = statement_value(tokens, statement, percent_as_fraction, edits)
        if value is not None and (value == parse_decimal(result) or format_number(value, result) == expected):
            return True
    return False
