"""GSM8K solutions as steps whose calculator annotations can be rewritten consistently.

A GSM8K answer is a few lines of reasoning, each with annotations such as
`Natalia sold 48/2 = <<48/2=24>>24 clips in May.`, then `#### 72`. We keep, per line, where
each annotation is, the visible copy of its expression (`48/2`, "the mirror"), the visible
result after it (`24`) and every other number in the text. That is enough to change one
quantity and carry the change through every later line that used it, the way a real mistake
carries through a solution (`rewrite`).
"""

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from .arithmetic import NUMBER, ExpressionError, decimals_of, evaluate, format_number, parse_number

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>=]*)>>")
# Numbers as written in prose: thousands separators allowed ("130,000").
WRITTEN_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+")
SHOWN_RESULT = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
OPERATOR = re.compile(r"(?<=[\d.)])\s*([-+*/])\s*(?=[\d.(])")
VISIBLE_OPERATORS = {"+": "+", "-": "-", "*": "*", "x": "*", "×": "*", "/": "/", "÷": "/"}
FINAL_STEP = "The answer is: {}"


class ParseError(ValueError):
    """A well-formed problem whose solution cannot be read into steps; `reason` names why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Calculation:
    """One `<<expr=result>>` annotation in a line, with where its visible parts sit."""

    expression: str
    result_text: str
    span: tuple[int, int]
    shown_result: tuple[int, int] | None
    # Visible operands, in the order of the expression's numbers, when the text repeats them.
    mirror: tuple[tuple[int, int], ...] | None
    # Visible operator between mirrored operands i and i+1 (None when not found).
    mirror_operators: tuple[tuple[int, int] | None, ...] | None
    money: bool
    result: Decimal | None  # the stated result; None when it is not a plain number ("3/4")
    value: Decimal | None  # None when the annotation does not evaluate to its stated result
    operands: tuple[Decimal, ...]  # the expression's numbers, in order


@dataclass(frozen=True)
class Step:
    text: str  # the raw line, annotations included
    calculations: tuple[Calculation, ...]
    claimed: tuple[tuple[int, int], ...]  # spans that belong to annotations, mirrors and shown results

    @functools.cached_property
    def elements(self) -> list[tuple[int, str, object]]:
        """Prose numbers and calculations in reading order: a change flows left to right.

        Computed on first use: only lines after a mistake need it.
        """
        items = [(m.start(), "number", m.span()) for m in WRITTEN_NUMBER.finditer(self.text) if not _inside(m.start(), self.claimed)]
        items += [(calc.span[0], "calculation", calc) for calc in self.calculations]
        return sorted(items, key=lambda item: item[0])


@dataclass(frozen=True)
class Solution:
    steps: tuple[Step, ...]
    answer_text: str  # as after "####", commas removed
    answer: Decimal | None  # None when the answer is not a number
    # Checked calculations the final answer depends on, in order, with their line (see path_to_answer).
    path: tuple[tuple[int, Calculation], ...]

    def calculations(self) -> Iterator[tuple[int, Calculation]]:
        for line, step in enumerate(self.steps):
            for calc in step.calculations:
                yield line, calc


def parse_solution(answer: str) -> Solution:
    body, marker, final = answer.partition("####")
    if not marker:
        raise ParseError("no_final_answer")
    answer_text = final.strip().replace(",", "")
    if not answer_text:
        raise ParseError("no_final_answer")
    lines = [line.strip() for line in body.split("\n") if line.strip()]
    if not lines:
        raise ParseError("no_steps")
    try:
        value = parse_number(answer_text)
    except ValueError:
        value = None
    steps = tuple(_parse_step(line) for line in lines)
    return Solution(steps, answer_text, value, path_to_answer(steps, value))


def path_to_answer(steps: tuple[Step, ...], answer: Decimal | None) -> tuple[tuple[int, Calculation], ...]:
    """The last checked calculation producing the answer, and its ancestors.

    A calculation depends on the latest earlier one whose result it uses as an operand.
    """
    calcs = [(line, calc) for line, step in enumerate(steps) for calc in step.calculations if calc.value is not None]
    producer, parents = {}, []
    for position, (_, calc) in enumerate(calcs):
        parents.append({producer[v] for v in calc.operands if v in producer})
        producer[calc.result] = position
    if answer is None or answer not in producer:
        return ()
    on_path, stack = set(), [producer[answer]]
    while stack:
        position = stack.pop()
        if position not in on_path:
            on_path.add(position)
            stack.extend(parents[position])
    return tuple(calcs[position] for position in sorted(on_path))


def _parse_step(line: str) -> Step:
    calculations, claimed = [], []
    segment_start = 0
    for match in ANNOTATION.finditer(line):
        expression, result_text = match.group(1).strip(), match.group(2).strip()
        shown = SHOWN_RESULT.match(line, match.end())
        shown_span = shown.span() if shown else None
        operands = tuple(parse_number(o) for o in NUMBER.findall(expression))
        mirror, operators = _find_mirror(line, segment_start, match.start(), operands)
        calculations.append(
            Calculation(
                expression=expression,
                result_text=result_text,
                span=match.span(),
                shown_result=shown_span,
                mirror=mirror,
                mirror_operators=operators,
                money=line[max(match.start() - 2, 0) : match.start()].rstrip().endswith("$"),
                result=_number_or_none(result_text),
                value=_checked_value(expression, result_text),
                operands=operands,
            )
        )
        claimed.append(match.span())
        claimed += [span for span in (shown_span, *(mirror or ())) if span]
        segment_start = shown_span[1] if shown_span else match.end()
    return Step(line, tuple(calculations), tuple(claimed))


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    for start, end in spans:
        if start <= position < end:
            return True
    return False


def _number_or_none(text: str) -> Decimal | None:
    try:
        return parse_number(text)
    except ValueError:
        return None


def _checked_value(expression: str, result_text: str) -> Decimal | None:
    """The annotation's exact value, or None when it is not arithmetic or disagrees with its result."""
    try:
        value, stated = evaluate(expression), parse_number(result_text)
    except (ExpressionError, ValueError):
        return None
    # GSM8K rounds some results (10/3=3.33): agreeing to the stated decimals is agreeing.
    return value if parse_number(format_number(value, result_text)) == stated or value == stated else None


def _find_mirror(line: str, start: int, end: int, operands: tuple[Decimal, ...]):
    """Spans of the visible copy of an expression just before its annotation, if the text has one."""
    written = list(WRITTEN_NUMBER.finditer(line, start, end))
    if not operands or len(written) < len(operands):
        return None, None
    tail = written[len(written) - len(operands) :]
    if tuple(parse_number(m.group()) for m in tail) != operands:
        return None, None
    operators = []
    for left, right in zip(tail, tail[1:]):
        between = line[left.end() : right.start()]
        symbols = [i for i, ch in enumerate(between) if ch in VISIBLE_OPERATORS]
        operators.append((left.end() + symbols[0], left.end() + symbols[0] + 1) if len(symbols) == 1 else None)
    return tuple(m.span() for m in tail), tuple(operators)


@functools.lru_cache(maxsize=65536)
def operand_spans(expression: str) -> tuple[tuple[int, int], ...]:
    return tuple(m.span() for m in NUMBER.finditer(expression))


@functools.lru_cache(maxsize=65536)
def operator_spans(expression: str) -> tuple[tuple[int, int], ...]:
    """Binary operators between operands (a leading or parenthesised sign is not one)."""
    return tuple(m.span(1) for m in OPERATOR.finditer(expression))


# -- rewriting ---------------------------------------------------------------------------------


class Unrewritable(ValueError):
    """A change reached a calculation that cannot be recomputed; `reason` names why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Change:
    """What the mistake does to its own calculation: new operands, a swapped operator, or a new result."""

    operands: dict[int, Decimal] | None = None  # operand index -> new value
    operator: tuple[int, str] | None = None  # operator index -> new symbol
    result: Decimal | None = None


@dataclass(frozen=True)
class Rewrite:
    lines: list[str]  # raw lines, annotations included
    carried: dict[Decimal, Decimal]  # every value that changed, old -> new


def rewrite(solution: Solution, line_index: int, target: Calculation, change: Change) -> Rewrite:
    """Apply `change` to `target` and carry every changed value through the rest of the solution.

    Later calculations that use a changed value are recomputed with the new one (annotation,
    visible expression and visible result), and later prose mentions of it are updated.
    """
    carried: dict[Decimal, Decimal] = {}
    lines = [step.text for step in solution.steps[:line_index]]
    for index in range(line_index, len(solution.steps)):
        step = solution.steps[index]
        edits: list[tuple[tuple[int, int], str]] = []
        for position, kind, item in step.elements:
            if index == line_index and position < target.span[0]:
                continue
            if kind == "number":
                old = parse_number(step.text[item[0] : item[1]])
                if old in carried:
                    edits.append((item, format_number(carried[old], step.text[item[0] : item[1]])))
            elif item is target:
                edits += _recompute(step.text, item, change, carried)
            else:
                uses = {i: carried[v] for i, v in enumerate(item.operands) if v in carried}
                if uses:
                    edits += _recompute(step.text, item, Change(operands=uses), carried)
        lines.append(_apply(step.text, edits))
    return Rewrite(lines, carried)


def _recompute(line: str, calc: Calculation, change: Change, carried: dict) -> list:
    if calc.value is None:
        raise Unrewritable("unparseable_calculation")
    expression_edits = []
    text_edits = []
    for index, (start, end) in enumerate(operand_spans(calc.expression)):
        if change.operands and index in change.operands:
            new = change.operands[index]
            expression_edits.append(((start, end), format_number(new, calc.expression[start:end])))
            if calc.mirror:
                span = calc.mirror[index]
                text_edits.append((span, format_number(new, line[span[0] : span[1]])))
    if change.operator:
        index, symbol = change.operator
        expression_edits.append((operator_spans(calc.expression)[index], symbol))
        visible = calc.mirror_operators[index] if calc.mirror_operators else None
        if visible:
            text_edits.append((visible, _visible_symbol(symbol, line[visible[0] : visible[1]])))
    expression = _apply(calc.expression, expression_edits)
    if change.result is not None:
        value = change.result
    else:
        try:
            value = evaluate(expression)
        except ExpressionError as error:
            raise Unrewritable("invalid_arithmetic") from error
    result_text = format_number(value, calc.result_text, calc.money)
    new_result = parse_number(result_text)
    if new_result != value and decimals_of(result_text) < 2:
        # 0.0003 dollars written as "0": rounding GSM8K would not do, and no visible mistake.
        raise Unrewritable("inexact_result")
    if new_result != calc.result:
        carried[calc.result] = new_result
    text_edits.append((calc.span, f"<<{expression}={result_text}>>"))
    if calc.shown_result:
        start, end = calc.shown_result
        text_edits.append((calc.shown_result, format_number(new_result, line[start:end], calc.money)))
    return text_edits


def _visible_symbol(symbol: str, shown: str) -> str:
    """Write the swapped operator the way this text writes operators ('x' stays a letter)."""
    if shown in ("x", "×") and symbol == "/":
        return "/"
    if symbol == "*" and shown == "÷":
        return "×"
    return symbol


def _apply(text: str, edits: list[tuple[tuple[int, int], str]]) -> str:
    for (start, end), new in sorted(edits, key=lambda edit: edit[0][0], reverse=True):
        text = text[:start] + new + text[end:]
    return text


def strip_annotations(line: str) -> str:
    return ANNOTATION.sub("", line)


def render(lines: list[str], final_answer: str, keep_annotations: bool) -> list[str]:
    """The completion: one item per reasoning line, then the step that states the answer."""
    steps = lines if keep_annotations else [strip_annotations(line) for line in lines]
    return [*steps, FINAL_STEP.format(final_answer)]


# -- reading problem files -----------------------------------------------------------------------
