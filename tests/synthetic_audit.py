"""An audit of corrupted `synthetic` rows against their correct row, read from the visible text only.

Deliberately independent of the builder: its own tokenizer (regular expressions over the step
text), its own evaluator (a small recursive-descent parser over Fractions) and its own idea of
where a statement starts (the longest arithmetic suffix before '=', with words dropped). It
shares no code with prm_builder.synthetic_engine.gsm8k / dataflow, so a bug there cannot hide itself here.

`audit_row(row, correct)` returns the set of defects of one corrupted row:
  unconfirmed     the named mistake is not seen in the error step (flip_number: one operand
                  differs and the shown result follows; change_operator: one operator differs and
                  the result follows; calculation_error: same expression, a different, false result)
  new_false       a visible `a op b = c` at or after the error is false, was not false before,
                  and is not the intended slip of a calculation_error
  stale           a result that changed is restated in the same step, or later, with its old value
  negative        a negative quantity that the correct solution does not have
  damaged         the text around the numbers changed (numbers masked), or the step count changed
"""

import re
from fractions import Fraction

NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+"
ANNOTATION = re.compile(r"<<[^<>]*>>")
# Words (units, prose) and per-units ("miles/hour") are dropped before reading arithmetic.
# "6-seater" and "300-page" are words too; a lone "x" between numbers is a times sign.
WORD = r"[A-Za-z][A-Za-z'’]*(?:-[A-Za-z]+)*"
WORDS = re.compile(rf"/{WORD}|\d+(?:\.\d+)?-{WORD}|(?!x(?![A-Za-z])){WORD}(?:/{WORD})*")
ARITHMETIC = re.compile(rf"\s*(?:(?P<num>{NUMBER})(?P<pct>%?)|(?P<op>[-+*/x×÷–−])|(?P<paren>[()])|\$)")
EQUALS = re.compile(rf"=\s*\$*\s*(?P<result>-?(?:{NUMBER}))(?P<pct>%?)")
OPERATOR_NAMES = {"x": "*", "×": "*", "÷": "/", "–": "-", "−": "-"}
# A minus sign that starts a number: after '=', '(' or another operator, or at the start.
NEGATIVE = re.compile(rf"(?:^|(?<=[=(+\-*/:]))\s*[-–−]\s*\$?(?:{NUMBER})")
ALL_NUMBERS = re.compile(NUMBER)


def visible(step: str) -> str:
    return ANNOTATION.sub("", step)


def to_fraction(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


class Statement:
    """`expression = result` as read from the text: the tokens of the expression and the result."""

    def __init__(self, tokens: list[tuple[str, str]], result: str, percent: bool = False):
        self.tokens = tokens
        self.result = result
        self.scale = Fraction(1, 100) if percent else Fraction(1)
        # "30% of 1000" is 0.3 * 1000, "16/40 * 100%" multiplies by 100: either reading may be meant.
        self.values = [_evaluate(tokens, Fraction(1)), _evaluate(tokens, Fraction(1, 100))]
        self.value = self.values[0] if self.values[0] is not None else self.values[1]

    @property
    def numbers(self) -> list[Fraction]:
        return [to_fraction(text) for kind, text in self.tokens if kind in ("num", "pct")]

    @property
    def operators(self) -> list[str]:
        return [text for kind, text in self.tokens if kind == "op"]

    def holds(self) -> bool:
        return any(self._holds(value) for value in self.values if value is not None)

    def _holds(self, value: Fraction) -> bool:
        stated = to_fraction(self.result) * self.scale
        places = len(self.result.partition(".")[2])
        # GSM8K writes rounded quotients (10/3 = 3.33): within half a unit of the last digit written;
        # and writes "75/100*100 = 75%" as often as "75/100 = 75%".
        for expected, scale in ((stated, self.scale), (to_fraction(self.result), Fraction(1))):
            if value == expected or (places > 0 and abs(value - expected) <= scale / (2 * 10**places)):
                return True
        return False


def statements(step: str) -> list[Statement]:
    text = visible(step)
    found = []
    start = 0
    for match in EQUALS.finditer(text):
        # An expression never reaches back past the previous "=" (linear in the step).
        before = WORDS.sub(" ", text[start : match.start()])
        start = match.start() + 1
        tokens = _tail_tokens(before)
        if tokens and any(kind == "op" for kind, _ in tokens[1:]):
            found.append(Statement(tokens, match.group("result"), bool(match.group("pct"))))
    return found


def _tail_tokens(text: str) -> list[tuple[str, str]]:
    """The longest suffix of `text` that is a whole arithmetic expression."""
    tokens, position = [], 0
    for match in ARITHMETIC.finditer(text):
        if match.start() != position:
            tokens = []  # something else between: start again
        position = match.end()
        if match.group("num"):
            tokens.append(("pct" if match.group("pct") else "num", match.group("num")))
        elif match.group("op"):
            tokens.append(("op", OPERATOR_NAMES.get(match.group("op"), match.group("op"))))
        elif match.group("paren"):
            tokens.append(("paren", match.group("paren")))
    if position != len(text.rstrip()) and text.strip():
        return []
    for start in range(len(tokens)):
        if _evaluate(tokens[start:]) is not None:
            return tokens[start:]
    return []


def _evaluate(tokens: list[tuple[str, str]], percent: Fraction = Fraction(1)) -> Fraction | None:
    """Recursive descent over + - * / and parentheses; None when the tokens are not one expression."""
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else (None, None)

    def expression():
        nonlocal position
        value = term()
        while peek() in (("op", "+"), ("op", "-")):
            op = peek()[1]
            position += 1
            value = value + term() if op == "+" else value - term()
        return value

    def term():
        nonlocal position
        value = factor()
        while peek() in (("op", "*"), ("op", "/")):
            op = peek()[1]
            position += 1
            right = factor()
            value = value * right if op == "*" else value / right
        return value

    def factor():
        nonlocal position
        kind, text = peek()
        position += 1
        if kind in ("num", "pct"):
            return to_fraction(text) * (percent if kind == "pct" else 1)
        if (kind, text) == ("op", "-"):
            return -factor()
        if (kind, text) == ("paren", "("):
            value = expression()
            if peek() != ("paren", ")"):
                raise ValueError("unclosed")
            position += 1
            return value
        raise ValueError("not an operand")

    if not tokens:
        return None
    try:
        value = expression()
    except (ValueError, ZeroDivisionError):
        return None
    return value if position == len(tokens) else None


def skeleton(step: str) -> str:
    return ALL_NUMBERS.sub("#", visible(step))


def negatives(step: str) -> int:
    text = visible(step)
    return len(NEGATIVE.findall(text)) + sum(1 for s in statements(step) if s.value is not None and s.value < 0)


def audit_row(row: dict, correct: dict) -> set[str]:
    strategy = row["source"].split("/")[1]
    first = row["first_error"]
    old_steps, new_steps = correct["completions"][:-1], row["completions"][:-1]
    defects = set()
    if len(old_steps) != len(new_steps):
        return {"damaged"}
    if strategy == "wrong_final_answer":
        return set() if old_steps == new_steps else {"damaged"}
    intended = None
    old_error, new_error = statements(old_steps[first]), statements(new_steps[first])
    if len(old_error) == len(new_error):
        intended = _confirmed(strategy, old_error, new_error)
    if intended is None:
        defects.add("unconfirmed")
    changed_results = {}
    for index in range(first, len(new_steps)):
        old, new = old_steps[index], new_steps[index]
        if skeleton(old) != skeleton(new) and not (index == first and strategy == "change_operator" and _one_operator_swapped(old, new)):
            defects.add("damaged")
        if negatives(new) > negatives(old):
            defects.add("negative")
        before, after = statements(old), statements(new)
        if len(before) != len(after):
            defects.add("damaged")
            continue
        for position, (o, n) in enumerate(zip(before, after)):
            if not n.holds() and not (index == first and position == intended) and not (not o.holds() and o.tokens == n.tokens):
                defects.add("new_false")
            if to_fraction(o.result) != to_fraction(n.result):
                changed_results[to_fraction(o.result)] = (index, o)
        if _stale(old, new, before, changed_results, index):
            defects.add("stale")
    return defects


def _confirmed(strategy: str, before: list[Statement], after: list[Statement]) -> int | None:
    """Index of the statement in the error step that shows the named mistake, if any."""
    for position, (o, n) in enumerate(zip(before, after)):
        same_numbers = o.numbers == n.numbers
        same_operators = o.operators == n.operators
        if strategy == "flip_number" and same_operators and len(o.numbers) == len(n.numbers):
            if sum(a != b for a, b in zip(o.numbers, n.numbers)) == 1 and n.holds():
                return position
        if strategy == "change_operator" and same_numbers and len(o.operators) == len(n.operators):
            if sum(a != b for a, b in zip(o.operators, n.operators)) == 1 and n.holds():
                return position
        if strategy == "calculation_error" and same_numbers and same_operators:
            if to_fraction(o.result) != to_fraction(n.result) and o.holds() and not n.holds():
                return position
    return None


def _one_operator_swapped(old: str, new: str) -> bool:
    masked_old = re.sub(r"[-+*/x×÷–−]", "o", skeleton(old))
    masked_new = re.sub(r"[-+*/x×÷–−]", "o", skeleton(new))
    return masked_old == masked_new


def _stale(old: str, new: str, before: list[Statement], changed: dict, index: int) -> bool:
    """A number in the step of a changed result that still shows the old result (a restatement left behind)."""
    old_numbers = [to_fraction(m) for m in ALL_NUMBERS.findall(visible(old))]
    new_numbers = [to_fraction(m) for m in ALL_NUMBERS.findall(visible(new))]
    if len(old_numbers) != len(new_numbers):
        return False
    in_statements = {number for statement in before for number in statement.numbers}
    for old_value, new_value in zip(old_numbers, new_numbers):
        if old_value != new_value or old_value not in changed:
            continue
        step, statement = changed[old_value]
        same_step = step == index and old_value not in statement.numbers
        if same_step and old_value not in in_statements:
            return True
    return False
