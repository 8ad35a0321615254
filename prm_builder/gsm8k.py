"""GSM8K solution lines read into the calculations and number mentions a reader sees.

A GSM8K answer is a few lines of reasoning, each with calculator annotations such as
`Natalia sold 48/2 = <<48/2=24>>24 clips in May.`, then `#### 72`. Users see the lines with the
annotations removed, so everything is read from that visible text (statements.py), with every
token's span in the raw line kept so that a rewrite can edit the raw line (annotations included).

Per line we find:
- calculations: an annotation, joined with the visible statement whose result it shows when
  that statement writes exactly the annotation's expression (its "mirror"), or a statement
  with no annotation at all (GSM8K sometimes computes outside the calculator);
- mentions: every other visible number.
`dataflow` links them into quantities. Reading is linear in the length of a line.
"""

import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from .arithmetic import ExpressionError, UnsafeExpression, evaluate, format_number, parse_decimal
from .statements import VISIBLE_OPERATORS, Statement, Token, arithmetic, find_statements, is_binary, visible_tokens

ANNOTATION = re.compile(r"<<([^<>]*)>>")
# `a op b`, tokens as EXPRESSION_TOKEN reads them (a number cannot end early: a digit or '.' is no operator).
_SIMPLE_EXPRESSION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(\*\*|//|[-+*/%])\s*(\d+(?:\.\d+)?|\.\d+)")
EXPRESSION_TOKEN = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)|(?P<op>\*\*|//|[-+*/%])|(?P<open>\()|(?P<close>\))|(?P<space>\s+)|(?P<other>.)")


class Written(NamedTuple):
    """One place a number or operator is written: in an annotation, or in the visible text."""

    span: tuple[int, int]  # in the raw line
    text: str
    visible: bool
    money: bool = False


@dataclass(slots=True)
class Operand:
    """One number an expression uses, with its copies (annotation and/or visible mirror)."""

    value: Decimal
    copies: list[Written]
    ref: object = None  # the quantity it refers to, set by dataflow

    @property
    def visible(self) -> bool:
        return any(copy.visible for copy in self.copies)


@dataclass(slots=True)
class Calculation:
    """`expression = result`, as an annotation, a visible statement, or both (mirrored)."""

    line: int
    position: int  # raw position where its result is defined: reading order within the line
    expression: str  # plain arithmetic over the operands, e.g. '48/2'
    operand_slots: list[tuple[int, int]]  # where each operand sits in `expression`
    operator_slots: list[tuple[int, int]]  # where each binary operator sits in `expression`
    operands: list[Operand]
    operators: list[list[Written]]  # the copies of each binary operator
    result: Decimal  # as stated
    results: list[Written]  # the annotation's result and the visible one
    money: bool
    value: Decimal | None  # None when it does not evaluate to its stated result
    shows_expression: bool  # the step's visible text writes this expression
    unsafe: bool = False
    node: int = -1  # its quantity, set by dataflow
    depends_on: set = field(default_factory=set)  # quantities its operands may refer to, set by dataflow
    result_tokens: list[int] = field(default_factory=list)  # visible token indices of the result

    @property
    def shown_result(self) -> Written | None:
        return self.results[-1] if self.results[-1].visible else None


@dataclass(slots=True)
class Line:
    text: str
    tokens: list[Token]
    statements: list[Statement]
    calculations: list[Calculation]
    mentions: list[int]  # visible number tokens that are not part of a calculation
    # Statements no calculation of this line stands for (checked again after a rewrite).
    unbacked_statements: list[Statement] = field(default_factory=list)
    refs: dict = field(default_factory=dict)  # mention token index -> quantity (set by dataflow)


@functools.lru_cache(maxsize=4096)
def without_annotations(line: str) -> str:
    # Cached: every copy of a solution shares most of its lines with the original.
    return ANNOTATION.sub("", line)


def read_line(text: str, line_index: int) -> Line:
    annotations = list(ANNOTATION.finditer(text))
    tokens = visible_tokens(text, annotations)
    statements = find_statements(tokens)
    by_result = {statement.result: statement for statement in statements}
    calculations, claimed = [], set()
    starts = {token.span[0]: index for index, token in enumerate(tokens) if token.kind == "number"}
    for annotation in annotations:
        shown = starts.get(annotation.end())
        calc = _annotated(text, line_index, annotation, tokens, shown, by_result.get(shown))
        if calc is None:
            continue
        if len(calc.operands) == 1 and not calc.operators and calc.value is not None and not calc.shows_expression and shown in by_result:
            # `1.5 / .25 = <<6=6>>6`: the calculator only copies a result the text computes.
            visible = _unannotated(line_index, by_result[shown], tokens)
            if visible is not None:
                visible.results[:0] = [Written(calc.operands[0].copies[0].span, calc.operands[0].copies[0].text, False), calc.results[0]]
                calc = visible
        calculations.append(calc)
        claimed.update(calc.result_tokens)
        if calc.shows_expression:
            claimed.update(i for i in by_result[shown].expression if tokens[i].kind == "number")
    annotated_results = {index for calc in calculations for index in calc.result_tokens}
    for statement in statements:
        if statement.result not in annotated_results:
            calc = _unannotated(line_index, statement, tokens)
            if calc is not None:
                calculations.append(calc)
                claimed.update(calc.result_tokens)
                claimed.update(i for i in statement.expression if tokens[i].kind == "number")
    calculations.sort(key=lambda calc: calc.position)
    mentions = [i for i, token in enumerate(tokens) if token.kind == "number" and i not in claimed]
    backed = {calc.result_tokens[0] for calc in calculations if calc.shows_expression and calc.result_tokens}
    unbacked = [statement for statement in statements if statement.result not in backed]
    return Line(text, tokens, statements, calculations, mentions, unbacked)


def _expression_tokens(expression: str) -> list[tuple[str, str, tuple[int, int]]] | None:
    simple = _SIMPLE_EXPRESSION.fullmatch(expression)
    if simple:  # most annotations: the same three tokens the general reading finds, read in one match
        return [("number", simple.group(1), simple.span(1)), ("op", simple.group(2), simple.span(2)), ("number", simple.group(3), simple.span(3))]
    found = [(m.lastgroup, m.group(), m.span()) for m in EXPRESSION_TOKEN.finditer(expression) if m.lastgroup != "space"]
    return None if any(kind == "other" for kind, _, _ in found) else found


def _annotated(text, line_index, annotation, tokens, shown, statement) -> Calculation | None:
    inner = annotation.group(1)
    if inner.count("=") != 1:
        return None  # not a calculator annotation; it is removed from the display like any other
    left, right = inner.split("=")
    expression, result_text = left.strip(), right.strip()
    offset = annotation.start(1)
    expression_start = offset + len(left) - len(left.lstrip())
    result_start = offset + len(left) + 1 + len(right) - len(right.lstrip())
    try:
        result = parse_decimal(result_text)
    except ValueError:
        return None
    parsed = _expression_tokens(expression)
    value, unsafe = _checked_value(expression, result_text, result)
    value = value if parsed else None
    parsed = parsed or []
    operand_slots = [span for kind, _, span in parsed if kind == "number"]
    operator_slots = [span for n, (kind, _, span) in enumerate(parsed) if kind == "op" and n > 0 and parsed[n - 1][0] in ("number", "close")]
    operands = [Operand(parse_decimal(expression[s:e]), [Written((expression_start + s, expression_start + e), expression[s:e], False)]) for s, e in operand_slots]
    operators = [[Written((expression_start + s, expression_start + e), expression[s:e], False)] for s, e in operator_slots]
    shows_result = shown is not None and parse_decimal(tokens[shown].text) == result
    money = shows_result and tokens[shown].money
    mirrored = shows_result and statement is not None and _mirrors(parsed, statement, tokens)
    if mirrored:
        numbers = [i for i in statement.expression if tokens[i].kind == "number"]
        for operand, index in zip(operands, numbers):
            operand.copies.append(_written(tokens[index]))
        ops = [i for n, i in enumerate(statement.expression) if tokens[i].kind == "op" and is_binary(tokens, statement.expression, n)]
        for copies, index in zip(operators, ops):
            copies.append(_written(tokens[index]))
    results = [Written((result_start, result_start + len(result_text)), result_text, False)]
    if shows_result:
        results.append(_written(tokens[shown]))
    calc = Calculation(line_index, annotation.start(), expression, operand_slots, operator_slots, operands, operators, result, results, bool(money), value, mirrored)
    calc.unsafe, calc.result_tokens = unsafe, [shown] if shows_result else []
    return calc


def _written(token: Token) -> Written:
    return Written(token.span, token.text, True, token.money)


def _mirrors(parsed, statement: Statement, tokens: list[Token]) -> bool:
    """The visible expression writes exactly the annotation's: same numbers, operators, parentheses, order."""
    visible = [tokens[i] for i in statement.expression]
    if len(visible) != len(parsed):
        return False
    for token, (kind, written, _) in zip(visible, parsed):
        if token.kind != kind:
            return False
        if kind == "number" and parse_decimal(token.text) != parse_decimal(written):
            return False
        if kind == "op" and VISIBLE_OPERATORS.get(token.text) != written:
            return False
    return True


def _unannotated(line_index: int, statement: Statement, tokens: list[Token]) -> Calculation | None:
    """A visible statement with no annotation behind it, as a calculation of its own."""
    shown = tokens[statement.result]
    result = parse_decimal(shown.text)
    # "30% * 1000 = 300" reads 30% as 0.3; "16/40 * 100% = 40%" reads it as 100: keep the reading that holds.
    for percent_as_fraction in (False, True):
        expression, operand_slots, operator_slots = arithmetic(tokens, statement.expression, percent_as_fraction)
        value, unsafe = _checked_value(expression, shown.text, result)
        if value is not None or unsafe:
            break
    else:
        return None  # a false or unreadable statement: its numbers stay plain mentions
    numbers = [i for i in statement.expression if tokens[i].kind == "number"]
    binary = [i for n, i in enumerate(statement.expression) if tokens[i].kind == "op" and is_binary(tokens, statement.expression, n)]
    operands = [Operand(parse_decimal(tokens[i].text), [_written(tokens[i])]) for i in numbers]
    operators = [[_written(tokens[i])] for i in binary]
    # The statement is its own mirror: it shows the expression and the result.
    calc = Calculation(line_index, shown.span[0], expression, operand_slots, operator_slots, operands, operators, result, [], shown.money, value, True)
    calc.results, calc.unsafe, calc.result_tokens = [_written(shown)], unsafe, [statement.result]
    return calc


def _checked_value(expression: str, result_text: str, stated: Decimal) -> tuple[Decimal | None, bool]:
    """(exact value, unsafe): the value is None when not arithmetic or not equal to the stated result."""
    try:
        value = evaluate(expression)
    except UnsafeExpression:
        return None, True
    except ExpressionError:
        return None, False
    # GSM8K rounds some results (10/3=3.33): agreeing to the stated decimals is agreeing.
    if value == stated or parse_decimal(format_number(value, result_text)) == stated:
        return value, False
    return None, False


FINAL_STEP = "The answer is: {}"


def render(lines: list[str], final_answer: str, keep_annotations: bool) -> list[str]:
    """The completion: one item per reasoning line, then the step that states the answer.

    Annotations change only the display: the visible text is the same either way.
    """
    steps = lines if keep_annotations else [without_annotations(line) for line in lines]
    return [*steps, FINAL_STEP.format(final_answer)]
