"""Final answers: find the one a solution states, then decide whether it equals the reference.

Extraction and comparison are separate steps, as in PRM800K's grader, so each can be tested
on its own and a new answer format only touches one of them.

Extraction (`extract_final_answer`) looks, in this order, for the last `\\boxed{...}` (what
our prompt asks for), the last `#### N` (GSM8K's own format), the last "the answer is ...",
and a final line starting with "A:".

Comparison is one grader for both styles, built on math-verify:
  - a reference that is a plain number (GSM8K's always are; "18", "1,000", "0.5", "\\frac{3}{4}")
    is read exactly as that number, and the answer must have that value: a plain-number answer is
    compared exactly ("$1,000.00", "-\\$5", "1 000", "1.5e3", "18 dollars", "x = 18", "\\frac12"),
    anything else is parsed by math-verify and compared with it ("10^3", "2^{10}", "50\\%" vs 0.5,
    "1.5 \\times 10^3", "7\\frac{1}{2}", "\\sqrt{16}" vs 4);
  - any other reference (MATH style only) is compared with the answer symbolically by math-verify
    ("(3, \\pi/2)" == "\\left( 3, \\frac{\\pi}{2} \\right)").
  The styles differ only there: NUMERIC needs a number-valued reference. LaTeX that computes
  something is computed, never stripped to the number inside it: "\\sqrt{16}" is 4, not 16, and
  "\\frac{\\pi}{2}" is not 2. Before math-verify sees them, thousands separators ("1 000",
  "1\\,000", "1{,}000") and scientific notation (which it reads as 1.5*e*3) are rewritten.
  An answer that states several numbers ("2 hours 30 minutes", "5, 6") is wrong.

A solution without an extractable answer is graded wrong, with outcome "no_answer", so
callers can count such solutions apart from plainly wrong ones.
"""

import functools
import re
import threading
from dataclasses import dataclass
from fractions import Fraction

NUMERIC = "numeric"
MATH = "math"
STYLES = (NUMERIC, MATH)

CORRECT = "correct"
INCORRECT = "incorrect"
NO_ANSWER = "no_answer"

# math-verify guards each parse with a SIGALRM timeout, which only the main thread may set.
MATH_VERIFY_TIMEOUT_S = 5
# Solutions of one problem repeat the same few answers; rollouts repeat them thousands of times.
MEMO_SIZE = 1 << 16

_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(r"answer\s+is\s*[:=]?\s*(.+)", re.IGNORECASE)
_A_LINE = re.compile(r"^\s*A\s*:\s*(.+?)\s*$")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
# A number and what dresses it (see _numeric_form).
_NUMBER_OR_FRACTION = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:/\d+)?")
_LATEX_FRACTION = re.compile(
    r"(?P<sign>-)?\\[dt]?frac(?:\s*\{(?P<num>\d+)\}\s*\{(?P<den>\d+)\}|(?P<num1>\d)(?P<den1>\d))"
)
_CURRENCY = re.compile(r"US\$|\\?\$|€|£|\\euro\b")
_ASSIGNMENT = re.compile(r"^[A-Za-z]\w*\s*=\s*(?=[-\d.\\$])")
_SEPARATOR = re.compile(r",|\s|\\[,;:! ]|\{,\}|~")
_THOUSANDS_GROUPS = re.compile(r"(?<![\d.,])\d{1,3}(?:(?:,|\s|\\[,;:! ]|\{,\}|~)\d{3})+(?![\d,]|\s\d)")
_UNIT_WORDS = re.compile(r"(?<=[\d.%])\s+[A-Za-z][A-Za-z .'\-]*$")
_DIGIT_BEFORE_STOP = re.compile(r"\d\.$")
_PERCENT_SIGN = re.compile(r"\s*\\?%$")
_SCIENTIFIC = re.compile(r"(?<![\w.])(?P<mantissa>\d+(?:\.\d+)?)[eE](?P<exponent>[+-]?\d+)(?![\w.])")


@dataclass(frozen=True)
class Grade:
    answer: str  # the final answer the text states, "" when none was found
    outcome: str  # CORRECT, INCORRECT or NO_ANSWER

    @property
    def correct(self) -> bool:
        return self.outcome == CORRECT


def grade(text: str, reference: str, style: str) -> Grade:
    """Extract the final answer of `text` and compare it with `reference`."""
    answer = extract_final_answer(text)
    if answer is None:
        return Grade("", NO_ANSWER)
    return Grade(answer, CORRECT if answers_match(answer, reference, style) else INCORRECT)


def extract_final_answer(text: str) -> str | None:
    """The answer a solution states, or None when it states none (see the module docstring)."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip() or None
    if "####" in text:
        answer = text.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
        return answer or None
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        return _trim_sentence(matches[-1].group(1))
    lines = [line for line in text.strip().split("\n") if line.strip()]
    if lines:
        match = _A_LINE.match(lines[-1])
        if match:
            return _trim_sentence(match.group(1))
    return None


def _last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces balanced) or `\\boxed 5`, if any."""
    starts = list(_BOX.finditer(text))
    for match in reversed(starts):
        position = match.end()
        if position < len(text) and text[position] == "{":
            depth = 0
            for index in range(position, len(text)):
                if text[index] == "{":
                    depth += 1
                elif text[index] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[position + 1 : index]
            continue  # unbalanced (e.g. cut off by max_new_tokens): try an earlier box
        word = re.match(r"[^\s$]+", text[position:])
        if word:
            return word.group()
    return None


def _trim_sentence(answer: str) -> str | None:
    # "The answer is $18$." -> "18": drop the sentence's full stop and inline-math dollars.
    answer = answer.strip().rstrip(".").strip()
    if len(answer) > 1 and answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    return answer or None


def answers_match(answer: str, reference: str, style: str) -> bool:
    """Is `answer` the same as `reference`? One grader for both styles (see the module docstring).

    A reference that is a number (GSM8K's always are, MATH's often) is compared as that number
    with the value math-verify reads in the answer; any other reference (MATH style only) is
    compared with the answer symbolically by math-verify.
    """
    if style not in STYLES:
        raise ValueError(f"grading style must be one of {list(STYLES)}, got {style!r}")
    expected = _plain_number(reference)
    if expected is None:
        return style == MATH and _math_match(_for_math_verify(answer), _for_math_verify(reference))
    stated = _plain_number(answer)
    if stated is not None:
        return stated == expected  # two plain numbers: exact, no sympy needed
    return _math_match_number(_for_math_verify(_numeric_form(answer)), expected)


def reference_is_gradable(reference: str, style: str) -> bool:
    """Can answers be compared with this reference at all (a number for NUMERIC, parseable for MATH)?"""
    if _plain_number(reference) is not None:
        return True
    return style == MATH and bool(_math_parse(_for_math_verify(reference)))


@functools.lru_cache(maxsize=MEMO_SIZE)
def stated_number(text: str) -> Fraction | None:
    """The one plain number `text` states, else None; lenient about its dress, strict about its value.

    Accepted: "18", "-5", "$1,000.50", "-\\$5", "1 000", "1.5e3", "18 dollars", "\\text{18 eggs}",
    "x = 18", "3/4", "\\frac{3}{4}", "\\frac12", "25%" (25: the sign is dropped, as a vote key).
    None for anything that needs computing ("\\sqrt{16}", "10^3", "5-3") or states several numbers
    ("2 hours 30 minutes"): those go to math-verify, never to a number picked out of the LaTeX.
    """
    return _plain_number(_PERCENT_SIGN.sub("", _numeric_form(text)))


@functools.lru_cache(maxsize=MEMO_SIZE)
def _plain_number(text: str) -> Fraction | None:
    """The value of `text` when, once dressed down (`_numeric_form`), it is a plain number (no percent)."""
    text = _numeric_form(text)
    fraction = _LATEX_FRACTION.fullmatch(text)
    if fraction:
        text = f"{fraction['num'] or fraction['num1']}/{fraction['den'] or fraction['den1']}"
        if fraction["sign"]:
            text = "-" + text
    if not _NUMBER_OR_FRACTION.fullmatch(text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


@functools.lru_cache(maxsize=MEMO_SIZE)
def _numeric_form(text: str) -> str:
    """`text` without what dresses a number: currency, thousands separators, units, `x =`, a full stop.

    Only wrappers and words go: LaTeX that computes something (`\\sqrt`, `^`, `\\pi`) stays.
    """
    text = _LATEX_TEXT.sub(r" \1 ", text.replace("\u2212", "-"))
    text = _CURRENCY.sub("", text)
    text = _ASSIGNMENT.sub("", text.strip())
    text = _group_thousands(text)
    text = _UNIT_WORDS.sub("", text).strip()
    return text.rstrip(".").strip() if _DIGIT_BEFORE_STOP.search(text) else text


def _group_thousands(text: str) -> str:
    # "1,000", "1 000", "1\,000", "1{,}000" -> "1000"; "12,5" and "1, 2" are left alone.
    return _THOUSANDS_GROUPS.sub(lambda m: _SEPARATOR.sub("", m[0]), text)


def _for_math_verify(text: str) -> str:
    """What math-verify mis-reads, rewritten: thousands separators, and 1.5e3 (which it reads as 1.5*e*3)."""
    text = _group_thousands(text.strip().replace("\u2212", "-"))
    return _SCIENTIFIC.sub(lambda m: f"{m['mantissa']}\\times10^{{{m['exponent']}}}", text)


@functools.lru_cache(maxsize=MEMO_SIZE)
def _math_parse(answer: str) -> tuple:
    from math_verify import parse

    # Boxing both sides makes math-verify read exactly the extracted answer, whatever its form.
    return tuple(parse(f"\\boxed{{{answer}}}", parsing_timeout=_timeout()))


@functools.lru_cache(maxsize=MEMO_SIZE)
def _math_match(answer: str, reference: str) -> bool:
    from math_verify import verify

    gold, predicted = _math_parse(reference), _math_parse(answer)
    if not gold or not predicted:
        return False
    return verify(list(gold), list(predicted), timeout_seconds=_timeout())


@functools.lru_cache(maxsize=MEMO_SIZE)
def _math_match_number(answer: str, expected: Fraction) -> bool:
    import sympy
    from math_verify import verify

    predicted = _math_parse(answer)
    if not predicted:
        return False
    gold = sympy.Rational(expected.numerator, expected.denominator)
    return verify([gold], list(predicted), timeout_seconds=_timeout())


def _timeout() -> int | None:
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
