"""The `synthetic` config: exact rows for hand-checked problems, invariants over all of GSM8K."""

import re
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from datasets import load_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prm_builder
from prm_builder import gsm8k, synthetic
from prm_builder.arithmetic import decimals_of, evaluate, parse_number
from prm_builder.problems import SAMPLE_PROBLEMS, read_gsm8k_jsonl

NATALIA = {
    "index": 0,
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
BETTY = {
    "index": 2,
    "question": "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
    "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
    "How much more money does Betty need to buy the wallet?",
    "answer": "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\n"
    "Betty's grandparents gave her 15 * 2 = $<<15*2=30>>30.\n"
    "This means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5",
}
JULIE = {
    "index": 3,
    "question": "Julie is reading a 120-page book. Yesterday, she was able to read 12 pages and today, she read twice "
    "as many pages as yesterday. If she wants to read half of the remaining pages tomorrow, how many pages should "
    "she read?",
    "answer": "Maila read 12 x 2 = <<12*2=24>>24 pages today.\n"
    "So she was able to read a total of 12 + 24 = <<12+24=36>>36 pages since yesterday.\n"
    "There are 120 - 36 = <<120-36=84>>84 pages left to be read.\n"
    "Since she wants to read half of the remaining pages tomorrow, then she should read 84/2 = <<84/2=42>>42 pages.\n"
    "#### 42",
}


def make_config(**options) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(name="synthetic", problems="sample", **options)


def rows_of(problem, **options):
    drops = Counter()
    rows = list(synthetic.problem_rows(make_config(num_incorrect_per_problem=4, **options), "train", problem, drops))
    return {row["id"]: row for row in rows}, drops


# -- exact rows, checked by hand ---------------------------------------------------------------------


def test_natalia_every_strategy_exactly():
    rows, drops = rows_of(NATALIA)
    assert not drops
    assert rows == {
        "train-00000/correct": {
            "id": "train-00000/correct",
            "prompt": NATALIA["question"],
            "reference_answer": "72",
            "completions": [
                "Natalia sold 48/2 = 24 clips in May.",
                "Natalia sold 48+24 = 72 clips altogether in April and May.",
                "The answer is: 72",
            ],
            "labels": [True, True, True],
            "first_error": -1,
            "final_answer": "72",
            "source": "synthetic/correct",
        },
        # Misread 2 as 1: the wrong 48 is carried into the total.
        "train-00000/flip_number/0": {
            "id": "train-00000/flip_number/0",
            "prompt": NATALIA["question"],
            "reference_answer": "72",
            "completions": [
                "Natalia sold 48/1 = 48 clips in May.",
                "Natalia sold 48+48 = 96 clips altogether in April and May.",
                "The answer is: 96",
            ],
            "labels": [False, False, False],
            "first_error": 0,
            "final_answer": "96",
            "source": "synthetic/flip_number",
        },
        "train-00000/change_operator/1": {
            "id": "train-00000/change_operator/1",
            "prompt": NATALIA["question"],
            "reference_answer": "72",
            "completions": [
                "Natalia sold 48/2 = 24 clips in May.",
                "Natalia sold 48-24 = 24 clips altogether in April and May.",
                "The answer is: 24",
            ],
            "labels": [True, False, False],
            "first_error": 1,
            "final_answer": "24",
            "source": "synthetic/change_operator",
        },
        # A shifted digit (24 -> 240) that the next step faithfully uses.
        "train-00000/calculation_error/2": {
            "id": "train-00000/calculation_error/2",
            "prompt": NATALIA["question"],
            "reference_answer": "72",
            "completions": [
                "Natalia sold 48/2 = 240 clips in May.",
                "Natalia sold 48+240 = 288 clips altogether in April and May.",
                "The answer is: 288",
            ],
            "labels": [False, False, False],
            "first_error": 0,
            "final_answer": "288",
            "source": "synthetic/calculation_error",
        },
        # Every step right, the intermediate 24 reported as the answer.
        "train-00000/wrong_final_answer/3": {
            "id": "train-00000/wrong_final_answer/3",
            "prompt": NATALIA["question"],
            "reference_answer": "72",
            "completions": [
                "Natalia sold 48/2 = 24 clips in May.",
                "Natalia sold 48+24 = 72 clips altogether in April and May.",
                "The answer is: 24",
            ],
            "labels": [True, True, False],
            "first_error": 2,
            "final_answer": "24",
            "source": "synthetic/wrong_final_answer",
        },
    }


def test_betty_money_and_a_constant_reused_later():
    rows, _ = rows_of(BETTY)
    completions = {row_id.split("/", 1)[1]: (row["completions"], row["labels"]) for row_id, row in rows.items()}
    # 100 misread as 10 in the first step only: the wallet still costs 100 in the last step.
    assert completions["flip_number/2"] == (
        [
            "In the beginning, Betty has only 10 / 2 = $5.",
            "Betty's grandparents gave her 15 * 2 = $30.",
            "This means, Betty needs 100 - 5 - 30 - 15 = $50 more.",
            "The answer is: 50",
        ],
        [False, False, False, False],
    )
    assert completions["change_operator/3"] == (
        [
            "In the beginning, Betty has only 100 / 2 = $50.",
            "Betty's grandparents gave her 15 * 2 = $30.",
            "This means, Betty needs 100 - 50 + 30 - 15 = $65 more.",
            "The answer is: 65",
        ],
        [True, True, False, False],
    )
    assert completions["calculation_error/0"][0][2:] == ["This means, Betty needs 100 - 50 - 30 - 15 = $6 more.", "The answer is: 6"]
    assert completions["wrong_final_answer/1"] == (
        [
            "In the beginning, Betty has only 100 / 2 = $50.",
            "Betty's grandparents gave her 15 * 2 = $30.",
            "This means, Betty needs 100 - 50 - 30 - 15 = $5 more.",
            "The answer is: 15",
        ],
        [True, True, True, False],
    )


def test_julie_error_carried_through_three_later_steps():
    rows, _ = rows_of(JULIE)
    row = rows["train-00003/calculation_error/3"]
    assert row["completions"] == [
        "Maila read 12 x 2 = 42 pages today.",
        "So she was able to read a total of 12 + 42 = 54 pages since yesterday.",
        "There are 120 - 54 = 66 pages left to be read.",
        "Since she wants to read half of the remaining pages tomorrow, then she should read 66/2 = 33 pages.",
        "The answer is: 33",
    ]
    assert row["labels"] == [False] * 5 and row["first_error"] == 0 and row["final_answer"] == "33"
    flipped = rows["train-00003/flip_number/1"]
    assert flipped["completions"][1:4] == [
        "So she was able to read a total of 12 + 14 = 26 pages since yesterday.",
        "There are 120 - 26 = 94 pages left to be read.",
        "Since she wants to read half of the remaining pages tomorrow, then she should read 94/2 = 47 pages.",
    ]
    assert flipped["labels"] == [True, False, False, False, False]


def test_annotations_kept_on_request_and_rewritten_consistently():
    rows, _ = rows_of(JULIE, keep_calculator_annotations=True)
    assert rows["train-00003/calculation_error/3"]["completions"][:3] == [
        "Maila read 12 x 2 = <<12*2=42>>42 pages today.",
        "So she was able to read a total of 12 + 42 = <<12+42=54>>54 pages since yesterday.",
        "There are 120 - 54 = <<120-54=66>>66 pages left to be read.",
    ]


def test_visible_operator_keeps_the_texts_symbols():
    problem = {
        "index": 7,
        "question": "q",
        "answer": "He buys 6 x 3 = <<6*3=18>>18 apples.\nHe eats 2, so 18 - 2 = <<18-2=16>>16 are left.\n#### 16",
    }
    solution = gsm8k.parse_solution(problem["answer"])
    line, calc = solution.path[0]
    result = gsm8k.rewrite(solution, line, calc, gsm8k.Change(operator=(0, "/")))
    assert result.lines == [
        "He buys 6 / 3 = <<6/3=2>>2 apples.",
        "He eats 2, so 2 - 2 = <<2-2=0>>0 are left.",
    ]
    assert result.carried == {Decimal(18): Decimal(2), Decimal(16): Decimal(0)}


def test_unparseable_problems_are_counted_not_fatal():
    drops = Counter()
    config = make_config()
    assert list(synthetic.problem_rows(config, "train", {"index": 0, "question": "q", "answer": "no marker"}, drops)) == []
    assert list(synthetic.problem_rows(config, "train", {"index": 1, "question": "q", "answer": "\n\n#### 4"}, drops)) == []
    assert drops == Counter({"no_final_answer": 1, "no_steps": 1})


def test_answer_without_calculation_skips_propagating_strategies():
    problem = {"index": 0, "question": "q", "answer": "She has four apples.\n#### 4"}
    drops = Counter()
    rows = list(synthetic.problem_rows(make_config(num_incorrect_per_problem=4), "train", problem, drops))
    assert [row["source"] for row in rows] == ["synthetic/correct", "synthetic/wrong_final_answer"]
    assert drops == Counter(
        {
            "flip_number:answer_not_computed": 1,
            "change_operator:answer_not_computed": 1,
            "calculation_error:answer_not_computed": 1,
        }
    )


# -- invariants over all of GSM8K ------------------------------------------------------------------


ANNOTATED = re.compile(r"<<([^<>=]*)=([^<>=]*)>>([\d,]*\.?\d*)")


def check_row_invariants(row: dict, correct: dict) -> None:
    labels = row["labels"]
    assert len(labels) == len(row["completions"])
    first = row["first_error"]
    assert first == (labels.index(False) if False in labels else -1)
    # Monotone: once wrong, every later step is wrong.
    assert labels == [i < first for i in range(len(labels))] if first >= 0 else all(labels)
    assert row["completions"][-1] == f"The answer is: {row['final_answer']}"
    if row["source"] == "synthetic/correct":
        assert row["final_answer"] == row["reference_answer"] and first == -1
        return
    assert parse_number(row["final_answer"]) != parse_number(row["reference_answer"])
    assert row["completions"][:first] == correct["completions"][:first]
    if row["source"] == "synthetic/wrong_final_answer":
        assert first == len(labels) - 1
        assert row["completions"][:-1] == correct["completions"][:-1]
    else:
        assert row["completions"][first] != correct["completions"][first]
    # The mistake itself: a calculation_error states a wrong result for a right expression.
    if row["source"] == "synthetic/calculation_error":
        assert not all(consistent(e, r) for e, r, _ in ANNOTATED.findall(row["completions"][first]))
    # Every calculation after the mistake agrees with itself: the error is carried, not left stale.
    later = row["completions"][first + 1 :] if row["source"] == "synthetic/calculation_error" else row["completions"][first:]
    for step in later:
        for expression, result, shown in ANNOTATED.findall(step):
            if consistent(expression, result):
                if shown:
                    assert parse_number(shown) == parse_number(result), step
            else:
                assert correct_has(correct, expression, result), (step, row["id"])


def consistent(expression: str, result: str) -> bool:
    """Exactly right, or a quotient rounded to the two or more decimals GSM8K writes (10/3=3.33)."""
    value, stated = evaluate(expression), parse_number(result)
    places = decimals_of(result)
    return value == stated or (places >= 2 and abs(value - stated) < Decimal(10) ** -places)


def correct_has(correct: dict, expression: str, result: str) -> bool:
    """GSM8K itself has a few wrong annotations; a copy may keep one unchanged, never introduce one."""
    return any(f"<<{expression}={result}>>" in step for step in correct["completions"])


@pytest.fixture(scope="module")
def full_build(gsm8k_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("full_gsm8k_cache")
    return load_dataset(
        "prm_builder", "synthetic", problems=str(gsm8k_dir), keep_calculator_annotations=True, cache_dir=str(cache)
    )


def test_full_gsm8k_invariants(full_build):
    sizes = {split: len(data) for split, data in full_build.items()}
    # 8,792 problems x (1 correct + 3 corrupted), less the copies a strategy cannot make.
    assert sizes["train"] + sizes["test"] >= 0.93 * 8792 * 4
    for split, data in full_build.items():
        rows = data.to_list()
        assert len({row["id"] for row in rows}) == len(rows)
        by_problem = defaultdict(list)
        for row in rows:
            by_problem[row["id"].split("/")[0]].append(row)
        for problem_rows in by_problem.values():
            correct = problem_rows[0]
            assert correct["source"] == "synthetic/correct"
            for row in problem_rows:
                check_row_invariants(row, correct)
        sources = Counter(row["source"] for row in rows)
        corrupted = [n for source, n in sources.items() if source != "synthetic/correct"]
        # Spread evenly over the four strategies (some problems cannot take every one).
        assert max(corrupted) <= 1.2 * min(corrupted), sources


def test_full_gsm8k_drops_are_recorded(full_build):
    folder = full_build["train"].cache_files[0]["filename"].rsplit("/", 1)[0]
    drops = prm_builder.load_drops(folder)
    skipped = sum(drops["train"].values())
    assert 0 < skipped < 0.1 * len(full_build["train"])
    assert all(reason.split(":")[0] in synthetic.STRATEGIES for reason in drops["train"])


# -- property: any chain of calculations ------------------------------------------------------------


@st.composite
def chained_problems(draw):
    """A GSM8K-style solution whose every step uses the previous result."""
    value = draw(st.integers(2, 500))
    lines = []
    for step in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from("+-*"))
        operand = draw(st.integers(2, 60))
        expression = f"{value}{op}{operand}"
        result = int(evaluate(expression))
        lines.append(f"Step {step + 1} gives {value} {op} {operand} = <<{expression}={result}>>{result} things.")
        value = result
    return {"index": draw(st.integers(0, 10**5)), "question": "q", "answer": "\n".join(lines) + f"\n#### {value}"}


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(chained_problems(), st.integers(0, 3))
def test_invariants_hold_for_any_chain(problem, seed):
    drops = Counter()
    config = make_config(num_incorrect_per_problem=4, seed=seed, keep_calculator_annotations=True)
    rows = list(synthetic.problem_rows(config, "train", problem, drops))
    assert rows[0]["source"] == "synthetic/correct"
    for row in rows:
        check_row_invariants(row, rows[0])
    # Every step feeds the answer, so every strategy must find a mistake that changes it.
    made = {row["source"].split("/")[1] for row in rows[1:]}
    assert made | {reason.split(":")[0] for reason in drops} == set(synthetic.STRATEGIES)


# -- the bundled sample -------------------------------------------------------------------------------


def test_sample_problems_are_consistent_and_offline():
    problems = read_gsm8k_jsonl(SAMPLE_PROBLEMS)
    assert len(problems) >= 30
    for problem in problems:
        solution = gsm8k.parse_solution(problem["answer"])
        assert solution.path, problem["question"]
        for _, calc in solution.calculations():
            assert calc.value is not None and calc.value == calc.result, calc
    dataset = load_dataset("prm_builder", "synthetic", problems="sample")
    assert set(dataset) == {"train", "test"}
    assert len(dataset["test"]) > 0 and len(dataset["train"]) > len(dataset["test"])

