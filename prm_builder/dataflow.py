"""A GSM8K solution as a dataflow of quantities, and one mistake carried through it.

Every quantity is a node: the numbers the question gives, numbers a step introduces (12 months,
half = /2), and every calculation's result. Each later number (a prose mention, an operand) refers
to the node it came from, found by value among the quantities known at that point. When two
quantities share a value (Monday's 40 and Wednesday's 40) a mention of that value is ambiguous:
it is linked to both candidates, and a change that reaches such a mention is refused rather than
guessed (`ambiguous_reference`).

`carry` changes one calculation (an operand misread, an operator swapped, a result slipped) and
recomputes only what depends on it, rewriting the annotation, the visible expression, the shown
result and every prose mention of each changed quantity, then checks that every visible
statement of the copy still holds.
"""

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from .arithmetic import ExpressionError, UnsafeExpression, evaluate, format_number, is_integer, parse_decimal
from .drops import Dropped
from .gsm8k import Calculation, Line, Written, read_line
from .statements import statement_holds, statement_value

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = {word: n for n, word in enumerate(_UNITS)} | {word: 20 + 10 * n for n, word in enumerate(_TENS)}
# Words that give a quantity as surely as a digit does ("twice as many" is a given 2).
NUMBER_WORDS |= {"hundred": 100, "thousand": 1000, "dozen": 12, "twice": 2, "double": 2, "triple": 3, "half": 2}
# The lookahead lets the scan skip every position that cannot start a number without trying each form.
QUESTION_DIGITS = re.compile(r"(?=[\d.])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?|\.\d+)")
# Every number word in one scan. The lookahead consumes only the word itself, so the unit of
# "forty-five" is also read on its own (5), as a separate whole-word match would; a tens word
# takes its hyphenated unit (45).
_NUMBER_WORD = re.compile(
    rf"\b(?=[{''.join(sorted({word[0] for word in NUMBER_WORDS}))}])"  # most words start with another letter: skip them fast
    rf"({'|'.join(sorted(NUMBER_WORDS, key=len, reverse=True))})(?=(?:-({'|'.join(_UNITS[1:10])}))?\b)"
)
_TENS_SET = frozenset(_TENS)
_WORD_RANK = {word: rank for rank, word in enumerate(NUMBER_WORDS)}
TOLERANCE = Decimal("1e-15")
VISIBLE_SWAPPED = {("x", "/"): "/", ("×", "/"): "÷", ("÷", "*"): "×", ("/", "*"): "*"}


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """A mention whose value more than one quantity has: never resolved by guessing."""

    candidates: tuple[int, ...]


@dataclass(slots=True)
class Quantity:
    kind: str  # "question", "given" (introduced by a step) or "calculation"
    value: Decimal
    calculation: Calculation | None = None


@dataclass
class Solution:
    lines: list[Line]
    answer_text: str  # as after "####", commas removed
    answer: Decimal | None  # None when the answer is not a number
    quantities: list[Quantity]
    answer_node: int | None  # the calculation whose result the final answer states
    unsafe: list[str]  # hostile or huge annotations, skipped
    # Calculations no change can be carried from (an ambiguous mention downstream), by node.
    refused: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        # Indexes that let carry visit only what a change reaches: calculations in reading order,
        # and the prose mentions of each quantity (resolved, or ambiguous between candidates).
        self.calculation_list = [calc for line in self.lines for calc in line.calculations]
        self.reading_order = {calc.node: order for order, calc in enumerate(self.calculation_list)}
        self.mentions_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self.ambiguous_mentions: set[int] = set()
        for line_index, line in enumerate(self.lines):
            for token_index, ref in line.refs.items():
                if isinstance(ref, Ambiguous):
                    self.ambiguous_mentions.update(ref.candidates)
                else:
                    self.mentions_of[ref].append((line_index, token_index))
        self.feeding_answer = _feeding(self)

    @property
    def raw_lines(self) -> list[str]:
        return [line.text for line in self.lines]

    def calculations(self) -> Iterator[Calculation]:
        return iter(self.calculation_list)


def _feeding(solution: "Solution") -> list[Calculation]:
    """Calculations the final answer depends on, in reading order."""
    if solution.answer_node is None:
        return []
    seen, stack = set(), [solution.answer_node]
    while stack:
        node = stack.pop()
        calc = solution.quantities[node].calculation
        if node in seen or calc is None:
            continue
        seen.add(node)
        for operand in calc.operands:
            stack.extend(operand.ref.candidates if isinstance(operand.ref, Ambiguous) else [operand.ref])
    return [calc for calc in solution.calculation_list if calc.node in seen]


def parse_solution(answer: str, question: str = "") -> Solution:
    body, marker, final = answer.partition("####")
    answer_text = final.strip().replace(",", "")
    if not marker or not answer_text:
        raise Dropped("no_final_answer")
    texts = [line.strip() for line in body.split("\n") if line.strip()]
    if not texts:
        raise Dropped("no_steps")
    try:
        value = parse_decimal(answer_text)
    except ValueError:
        value = None
    lines = [read_line(text, index) for index, text in enumerate(texts)]
    quantities, sources = _link(lines, question)
    calculated = [node for node in sources.get(value, []) if quantities[node].kind == "calculation"]
    unsafe = [f"line {calc.line + 1}: {calc.expression[:80]}" for line in lines for calc in line.calculations if calc.unsafe]
    return Solution(lines, answer_text, value, quantities, calculated[-1] if calculated else None, unsafe)


def question_values(question: str) -> set[Decimal]:
    """Every quantity the question gives, in digits or in words ("forty-five", "a dozen")."""
    values = {parse_decimal(text) for text in QUESTION_DIGITS.findall(question)}
    # Added word by word in NUMBER_WORDS order, as the quantities' numbering has always followed.
    for word, unit in sorted(_NUMBER_WORD.findall(question.lower()), key=lambda found: _WORD_RANK[found[0]]):
        values.add(Decimal(NUMBER_WORDS[word] + (NUMBER_WORDS[unit] if unit and word in _TENS_SET else 0)))
    return values


def _link(lines: list[Line], question: str) -> tuple[list[Quantity], dict]:
    """Create the quantities and point every operand and mention at the one it refers to."""
    quantities: list[Quantity] = []
    sources: dict[Decimal, list[int]] = defaultdict(list)

    def new(kind: str, value: Decimal, calc: Calculation | None = None) -> int:
        quantities.append(Quantity(kind, value, calc))
        return len(quantities) - 1

    def resolve(value: Decimal, forward: list[int]):
        candidates = sources.get(value, []) + forward
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            return Ambiguous(tuple(candidates))
        node = new("given", value)
        sources[value].append(node)
        return node

    for value in question_values(question):
        sources[value].append(new("question", value))
    for line in lines:
        restatable: dict[Decimal, list[int]] = defaultdict(list)  # result -> calculations of this line
        for calc in line.calculations:
            calc.node = new("calculation", calc.result, calc)
            if all(operand.value != calc.result for operand in calc.operands):
                restatable[calc.result].append(calc.node)
        events = [(line.tokens[i].span[0], 1, i) for i in line.mentions]
        events += [(calc.position, 0, calc) for calc in line.calculations]
        events.sort(key=lambda event: event[:2])
        for position, is_mention, item in events:
            if is_mention:
                value = parse_decimal(line.tokens[item].text)
                # A result restated in its own step ("5 driveways because 35 / 7 = 5") is that
                # result, before or after its calculation, unless the calculation also uses the value.
                restated = restatable.get(value, [])
                if len(restated) == 1:
                    line.refs[item] = restated[0]
                else:
                    line.refs[item] = Ambiguous(tuple(restated)) if restated else resolve(value, [])
            else:
                for operand in item.operands:
                    operand.ref = resolve(operand.value, [])
                    item.depends_on.update(operand.ref.candidates if isinstance(operand.ref, Ambiguous) else (operand.ref,))
                sources[item.result].append(item.node)
    return quantities, sources


# -- carrying one change through ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """What the mistake does to its own calculation: a misread operand, a swapped operator, or a wrong result."""

    operand: tuple[int, Decimal] | None = None  # operand index -> the value misread
    operator: tuple[int, str] | None = None  # operator index -> the new symbol
    result: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    lines: list[str]  # raw lines, annotations included
    answer: Decimal  # the new final answer
    answer_text: str


def carry(solution: Solution, seed: Calculation, change: Change) -> Copy:
    """Apply `change` to `seed` and recompute everything that depends on it; raises Dropped."""
    edits: dict[int, dict[tuple[int, int], str]] = defaultdict(dict)
    changed: dict[int, Decimal] = {}
    _define(seed, _seed_value(seed, change, edits[seed.line]), changed, edits[seed.line], forced=change.result is not None)
    for calc in solution.calculation_list[solution.reading_order[seed.node] + 1 :]:
        if changed.keys().isdisjoint(calc.depends_on):
            continue
        values = [_current(operand.ref, operand.value, changed) for operand in calc.operands]
        if any(new != operand.value for new, operand in zip(values, calc.operands)):
            _define(calc, _recompute(calc, values, {}, edits[calc.line]), changed, edits[calc.line])
    if solution.ambiguous_mentions.intersection(changed):
        raise Dropped("ambiguous_reference")
    for node, new in changed.items():
        for line_index, token_index in solution.mentions_of.get(node, ()):
            token = solution.lines[line_index].tokens[token_index]
            _edit(edits[line_index], Written(token.span, token.text, True, token.money), new)
    if solution.answer_node not in changed:
        raise Dropped("answer_unchanged")
    answer = changed[solution.answer_node]
    _check_visible(solution, edits, seed, change)
    lines = [_apply(line.text, edits[index]) if index in edits else line.text for index, line in enumerate(solution.lines)]
    return Copy(lines, answer, format_number(answer, solution.answer_text))


def _current(ref, old: Decimal, changed: dict[int, Decimal]) -> Decimal:
    if isinstance(ref, Ambiguous):
        if any(node in changed for node in ref.candidates):
            raise Dropped("ambiguous_reference")
        return old
    return changed.get(ref, old)


def _seed_value(calc: Calculation, change: Change, edits: dict) -> Decimal:
    if change.result is not None:
        return change.result
    values = [operand.value for operand in calc.operands]
    operators = {}
    if change.operand:
        index, value = change.operand
        values[index] = value
    if change.operator:
        operators[change.operator[0]] = change.operator[1]
    return _recompute(calc, values, operators, edits)


def _recompute(calc: Calculation, values: list[Decimal], operators: dict[int, str], edits: dict) -> Decimal:
    """Rewrite the operands (and swapped operators) of `calc` everywhere they are written; its new value."""
    if calc.value is None:
        raise Dropped("unsafe_expression" if calc.unsafe else "unparseable_calculation")
    slots = {}
    for operand, slot, value in zip(calc.operands, calc.operand_slots, values):
        if value == operand.value:
            continue
        if (value < 0) != (operand.value < 0):
            raise Dropped("implausible_value")
        slots[slot] = format_number(value, calc.expression[slice(*slot)])
        for copy in operand.copies:
            _edit(edits, copy, value)
    for index, symbol in operators.items():
        slots[calc.operator_slots[index]] = symbol
        for copy in calc.operators[index]:
            # The visible text keeps its way of writing operators ('x' becomes '/', never '*').
            edits[copy.span] = VISIBLE_SWAPPED.get((copy.text, symbol), symbol) if copy.visible else symbol
    try:
        return evaluate(_apply(calc.expression, slots))
    except UnsafeExpression as error:
        raise Dropped("unsafe_expression", str(error)) from None
    except ExpressionError as error:
        raise Dropped("invalid_arithmetic", str(error)) from None


def _define(calc: Calculation, value: Decimal, changed: dict, edits: dict, forced: bool = False) -> None:
    """Write `calc`'s new result wherever it is shown; record it when it differs."""
    shown = calc.results[-1]
    new = parse_decimal(format_number(value, shown.text, calc.money))
    if not _same(new, value) and (_same(calc.value, calc.result) or forced):
        raise Dropped("inexact_result")  # 0.0003 dollars written as 0: not a mistake anyone sees
    old = calc.result
    # A negative count (or a sign that flips: the text would gain or lose a minus), 23.5 clips.
    if (new < 0) != (old < 0) or (is_integer(old) and not is_integer(new) and not calc.money):
        raise Dropped("implausible_value")
    for copy in calc.results:
        _edit(edits, copy, new)
    if new != old:
        changed[calc.node] = new


def _same(a: Decimal, b: Decimal) -> bool:
    """Equal up to the 28-digit rounding of a quotient (1/3*180 is 59.999...)."""
    return a == b or abs(a - b) <= TOLERANCE * max(1, abs(b))


def _edit(edits: dict, written: Written, value: Decimal) -> None:
    text = format_number(value, written.text, written.money)
    written_value = parse_decimal(text)
    if written_value != value and not _same(written_value, value):
        raise Dropped("inexact_result")
    edits[written.span] = text


def _apply(text: str, edits: dict) -> str:
    pieces, end = [], len(text)
    for (start, stop), new in sorted(edits.items(), reverse=True):
        pieces.append(text[stop:end])
        pieces.append(new)
        end = start
    pieces.append(text[:end])
    return "".join(reversed(pieces))


def _check_visible(solution: Solution, edits: dict, seed: Calculation, change: Change) -> None:
    """Every visible statement at and after the mistake holds, except the one intended slip.

    A calculation's own statement holds by construction; the others (a statement GSM8K wrote
    beside an annotation that computes it differently) are read again with the edits applied.
    """
    for index in range(seed.line, len(solution.lines)):
        line, line_edits = solution.lines[index], edits.get(index)
        if not line_edits:
            continue
        for statement in line.unbacked_statements:
            spans = [line.tokens[i].span for i in (*statement.expression, statement.result)]
            if not any(span in line_edits for span in spans):
                continue
            if statement_holds(line.tokens, statement, line_edits):
                value = statement_value(line.tokens, statement, edits=line_edits)
                if value is not None and value < 0 <= (statement_value(line.tokens, statement) or 0):
                    raise Dropped("implausible_value")
                continue
            intended = change.result is not None and index == seed.line and statement.result in seed.result_tokens
            unchanged_expression = not any(span in line_edits for span in spans[:-1])
            if not intended and not (unchanged_expression and not statement_holds(line.tokens, statement)):
                raise Dropped("inconsistent_text")
