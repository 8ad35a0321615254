"""Final-answer extraction and equivalence, on hand-made formats and on the real answer formats of
MATH500 (tests/data/math500) and GSM8K (tests/data/gsm8k)."""

import json
from fractions import Fraction

import pytest

from prm_builder.common import grading
from prm_builder.common.grading import MATH, NUMERIC, answers_match, extract_final_answer, grade, stated_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So she makes 9 * 2 = 18 dollars.\n\n\\boxed{18}", "18"),
        ("First \\boxed{3}, then the final \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),  # the last box
        ("The answer is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\fbox{7}", "7"),
        ("\\boxed 42 is it", "42"),
        ("Janet sells 9 eggs.\n#### 1,000", "1,000"),
        ("The answer is: 18.", "18"),
        ("so the final answer is $3\\sqrt{2}$.", "3\\sqrt{2}"),
        ("Q: how many?\nA: 5 apples", "5 apples"),
        # A box cut off by max_new_tokens does not count; an earlier complete one does.
        ("\\boxed{4} but wait \\boxed{5", "4"),
        ("\\boxed{5", None),
        ("I am not sure what to do.", None),
        ("A: \n", None),
        ("\\boxed{}", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", Fraction(18)),
        ("$18.00", Fraction(18)),
        ("US$18", Fraction(18)),
        ("€18", Fraction(18)),
        ("\\$1,000", Fraction(1000)),
        ("1,234,567.5", Fraction(2469135, 2)),
        ("18 dollars", Fraction(18)),
        ("x = -5", Fraction(-5)),
        ("\u22125", Fraction(-5)),
        ("25\\%", Fraction(25)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("3/4", Fraction(3, 4)),
        ("0.75", Fraction(3, 4)),
        ("18.", Fraction(18)),
        ("\\text{18 eggs}", Fraction(18)),
        ("-\\$5", Fraction(-5)),
        ("1 000", Fraction(1000)),
        ("1\\,000", Fraction(1000)),
        ("1.5e3", Fraction(1500)),
        ("\\frac12", Fraction(1, 2)),
        ("\\sqrt{16}", None),  # computes something: math-verify's job, not a number picked out of the LaTeX
        ("\\frac{\\pi}{2}", None),
        ("10^3", None),
        ("2 hours 30 minutes", None),  # two numbers: no single answer
        ("5-3", None),
        ("eighteen", None),
        ("1/0", None),
        ("", None),
    ],
)
def test_stated_number(text, expected):
    assert stated_number(text) == expected


@pytest.mark.parametrize(
    ("answer", "reference", "style", "expected"),
    [
        ("$18.00", "18", NUMERIC, True),
        ("18.5", "18", NUMERIC, False),
        ("1,000", "1000", NUMERIC, True),
        ("1/2", "0.5", NUMERIC, True),
        ("two", "2", NUMERIC, False),
        ("\\frac{1}{2}", "0.5", MATH, True),
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", MATH, True),
        ("(3, \\pi)", "\\left( 3, \\frac{\\pi}{2} \\right)", MATH, False),
        ("2\\sqrt{2}", "\\sqrt{8}", MATH, True),
        ("\\text{Evelyn}", "\\text{Evelyn}", MATH, True),
        ("10", "11", MATH, False),
    ],
)
def test_answers_match(answer, reference, style, expected):
    assert answers_match(answer, reference, style) is expected


# One grader for both styles: (answer, reference, style, correct). A number-valued reference is
# compared with the value math-verify reads in the answer; LaTeX is never stripped to a lone number.
TRICKY = [
    # fractions
    ("\\frac12", "0.5", NUMERIC, True),
    ("\\dfrac{3}{4}", "0.75", NUMERIC, True),
    ("3/4", "0.75", NUMERIC, True),
    ("7\\frac{1}{2}", "7.5", NUMERIC, True),
    ("0.333333", "1/3", NUMERIC, False),  # two plain numbers compare exactly
    (".5", "0.5", NUMERIC, True),
    # powers and scientific notation
    ("10^3", "1000", NUMERIC, True),
    ("2^{10}", "1024", NUMERIC, True),
    ("10^{-2}", "0.01", NUMERIC, True),
    ("1.5e3", "1500", NUMERIC, True),
    ("1E3", "1000", NUMERIC, True),
    ("1e-2", "0.01", NUMERIC, True),
    ("1.5 \\times 10^3", "1500", NUMERIC, True),
    ("1.5\\cdot 10^{3}", "1500", NUMERIC, True),
    # currency, signs, units, percent
    ("-\\$5", "-5", NUMERIC, True),
    ("\\$-5", "-5", NUMERIC, True),
    ("\u22125", "-5", NUMERIC, True),
    ("-5", "5", NUMERIC, False),
    ("$1,000.00", "1000", NUMERIC, True),
    ("\\$18.00", "18", NUMERIC, True),
    ("18 dollars", "18", NUMERIC, True),
    ("\\text{18 eggs}", "18", NUMERIC, True),
    ("180^\\circ", "180", NUMERIC, True),
    ("x = 5", "5", NUMERIC, True),
    ("25\\%", "25", NUMERIC, True),
    ("50\\%", "0.5", NUMERIC, True),
    # thousands separators
    ("1 000", "1000", NUMERIC, True),
    ("1\\,000", "1000", NUMERIC, True),
    ("1{,}000", "1000", NUMERIC, True),
    ("1 234 567", "1234567", NUMERIC, True),
    ("12,5", "12.5", NUMERIC, False),  # not a thousands group: math-verify reads the set {12, 5}
    # LaTeX that computes something is computed, never stripped to the number inside it
    ("\\sqrt{16}", "16", NUMERIC, False),
    ("\\sqrt{16}", "4", NUMERIC, True),
    ("\\frac{\\pi}{2}", "2", NUMERIC, False),
    ("\\pi", "3.14", NUMERIC, False),
    ("4\\sqrt{2}", "5.66", NUMERIC, False),
    ("5-3", "2", NUMERIC, True),
    # not one number
    ("2 hours 30 minutes", "2", NUMERIC, False),
    ("2 hours 30 minutes", "150", NUMERIC, False),
    ("5, 6", "5", NUMERIC, False),
    ("eighteen", "18", NUMERIC, False),
    ("18.5", "18", NUMERIC, False),
    # a reference that is no number cannot grade GSM8K-style
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{2}", NUMERIC, False),
    # MATH style: numbers as above, everything else symbolic
    ("1.5e3", "1500", MATH, True),
    ("2.5e-3", "\\frac{1}{400}", MATH, True),
    ("2.5\\times10^{-3}", "0.0025", MATH, True),
    ("1 000", "1000", MATH, True),
    ("\\sqrt{16}", "16", MATH, False),
    ("\\pi/2", "\\frac{\\pi}{2}", MATH, True),
    ("2", "\\frac{\\pi}{2}", MATH, False),
    ("x=5", "5", MATH, True),
    ("1.5e3", "1.5 \\times 10^{3}", MATH, True),
]


@pytest.mark.parametrize(("answer", "reference", "style", "expected"), TRICKY)
def test_tricky_pairs(answer, reference, style, expected):
    assert answers_match(answer, reference, style) is expected


def test_the_tricky_table_is_big_enough():
    assert len(TRICKY) >= 40 and {style for *_, style, _ in TRICKY} == {NUMERIC, MATH}


def test_grade_outcomes():
    assert grade("... so \\boxed{72}", "72", NUMERIC) == grading.Grade("72", grading.CORRECT)
    assert grade("... so \\boxed{71}", "72", NUMERIC) == grading.Grade("71", grading.INCORRECT)
    # Unparseable answers are graded wrong, and told apart from wrong ones.
    none = grade("I give up", "72", NUMERIC)
    assert none == grading.Grade("", grading.NO_ANSWER) and not none.correct
    with pytest.raises(ValueError, match="grading style must be one of"):
        answers_match("1", "1", "fuzzy")


def test_reference_is_gradable():
    assert grading.reference_is_gradable("1,000", NUMERIC)
    assert not grading.reference_is_gradable("about ten", NUMERIC)
    assert not grading.reference_is_gradable("\\sqrt{16}", NUMERIC)  # a number, but not a plain one
    assert grading.reference_is_gradable("\\sqrt{16}", MATH)
    assert grading.reference_is_gradable("\\frac{14}{3}", MATH)


def _math500(test_data):
    with open(test_data / "math500" / "test.jsonl", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


@pytest.mark.slow
def test_math500_reference_solutions_grade_correct(test_data):
    """Every official MATH500 solution's boxed answer equals the recorded answer under math-verify."""
    problems = _math500(test_data)
    assert len(problems) == 500
    wrong = [
        (p["unique_id"], p["answer"])
        for p in problems
        if not grade(p["solution"], p["answer"], MATH).correct
    ]
    assert wrong == []


@pytest.mark.slow
def test_math500_answers_do_not_match_other_problems(test_data):
    """Pairing each answer with the next problem's: equal only where the two answers really are equal."""
    problems = _math500(test_data)
    pairs = list(zip(problems, problems[1:]))
    matched = [(a["answer"], b["answer"]) for a, b in pairs if answers_match(a["answer"], b["answer"], MATH)]
    # The 3 of 499 neighbours whose answers agree ("x=5" states the value 5).
    assert matched == [("5", "x=5"), ("7", "7"), ("3", "3")]


@pytest.mark.parametrize("split", ["train", "test"])
def test_gsm8k_solutions_grade_correct(gsm8k_dir, split):
    """Every GSM8K solution's own `#### N` line grades correct against N, and not against N + 1."""
    with open(gsm8k_dir / f"{split}.jsonl", encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    assert len(rows) == {"train": 7473, "test": 1319}[split]
    for row in rows:
        reference = row["answer"].rsplit("####", 1)[1].strip()
        assert grade(row["answer"], reference, NUMERIC).correct, row["answer"]
        off_by_one = stated_number(reference) + 1
        assert not answers_match(reference, str(off_by_one), NUMERIC)


def test_gsm8k_answers_in_model_formats(gsm8k_dir):
    """The same reference written the ways models write answers."""
    with open(gsm8k_dir / "test.jsonl", encoding="utf-8") as file:
        first = json.loads(file.readline())
    reference = first["answer"].rsplit("####", 1)[1].strip()
    assert reference == "18"
    for text in [
        "She makes \\boxed{18} dollars.",
        "The answer is $18.",
        "The answer is: \\$18.00",
        "#### 18",
        "Q: How much?\nA: 18 dollars",
        "So she earns \\boxed{\\$18} every day.",
    ]:
        assert grade(text, reference, NUMERIC).correct, text
