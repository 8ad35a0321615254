"""The four mistakes a `synthetic` copy makes, each visible in the step where it happens.

Each strategy takes a parsed solution and a seeded rng and returns (raw lines, index of the
first wrong step, final answer as written), or raises drops.Dropped naming why no copy could
be made. A mistake lands on a calculation the final answer depends on and whose step shows
what changes: `flip_number` a number written in the step's expression, `change_operator` an
operator written there, `calculation_error` the result the step writes. dataflow.carry then
recomputes everything that depends on it.
"""

import functools
import itertools
import random
from collections.abc import Callable, Iterator
from decimal import Decimal

from .arithmetic import format_number, is_integer
from .dataflow import Change, Solution, carry
from .drops import Dropped
from .gsm8k import Calculation

# Changes tried on one calculation before moving to another, and calculations tried per copy
# (bounds the work on a hostile solution of thousands of calculations to linear).
CHANGES_PER_CALCULATION = 6
CALCULATIONS_TRIED = 8
CENT = Decimal("0.01")
SWAPPED = {"+": "-", "-": "+", "*": "/", "/": "*"}
# Reasons that come from the dataflow around a calculation, not from the value the mistake writes.
REFUSED_WHATEVER_THE_CHANGE = {"ambiguous_reference", "unparseable_calculation", "unsafe_expression"}
# When several reasons stopped the candidates, report the most telling one.
REASON_ORDER = (
    "ambiguous_reference",
    "implausible_value",
    "inconsistent_text",
    "inexact_result",
    "invalid_arithmetic",
    "unparseable_calculation",
    "unsafe_expression",
    "answer_unchanged",
)


def flip_number(solution: Solution, rng: random.Random):
    """Misread one number written in a step's expression: a swapped or slipped digit, one more or less."""

    def changes(calc: Calculation) -> Iterator[Change]:
        results = {copy.span for other in solution.lines[calc.line].calculations for copy in other.results}
        # A number that is also an earlier result in a chain ("5+3 = 8 + 2") is that result, not a misreading.
        visible = [i for i, operand in enumerate(calc.operands) if operand.visible and not {c.span for c in operand.copies} & results]
        for index in rng.sample(visible, len(visible)):
            text = next(copy.text for copy in calc.operands[index].copies if copy.visible)
            for value in _nearby_numbers(text, rng):
                yield Change(operand=(index, value))

    return _corrupt(solution, rng, changes, lambda calc: calc.shows_expression and calc.operands)


def change_operator(solution: Solution, rng: random.Random):
    """Use the wrong operation in one step's expression (+ and -, * and / swapped)."""

    def changes(calc: Calculation) -> Iterator[Change]:
        symbols = [calc.expression[slice(*slot)] for slot in calc.operator_slots]
        swappable = [i for i, symbol in enumerate(symbols) if symbol in SWAPPED]
        for index in rng.sample(swappable, len(swappable)):
            yield Change(operator=(index, SWAPPED[symbols[index]]))

    return _corrupt(solution, rng, changes, lambda calc: calc.shows_expression and calc.operators)


def calculation_error(solution: Solution, rng: random.Random):
    """Right expression, wrong result: a slipped digit, off by one or ten, a shifted decimal."""

    def changes(calc: Calculation) -> Iterator[Change]:
        for value in _slips(calc.results[-1].text, rng):
            yield Change(result=value)

    return _corrupt(solution, rng, changes, lambda calc: calc.shows_expression)


def wrong_final_answer(solution: Solution, rng: random.Random):
    """Every step right, the stated answer wrong: often an intermediate result, else a slip."""
    intermediate = sorted({calc.result for calc in solution.calculations() if calc.value is not None} - {solution.answer})
    candidates = list(itertools.islice(_slips(solution.answer_text, rng), 4))
    if intermediate and rng.random() < 0.5:
        candidates.insert(0, rng.choice(intermediate))
    for value in candidates:
        # 0.4 apples for 4 reads as noise, not as a mistake.
        if value != solution.answer and (is_integer(value) or not is_integer(solution.answer)):
            return solution.raw_lines, len(solution.lines), format_number(value, solution.answer_text)
    raise Dropped("no_alternative_answer")


CORRUPTIONS = {
    "flip_number": flip_number,
    "change_operator": change_operator,
    "calculation_error": calculation_error,
    "wrong_final_answer": wrong_final_answer,
}


def _corrupt(solution: Solution, rng: random.Random, changes: Callable, shows_mistake: Callable):
    """Try calculations the answer depends on, whose step shows the mistake, until one carries through."""
    feeding = solution.feeding_answer
    if not feeding:
        raise Dropped("answer_not_computed")
    candidates = [calc for calc in feeding if calc.value is not None and shows_mistake(calc)]
    if not candidates:
        raise Dropped("mistake_not_visible")
    rng.shuffle(candidates)
    reasons = set()
    for calc in candidates[:CALCULATIONS_TRIED]:
        if calc.node in solution.refused:
            reasons.add(solution.refused[calc.node])
            continue
        for change in itertools.islice(changes(calc), CHANGES_PER_CALCULATION):
            try:
                copy = carry(solution, calc, change)
            except Dropped as error:
                reasons.add(error.reason)
                if error.reason in REFUSED_WHATEVER_THE_CHANGE:
                    solution.refused[calc.node] = error.reason
                    break
                continue
            return copy.lines, calc.line, copy.answer_text
    raise Dropped(min(reasons, key=REASON_ORDER.index) if reasons else "mistake_not_visible")


def _nearby_numbers(text: str, rng: random.Random) -> list[Decimal]:
    """Numbers a reader could take `text` for: a swapped or slipped digit, one more or less."""
    value = Decimal(text.replace(",", ""))
    candidates = {value + 1, value - 1, *_digit_variants(text.replace(",", ""))}
    candidates.discard(value)
    candidates = sorted(c for c in candidates if c > 0)
    rng.shuffle(candidates)
    return candidates


def _slips(text: str, rng: random.Random) -> Iterator[Decimal]:
    """Wrong results a solver plausibly writes for `text`: digit slips, off by one or ten, shifted decimal."""
    text = text.replace(",", "")
    value = Decimal(text)
    kinds = [
        [value + 1, value - 1],
        [value + 10, value - 10],
        _digit_variants(text),
        [value * 10, value / 10] if value else [],
    ]
    rng.shuffle(kinds)
    seen = {value}
    written = format_number(value, text)
    for kind in kinds:
        rng.shuffle(kind)
        for candidate in kind:
            # Non-negative, new, writable as GSM8K writes numbers (at most two decimals), and
            # not the right value once rounded (.001 written as 0 is no visible slip).
            if (
                candidate >= 0
                and candidate not in seen
                and candidate.quantize(CENT) == candidate
                and format_number(candidate, text) != written
            ):
                seen.add(candidate)
                yield candidate


def _digit_variants(text: str) -> list[Decimal]:
    """Adjacent digits swapped, or one digit off by one, keeping the number's shape (a new list: callers shuffle it)."""
    return list(_digit_variants_of(text))


@functools.lru_cache(maxsize=4096)
def _digit_variants_of(text: str) -> tuple[Decimal, ...]:
    # Cached: every copy of a solution (and every retry) reads the same few numbers again.
    digits = [i for i, ch in enumerate(text) if ch.isdigit()]
    variants = []
    for a, b in zip(digits, digits[1:]):
        if b == a + 1 and text[a] != text[b]:
            variants.append(text[:a] + text[b] + text[a] + text[b + 1 :])
    for i in digits:
        for delta in (-1, 1):
            digit = int(text[i]) + delta
            if 0 <= digit <= 9 and not (i == digits[0] and digit == 0 and len(digits) > 1):
                variants.append(text[:i] + str(digit) + text[i + 1 :])
    return tuple(Decimal(v) for v in variants)
