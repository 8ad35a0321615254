"""The `synthetic` config: exact rows for hand-checked problems, invariants over all of GSM8K."""

import json
import logging
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from datasets import load_dataset, load_dataset_builder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.synthetic_audit import audit_row, visible

import prm_builder
from prm_builder import synthetic
from prm_builder.arithmetic import evaluate
from prm_builder.dataflow import Change, carry, parse_solution
from prm_builder.drops import Dropped
from prm_builder.gsm8k import read_line
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
    options.setdefault("num_incorrect_per_problem", 4)
    rows = list(synthetic.problem_rows(make_config(**options), "train", problem, drops))
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
    # Half instead of twice: $7.50 (money may take cents), carried into the last step.
    assert completions["change_operator/3"] == (
        [
            "In the beginning, Betty has only 100 / 2 = $50.",
            "Betty's grandparents gave her 15 / 2 = $7.50.",
            "This means, Betty needs 100 - 50 - 7.5 - 15 = $27.50 more.",
            "The answer is: 27.5",
        ],
        [True, False, False, False],
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


def test_keeping_annotations_changes_display_only(gsm8k_dir):
    problems = read_gsm8k_jsonl(gsm8k_dir / "train.jsonl")[:150]
    plain, kept = Counter(), Counter()
    for problem in problems:
        without = list(synthetic.problem_rows(make_config(), "train", problem, plain))
        with_annotations = list(synthetic.problem_rows(make_config(keep_calculator_annotations=True), "train", problem, kept))
        assert [row["id"] for row in without] == [row["id"] for row in with_annotations]
        for a, b in zip(without, with_annotations):
            assert (a["labels"], a["first_error"], a["final_answer"]) == (b["labels"], b["first_error"], b["final_answer"])
            assert a["completions"] == [visible(step) for step in b["completions"]]
    assert plain == kept


# -- the dataflow: a mistake follows dependencies, never values ------------------------------------

FORTY = {
    "index": 5,
    "question": "On Monday Tom reads forty pages. On Wednesday he reads 8 pages an hour for 5 hours. "
    "How many pages does he read on the two days?",
    "answer": "On Wednesday he reads 8*5 = <<8*5=40>>40 pages.\nOn the two days he reads 40+40 = <<40+40=80>>80 pages.\n#### 80",
}


def test_a_mention_shared_by_two_quantities_is_refused_not_guessed():
    solution = parse_solution(FORTY["answer"], FORTY["question"])
    wednesday, total = solution.calculations()
    # Which 40 in "40+40" is Wednesday's? Either could be: a change to Wednesday is refused...
    with pytest.raises(Dropped, match="ambiguous_reference"):
        carry(solution, wednesday, Change(result=Decimal(41)))
    # ...and copies are made from the calculation that has no such doubt.
    rows, drops = rows_of(FORTY)
    corrupted = [row for row in rows.values() if row["source"] != "synthetic/correct"]
    assert corrupted and all(row["completions"][0] == "On Wednesday he reads 8*5 = 40 pages." for row in corrupted)
    assert all(row["first_error"] >= 1 for row in corrupted)


def test_an_equal_value_from_another_quantity_is_not_carried():
    question = "A box holds 6 eggs. Ann buys 2 boxes and 12 loose eggs. How many eggs does she have?"
    answer = "The boxes hold 6*2 = <<6*2=12>>12 eggs.\nShe has 12+12 = <<12+12=24>>24 eggs.\n#### 24"
    solution = parse_solution(answer, question)
    with pytest.raises(Dropped, match="ambiguous_reference"):
        carry(solution, next(solution.calculations()), Change(operand=(0, Decimal(7))))


def test_result_restated_before_its_calculation_follows_it():
    question = "72 chocolate chips are shared by 4 friends. Each eats all of theirs twice a week. How many chips a week?"
    answer = (
        "They each get to eat 18 chocolate chips because 72 / 4 = <<72/4=18>>18\n"
        "A week, each eats 18 * 2 = <<18*2=36>>36 chips\n#### 36"
    )
    solution = parse_solution(answer, question)
    copy = carry(solution, next(solution.calculations()), Change(result=Decimal(19)))
    assert [visible(line) for line in copy.lines] == [
        "They each get to eat 19 chocolate chips because 72 / 4 = 19",
        "A week, each eats 19 * 2 = 38 chips",
    ]
    assert copy.answer_text == "38"


def test_calculation_without_annotation_is_recomputed():
    question = "A lot has 8 vans and 8 trucks, a quarter of all have a spare tire. How many have one?"
    answer = "There are 8 + 8 = <<8+8=16>>16 vehicles.\nThere are 16 / 4 = 4 with a spare tire.\n#### 4"
    solution = parse_solution(answer, question)
    first, unannotated = solution.calculations()
    assert unannotated.expression == "16/4" and solution.answer_node == unannotated.node
    copy = carry(solution, first, Change(operator=(0, "*")))
    assert [visible(line) for line in copy.lines] == ["There are 8 * 8 = 64 vehicles.", "There are 64 / 4 = 16 with a spare tire."]


def test_units_between_numbers_and_percent_operands_are_read():
    line = read_line("It takes 200 miles / (100 miles/hour) = <<200/(100)=2>>2 hours, 25% of $80 is 25% * $80 = $20", 0)
    mirrored, percent = line.calculations
    assert mirrored.shows_expression and [o.value for o in mirrored.operands] == [200, 100]
    assert percent.expression == "25/100*80" and percent.money


def test_no_negative_or_fractional_quantity_is_introduced():
    solution = parse_solution("He has 3 + 5 = <<3+5=8>>8 cats.\nThey have 8 * 4 = <<8*4=32>>32 legs.\n#### 32", "q")
    cats, legs = solution.calculations()
    with pytest.raises(Dropped, match="implausible_value"):
        carry(solution, cats, Change(operator=(0, "-")))  # -2 cats
    with pytest.raises(Dropped, match="implausible_value"):
        carry(solution, cats, Change(operator=(0, "/")))  # 0.6 cats
    assert carry(solution, cats, Change(operator=(0, "*"))).answer_text == "60"
    assert carry(solution, legs, Change(operator=(0, "/"))).answer_text == "2"
    assert carry(solution, cats, Change(operand=(1, Decimal(6)))).answer_text == "36"


def test_each_mistake_is_visible_in_its_step():
    problem = {
        "index": 0,
        "question": "Tom has 12 marbles and wins 2 bags of 8. How many does he have?",
        "answer": "He wins <<2*8=16>>16 marbles.\nHe has 12 + 16 = <<12+16=28>>28 marbles.\n#### 28",
    }
    rows, drops = rows_of(problem, num_incorrect_per_problem=3, strategies=["flip_number", "change_operator", "calculation_error"])
    # The first step shows no expression: every mistake lands in the second, where it can be seen.
    for row in rows.values():
        if row["source"] != "synthetic/correct":
            assert row["first_error"] == 1 and row["completions"][0] == "He wins 16 marbles."
            assert not audit_row(row, rows["train-00000/correct"]), row


def test_answer_without_any_calculation_gets_wrong_final_answers():
    problem = {"index": 0, "question": "q", "answer": "She has four apples.\n#### 4"}
    rows, drops = rows_of(problem)
    # No step computes the answer, so each slot falls back to the one mistake that fits: a wrong answer.
    assert [row_id for row_id in rows] == ["train-00000/correct"] + [f"train-00000/wrong_final_answer/{slot}" for slot in range(4)]
    assert all(Decimal(row["final_answer"]) % 1 == 0 for row in rows.values())
    assert not drops


def test_unparseable_problems_are_counted_not_fatal():
    drops = Counter()
    config = make_config()
    assert list(synthetic.problem_rows(config, "train", {"index": 0, "question": "q", "answer": "no marker"}, drops)) == []
    assert list(synthetic.problem_rows(config, "train", {"index": 1, "question": "q", "answer": "\n\n#### 4"}, drops)) == []
    assert drops == Counter({"no_final_answer": 1, "no_steps": 1})


@pytest.mark.parametrize(
    "annotation",
    ["<<1e999999*1e999999=1>>1", "<<" + "+".join(["1"] * 5000) + "=5000>>5000", "<<" + "(" * 50 + "1" + ")" * 50 + "=1>>1"],
    ids=["decimal-overflow", "5000-terms", "deep-nesting"],
)
def test_hostile_annotation_is_skipped_counted_and_logged(annotation, tmp_path, caplog):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({"question": "q", "answer": "He has 2 + 2 = <<2+2=4>>4.\n#### 4"})]
    lines.append(json.dumps({"question": "q", "answer": f"It is {annotation} apples.\nSo 2 + 2 = <<2+2=4>>4.\n#### 4"}))
    path.write_text("\n".join(lines) + "\n")
    dropped = Counter()
    logger = logging.getLogger("prm_builder.synthetic")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="prm_builder.synthetic")
    try:
        rows = list(synthetic.generate_rows(make_config(), dropped, "train", [read_gsm8k_jsonl(path)], str(path)))
    finally:
        logger.removeHandler(caplog.handler)
    assert [row["id"] for row in rows if row["id"].startswith("train-00001")] == ["train-00001/correct"]
    assert dropped["unsafe_expression"] == 3
    assert f"{path}, line 2: annotation skipped as unsafe" in caplog.text


def test_a_line_of_many_annotations_parses_in_linear_time():
    # 2,000 annotations in one line: quadratic reading took seconds here, linear takes milliseconds.
    line = " ".join(f"{i}+1 = <<{i}+1={i + 1}>>{i + 1}," for i in range(2000))
    parsed = read_line(line, 0)
    assert len(parsed.calculations) == 2000 and all(calc.shows_expression for calc in parsed.calculations)


@pytest.mark.slow
def test_a_solution_of_20000_calculations_is_built():
    # Quadratic work (a set intersection per calculation, every calculation tried as a seed)
    # took minutes here; reading and carrying are linear, so this is seconds.
    n = 20000
    line = " ".join(f"then {i} apples, {i}+1 = <<{i}+1={i + 1}>>{i + 1}," for i in range(n))
    problem = {"index": 0, "question": "q", "answer": f"{line}\nSo {n} + 1 = <<{n}+1={n + 1}>>{n + 1}\n#### {n + 1}"}
    dropped = Counter()
    rows = list(synthetic.generate_rows(make_config(), dropped, "train", [[problem]]))
    assert len(rows) == 4 and not dropped
    assert all(Decimal(row["final_answer"]) != n + 1 and row["first_error"] >= 0 for row in rows[1:])


def test_visible_operator_keeps_the_texts_symbols():
    solution = parse_solution("He buys 6 x 3 = <<6*3=18>>18 apples.\nHe eats 2, so 18 - 2 = <<18-2=16>>16 are left.\n#### 16")
    first, _ = solution.calculations()
    copy = carry(solution, first, Change(operator=(0, "/")))
    assert copy.lines == ["He buys 6 / 3 = <<6/3=2>>2 apples.", "He eats 2, so 2 - 2 = <<2-2=0>>0 are left."]


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


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(chained_problems(), st.integers(0, 3))
def test_every_copy_of_any_chain_passes_the_audit(problem, seed):
    dropped = Counter()
    config = make_config(num_incorrect_per_problem=4, seed=seed, keep_calculator_annotations=True)
    rows = list(synthetic.problem_rows(config, "train", problem, dropped))
    correct = rows[0]
    assert correct["source"] == "synthetic/correct"
    for row in rows[1:]:
        assert row["labels"] == [i < row["first_error"] for i in range(len(row["completions"]))]
        assert Decimal(row["final_answer"]) != Decimal(row["reference_answer"])
        assert audit_row(row, correct) == set(), row


# -- the bundled sample and the builder ---------------------------------------------------------------


def test_sample_problems_are_consistent_and_offline():
    problems = read_gsm8k_jsonl(SAMPLE_PROBLEMS)
    assert len(problems) >= 30
    for problem in problems:
        solution = parse_solution(problem["answer"], problem["question"])
        assert solution.feeding_answer, problem["question"]
    dataset = load_dataset("prm_builder", "synthetic", problems="sample")
    assert set(dataset) == {"train", "test"}
    assert len(dataset["test"]) > 0 and len(dataset["train"]) > len(dataset["test"])


def write_problems(folder, count: int):
    folder.mkdir()
    source = read_gsm8k_jsonl(SAMPLE_PROBLEMS)[:count]
    (folder / "train.jsonl").write_text("".join(json.dumps({"question": p["question"], "answer": p["answer"]}) + "\n" for p in source))
    return folder


def test_tables_are_keyed_by_their_real_shard(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(synthetic, "PROBLEMS_PER_SHARD", 4)
    # datasets counts rows per original shard from the keys (recorded in the split info when asked).
    monkeypatch.setattr(datasets.config, "SAVE_ORIGINAL_SHARD_LENGTHS", True)
    problems = write_problems(tmp_path / "gsm8k", 10)
    builder = load_dataset_builder("prm_builder", "synthetic", problems=str(problems), cache_dir=str(tmp_path / "cache"))
    keys = [key for key, _ in builder._generate_tables(**builder._split_generators(None)[0].gen_kwargs)]
    assert [(key.original_shard_id, key.item_or_batch_id) for key in keys] == [(0, 0), (1, 0), (2, 0)]
    builder.download_and_prepare()
    rows_per_problem = 1 + 3  # 3 corrupted copies: the sample problems take every strategy
    # Shards of equal size (3, 3, 4 problems), so that num_proc workers get equal work.
    assert builder.info.splits["train"].original_shard_lengths == [3 * rows_per_problem, 3 * rows_per_problem, 4 * rows_per_problem]


@pytest.mark.slow
def test_drops_of_all_workers_are_reported_once_per_split(tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setattr(synthetic, "PROBLEMS_PER_SHARD", 3)
    problems = write_problems(tmp_path / "gsm8k", 12)
    # Two unreadable problems, one in each half, so each worker drops one.
    lines = (problems / "train.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"question": "q", "answer": "no final answer here"})
    lines[10] = json.dumps({"question": "q", "answer": "no final answer either"})
    (problems / "train.jsonl").write_text("\n".join(lines) + "\n")
    built = load_dataset("prm_builder", "synthetic", problems=str(problems), num_proc=2, cache_dir=str(tmp_path / "cache"))
    # Workers write to stderr, the main process's records reach caplog: one line in all, the total.
    logged = [line for line in capfd.readouterr().err.splitlines() if "dropped" in line]
    logged += [record.getMessage() for record in caplog.records if "dropped" in record.getMessage()]
    assert logged == ["train: dropped 2 items: 2 no_final_answer"]
    assert prm_builder.load_drops(built["train"].cache_files[0]["filename"].rsplit("/", 1)[0]) == {"train": Counter(no_final_answer=2)}


# -- all of GSM8K, audited from the visible text --------------------------------------------------------

# Targets of the synthetic v2 issue, per strategy, as shares of its rows.
MOST_DEFECTIVE = {"unconfirmed": 0.01, "new_false": 0.003, "stale": 0.005, "negative": 0.003, "damaged": 0.003}


@pytest.fixture(scope="module")
def full_build(gsm8k_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("full_gsm8k_cache")
    return load_dataset("prm_builder", "synthetic", problems=str(gsm8k_dir), cache_dir=str(cache))


@pytest.mark.slow
def test_full_gsm8k_every_corrupted_row_reads_as_one_honest_mistake(full_build, gsm8k_dir):
    requested = 0
    built = Counter()
    defects = defaultdict(Counter)
    for split, data in full_build.items():
        requested += 3 * len(read_gsm8k_jsonl(gsm8k_dir / f"{split}.jsonl"))
        rows = data.to_list()
        assert len({row["id"] for row in rows}) == len(rows)
        by_problem = defaultdict(list)
        for row in rows:
            by_problem[row["id"].split("/")[0]].append(row)
        for problem_rows in by_problem.values():
            correct = problem_rows[0]
            assert correct["source"] == "synthetic/correct" and correct["final_answer"] == correct["reference_answer"]
            for row in problem_rows[1:]:
                strategy = row["source"].split("/")[1]
                built[strategy] += 1
                assert row["labels"] == [i < row["first_error"] for i in range(len(row["completions"]))]
                assert row["completions"][-1] == f"The answer is: {row['final_answer']}"
                assert Decimal(row["final_answer"]) != Decimal(row["reference_answer"]), row["id"]
                assert row["completions"][: row["first_error"]] == correct["completions"][: row["first_error"]]
                defects[strategy].update(audit_row(row, correct))
    assert sum(built.values()) >= 0.97 * requested, built
    for strategy, count in built.items():
        for defect, share in MOST_DEFECTIVE.items():
            assert defects[strategy][defect] <= share * count, (strategy, defect, defects[strategy][defect], count)
    # Spread over the four strategies; problems that fit no propagated mistake take wrong_final_answer.
    assert max(built.values()) <= 1.35 * min(built.values()), built


@pytest.mark.slow
def test_full_gsm8k_drops_are_recorded(full_build):
    folder = full_build["train"].cache_files[0]["filename"].rsplit("/", 1)[0]
    drops = prm_builder.load_drops(folder)
    skipped = sum(drops["train"].values())
    assert 0 < skipped < 0.03 * 3 * 7473
    assert all(reason.split(":")[0] in synthetic.STRATEGIES for reason in drops["train"])
