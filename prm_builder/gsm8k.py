"""GSM8K solution lines read into the calculations and number mentions a reader sees.

A GSM8K answer is a few lines of reasoning, each with calculator annotations such as
`Natalia sold 48/2 = <<48/2=24>>24 clips in May.`, then `#### 72`. Users see the lines with the
annotations removed, so everything here is read from that visible text, with every token's
span in the raw line kept so that a rewrite can edit the raw line (annotations included).

Per line we find:
- visible statements `a op b = c` (with or without an annotation behind them);
- calculations: an annotation, joined with the statement whose result it shows when that
  statement writes exactly the annotation's expression (its "mirror"), or a statement with no
  annotation at all (GSM8K sometimes computes outside the calculator);
- mentions: every other visible number.
`dataflow` links them into quantities. Reading is linear in the length of a line.
"""

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from .arithmetic import ExpressionError, UnsafeExpression, evaluate, format_number, parse_decimal

ANNOTATION = re.compile(r"<<([^<>]*)>>")
WORD = r"[A-Za-z][A-Za-z'’]*(?:-[A-Za-z]+)*"
TIMES_X = r"x(?=[\s\d(.$])"  # "4 x 5": a lone x before a number is a times sign
# Spaces make no token; a run of words ("tubs of lip gloss") is one token, so a unit is one step.
VISIBLE_TOKEN = re.compile(
    r"(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,]\d)|\d+(?:\.\d+)?|\.\d+)"
    rf"|(?P<op>[-+*/×÷–−]|(?<![^\s\d)]){TIMES_X})"
    rf"|(?P<word>{WORD}(?:\s+(?!{TIMES_X}){WORD})*)"
    r"|(?P<open>\()|(?P<close>\))|(?P<eq>=)|(?P<dollar>\$)|(?P<percent>%)"
    r"|(?P<other>[^\sA-Za-z\d()=$%+\-*/×÷–−.]+|\.)"
)
EXPRESSION_TOKEN = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)|(?P<op>\*\*|//|[-+*/%])|(?P<open>\()|(?P<close>\))|(?P<space>\s+)|(?P<other>.)")
VISIBLE_OPERATORS = {"+": "+", "-": "-", "–": "-", "−": "-", "*": "*", "x": "*", "×": "*", "/": "/", "÷": "/"}
# Tokens a written expression is made of, units included ("3 hours * 8 miles/hour"); anything else ends it.
_EXPRESSION_KINDS = {"number", "op", "open", "close", "dollar", "percent", "word"}
# How far back from "=" an expression may start, and how many words a unit may have.
MAX_EXPRESSION_TOKENS = 80
MAX_UNIT_WORDS = 10


class Unreadable(ValueError):
    """A solution, or a change to it, that cannot be read or rewritten faithfully; `reason` names why.

    Raised for solutions that cannot be parsed (no final answer, no steps) and for corrupted
    copies that cannot be made (an ambiguous reference, a mistake that would not be visible).
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Token(NamedTuple):
    kind: str  # number, op, word (a run of words), open, close, eq, dollar, percent, other
    text: str
    span: tuple[int, int]  # in the raw line
    money: bool = False  # a number written after "$"
    percent: bool = False  # a number written before "%"


class Written(NamedTuple):
    """One place a number or operator is written: in an annotation, or in the visible text."""

    span: tuple[int, int]  # in the raw line
    text: str
    visible: bool
    money: bool = False


@dataclass
class Operand:
    """One number an expression uses, with its copies (annotation and/or visible mirror)."""

    value: Decimal
    copies: list[Written]
    ref: object = None  # the quantity it refers to, set by dataflow

    @property
    def visible(self) -> bool:
        return any(copy.visible for copy in self.copies)


@dataclass
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


@dataclass
class Statement:
    """A visible `a op b = c`: token indices of the expression and of the result."""

    expression: list[int]
    result: int


@dataclass
class Line:
    text: str
    tokens: list[Token]
    statements: list[Statement]
    calculations: list[Calculation]
    mentions: list[int]  # visible number tokens that are not part of a calculation
    # Statements no calculation of this line stands for (checked again after a rewrite).
    unbacked_statements: list[Statement] = field(default_factory=list)
    refs: dict = field(default_factory=dict)  # mention token index -> quantity (set by dataflow)


def visible_text(line: str) -> str:
    return ANNOTATION.sub("", line)


def read_line(text: str, line_index: int) -> Line:
    annotations = list(ANNOTATION.finditer(text))
    tokens = _visible_tokens(text, annotations)
    statements = _statements(tokens)
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


def _visible_tokens(text: str, annotations: list) -> list[Token]:
    """Tokens of the text outside annotations, spans in the raw line; a number never spans an annotation."""
    tokens, start = [], 0
    for end, next_start in [*((a.start(), a.end()) for a in annotations), (len(text), len(text))]:
        for match in VISIBLE_TOKEN.finditer(text, start, end):
            kind = match.lastgroup
            if kind == "number":
                if _is_sign(tokens, start, match.start()):  # "= -4", "<<0-2=-2>>-2": a negative number
                    sign = tokens.pop()
                    tokens.append(Token(kind, text[sign.span[0] : match.end()], (sign.span[0], match.end())))
                    continue
                tokens.append(Token(kind, match.group(), match.span(), bool(tokens) and tokens[-1].kind == "dollar"))
                continue
            if kind == "percent" and tokens and tokens[-1].kind == "number" and tokens[-1].span[1] == match.start():
                tokens[-1] = tokens[-1]._replace(percent=True)
            tokens.append(Token(kind, match.group(), match.span()))
        start = next_start
    return tokens


def _is_sign(tokens: list[Token], segment_start: int, number_start: int) -> bool:
    """Whether the token before a number is a minus sign written against it, not a subtraction."""
    if not tokens or tokens[-1].text not in "-−" or tokens[-1].span[1] != number_start:
        return False
    sign = tokens[-1]
    return sign.span[0] == segment_start or (len(tokens) > 1 and tokens[-2].kind in ("eq", "open"))


def _statements(tokens: list[Token]) -> list[Statement]:
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
        if any(tokens[i].kind == "op" and _is_binary(tokens, expression, n) for n, i in enumerate(expression)):
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


def _is_binary(tokens: list[Token], expression: list[int], n: int) -> bool:
    return n > 0 and tokens[expression[n - 1]].kind in ("number", "close")


def _expression_tokens(expression: str) -> list[tuple[str, str, tuple[int, int]]] | None:
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
        ops = [i for n, i in enumerate(statement.expression) if tokens[i].kind == "op" and _is_binary(tokens, statement.expression, n)]
        for copies, index in zip(operators, ops):
            copies.append(_written(tokens[index]))
    results = [Written((result_start, result_start + len(result_text)), result_text, False)]
    if shows_result:
        results.append(_written(tokens[shown]))
    return Calculation(
        line=line_index,
        position=annotation.start(),
        expression=expression,
        operand_slots=operand_slots,
        operator_slots=operator_slots,
        operands=operands,
        operators=operators,
        result=result,
        results=results,
        money=bool(money),
        value=value,
        shows_expression=mirrored,
        unsafe=unsafe,
        result_tokens=[shown] if shows_result else [],
    )


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
        expression, operand_slots, operator_slots = _arithmetic(tokens, statement.expression, percent_as_fraction)
        value, unsafe = _checked_value(expression, shown.text, result)
        if value is not None or unsafe:
            break
    else:
        return None  # a false or unreadable statement: its numbers stay plain mentions
    numbers = [i for i in statement.expression if tokens[i].kind == "number"]
    binary = [i for n, i in enumerate(statement.expression) if tokens[i].kind == "op" and _is_binary(tokens, statement.expression, n)]
    operands = [Operand(parse_decimal(tokens[i].text), [_written(tokens[i])]) for i in numbers]
    operators = [[_written(tokens[i])] for i in binary]
    return Calculation(
        line=line_index,
        position=shown.span[0],
        expression=expression,
        operand_slots=operand_slots,
        operator_slots=operator_slots,
        operands=operands,
        operators=operators,
        result=result,
        results=[_written(shown)],
        money=shown.money,
        value=value,
        shows_expression=True,
        unsafe=unsafe,
        result_tokens=[statement.result],
    )


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


def _arithmetic(tokens: list[Token], indices: list[int], percent_as_fraction: bool, edits: dict | None = None):
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
            if _is_binary(tokens, indices, n):
                operator_slots.append((length, length + 1))
        else:
            written = text
        parts.append(written)
        length += len(written)
    return "".join(parts), operand_slots, operator_slots


def statement_value(line: Line, statement: Statement, percent_as_fraction: bool = False, edits: dict | None = None) -> Decimal | None:
    """The value of a visible statement's expression; None when it is not arithmetic."""
    try:
        return evaluate(_arithmetic(line.tokens, statement.expression, percent_as_fraction, edits)[0])
    except ExpressionError:
        return None


def statement_holds(line: Line, statement: Statement, edits: dict | None = None) -> bool:
    """Whether a visible statement is true (either reading of a percent), to the decimals its result is written with."""
    token = line.tokens[statement.result]
    result = edits.get(token.span, token.text) if edits else token.text
    expected = format_number(parse_decimal(result), result)
    for percent_as_fraction in (False, True):
        value = statement_value(line, statement, percent_as_fraction, edits)
        if value is not None and (value == parse_decimal(result) or format_number(value, result) == expected):
            return True
    return False


FINAL_STEP = "The answer is: {}"


def render(lines: list[str], final_answer: str, keep_annotations: bool) -> list[str]:
    """The completion: one item per reasoning line, then the step that states the answer.

    Annotations change only the display: the visible text is the same either way.
    """
    steps = lines if keep_annotations else [visible_text(line) for line in lines]
    return [*steps, FINAL_STEP.format(final_answer)]
