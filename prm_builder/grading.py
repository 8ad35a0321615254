"""Final answers: find the one a solution states, then decide whether it equals the reference.

Extraction and comparison are separate steps, as in PRM800K's grader, so each can be tested
on its own and a new answer format only touches one of them.

Extraction (`extract_final_answer`) looks, in this order, for the last `\\boxed{...}` (what
our prompt asks for), the last `#### N` (GSM8K's own format), the last "the answer is ...",
and a final line starting with "A:".

Comparison has two styles:
  numeric  GSM8K: both sides must be exactly one number, equal as fractions after dropping
           `$`, `%`, thousands commas, units and LaTeX wrappers ("$1,000.00" == "1000").
  math     MATH: math-verify parses both sides into sympy and compares them symbolically
           ("\\frac{1}{2}" == "0.5", "(3, \\pi/2)" == "\\left( 3, \\frac{\\pi}{2} \\right)").

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
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*-?(?:\d+(?:\.\d+)?|\.\d+))?")


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
    """Is `answer` the same as `reference` under `style` (NUMERIC or MATH)?"""
    if style == NUMERIC:
        expected = stated_number(reference)
        return expected is not None and stated_number(answer) == expected
    if style == MATH:
        return _math_match(answer.strip(), reference.strip())
    raise ValueError(f"grading style must be one of {list(STYLES)}, got {style!r}")


def reference_is_gradable(reference: str, style: str) -> bool:
    """Can answers be compared with this reference at all (a number for NUMERIC, parseable for MATH)?"""
    if style == NUMERIC:
        return stated_number(reference) is not None
    return bool(_math_parse(reference.strip()))


@functools.lru_cache(maxsize=MEMO_SIZE)
def stated_number(text: str) -> Fraction | None:
    """The one number `text` states ("$1,000.50", "18 dollars", "\\frac{3}{4}", "25%"), else None.

    None when the text holds no number or several ("2 hours 30 minutes"): an answer that does
    not commit to one value is not a GSM8K answer.
    """
    cleaned = _LATEX_TEXT.sub(r" \1 ", text)
    cleaned = _LATEX_FRACTION.sub(r"(\1)/(\2)", cleaned)
    for latex in ("\\$", "\\%", "\\!", "\\,", "\\;", "\\ ", "\\left", "\\right"):
        cleaned = cleaned.replace(latex, " ")
    cleaned = cleaned.replace("\u2212", "-").replace("(", " ").replace(")", " ")
    cleaned = _THOUSANDS.sub("", cleaned)
    numbers = _NUMBER.findall(cleaned)
    if len(numbers) != 1:
        return None
    numerator, _, denominator = numbers[0].replace(" ", "").partition("/")
    try:
        value = Fraction(numerator)
        return value / Fraction(denominator) if denominator else value
    except (ValueError, ZeroDivisionError):
        return None


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


def _timeout() -> int | None:
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
