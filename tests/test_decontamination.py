"""exclude_problems: benchmark problems kept out of every config's rows, counted as contaminated:<set>."""

import json
from collections import Counter

import pytest
from datasets import load_dataset

import prm_builder  # noqa: F401  (registers the builder)
from prm_builder import decontamination
from prm_builder.decontamination import normalize_problem, problem_hash
from prm_builder.exclude_option import normalize_option
from prm_builder.drops import recorded_drops
from prm_builder.jsonl import read_objects


def benchmark_hashes(test_data) -> set:
    """Hashes of every MATH500 and GSM8K test problem, computed from tests/data (not the shipped file)."""
    math500 = [row["problem"] for _, row in read_objects(test_data / "math500" / "test.jsonl")]
    gsm8k_test = [row["question"] for _, row in read_objects(test_data / "gsm8k" / "test.jsonl")]
    return {problem_hash(problem) for problem in math500 + gsm8k_test}


def test_normalisation():
    assert normalize_problem("What is $1{,}000 \\cdot 2.50$?") == normalize_problem("What is  $1000\\cdot 2.5$ ?")
    assert normalize_problem("\\left( \\dfrac{1}{2} \\right)\\,x") == "(\\frac{1}{2})x"
    assert normalize_problem("Sam has 1,234 apples and 3.0 pears\n") == "samhas1234applesand3pears"
    assert normalize_problem("x = 3.05, y = 10.") == "x=3.05,y=10."
    assert normalize_problem("pay $2.00") != normalize_problem("pay $2.01")


def test_shipped_sets_match_the_benchmarks(test_data):
    """The package ships hashes, not texts; a change to normalize_problem must regenerate them (see write_builtin_hashes)."""
    shipped = decontamination.builtin_set_hashes()
    assert {name: len(hashes) for name, hashes in shipped.items()} == {"math500": 500, "gsm8k_test": 1319}
    assert shipped["math500"] | shipped["gsm8k_test"] == benchmark_hashes(test_data)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("default", "default"),
        ("none", None),
        ([], None),
        ("gsm8k_test,math500", ["gsm8k_test", "math500"]),
        (["processbench", "math500", "math500"], ["math500", "processbench"]),
        ({"train": "math500", "validation": ["gsm8k_test"]}, {"train": ["math500"], "validation": ["gsm8k_test"]}),
        (["What is 1+1?"], ["What is 1+1?"]),
    ],
)
def test_option_values(value, expected):
    assert normalize_option(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("math5000", r"got 'math5000': not a built-in set nor a .jsonl/.json path"),
        (["math_500"], r"got 'math_500': not a built-in set \(valid: math500, gsm8k_test, processbench\)"),
        ("missing.jsonl", r"got 'missing.jsonl': no such file"),
        ({"": "math500"}, r"a mapping needs split names as keys"),
        (3, r"got 3"),
    ],
)
def test_option_errors(value, message):
    with pytest.raises(ValueError, match=message):
        normalize_option(value)


def rows_and_drops(config: str, **options):
    dataset = load_dataset("prm_builder", config, **options)
    return dataset, recorded_drops(dataset)


def spaced(text: str) -> str:
    """The same problem as another copy might write it: other spacing, LaTeX spacing, number format."""
    return "  " + text.replace(" ", "  ").replace("$", "$\\,") + "\n"


@pytest.fixture
def contaminated(tmp_path, test_data):
    """Inputs for every file-based config with benchmark problems mixed in (respaced, as copies differ)."""
    gsm8k_test_head = [row for _, row in read_objects(test_data / "gsm8k" / "test.jsonl")][:10]
    gsm8k_test = gsm8k_test_head[:3]
    gsm8k_train = [row for _, row in read_objects(test_data / "gsm8k" / "train.jsonl")][:4]
    math500 = [row for _, row in read_objects(test_data / "math500" / "test.jsonl")][:2]
    problems = tmp_path / "gsm8k"
    problems.mkdir()
    (problems / "train.jsonl").write_text("".join(
        json.dumps({**row, "question": spaced(row["question"])}) + "\n" for row in gsm8k_test + gsm8k_train))
    (problems / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in gsm8k_test_head))
    shepherd = [json.loads(line) for line in (test_data / "math_shepherd" / "samples.jsonl").read_text().splitlines()]
    first = shepherd[0]
    for row in math500:  # a real solution put under a MATH500 problem
        problem = first["input"][: first["input"].index(" Step 1:")]
        shepherd.append({key: first[key].replace(problem, spaced(row["problem"])) for key in ("input", "label")}
                        | {"task": "MATH"})  # fmt: skip
    shepherd_file = tmp_path / "shepherd.jsonl"
    shepherd_file.write_text("".join(json.dumps(row) + "\n" for row in shepherd))
    stepwise_file = tmp_path / "stepwise.jsonl"
    stepwise_rows = [{"prompt": spaced(row["question"]), "completions": ["a", "b"], "labels": [True, False]}
                     for row in gsm8k_test + gsm8k_train] + [
                    {"prompt": row["problem"], "completions": ["c"], "labels": [True]} for row in math500]  # fmt: skip
    stepwise_file.write_text("".join(json.dumps(row) + "\n" for row in stepwise_rows))
    return {
        "synthetic": ({"problems": str(problems), "num_incorrect_per_problem": 1}, "contaminated:gsm8k_test"),
        "prm800k": ({"data_files": str(test_data / "prm800k" / "samples.jsonl")}, "contaminated:math500"),
        "math_shepherd": ({"data_files": str(shepherd_file)}, "contaminated:math500"),
        "stepwise": ({"data_files": str(stepwise_file)}, None),
    }


@pytest.mark.parametrize("config", ["synthetic", "prm800k", "math_shepherd", "stepwise"])
def test_defaults_keep_benchmark_problems_out_of_every_train_split(config, contaminated, test_data):
    options, reason = contaminated[config]
    everything, _ = rows_and_drops(config, **options, exclude_problems="none")
    dataset, drops = rows_and_drops(config, **options)
    benchmarks = benchmark_hashes(test_data)
    contaminated_rows = [row for row in everything["train"] if problem_hash(row["prompt"]) in benchmarks]
    assert contaminated_rows, "the fixture must mix benchmark problems in"
    assert not [row for row in dataset["train"] if problem_hash(row["prompt"]) in benchmarks]
    assert len(dataset["train"]) == len(everything["train"]) - len(contaminated_rows)
    counted = {key: n for key, n in drops["train"].items() if key.startswith("contaminated:")}
    if config == "prm800k":  # counted per line there: 4 lines, some with several rows
        assert counted == {"contaminated:math500": 4}
    elif config == "stepwise":
        assert counted == {"contaminated:gsm8k_test": 3, "contaminated:math500": 2}
    else:
        assert counted == {reason: len(contaminated_rows)}
    # A config's own test split is a benchmark, and stays whole under the default.
    if "test" in everything:
        assert len(dataset["test"]) == len(everything["test"])


def test_explicit_sets_apply_to_every_split_and_a_split_left_empty_is_left_out(contaminated, caplog):
    options, _ = contaminated["synthetic"]
    dataset, drops = rows_and_drops("synthetic", **options, exclude_problems="gsm8k_test")
    assert list(dataset) == ["train"] and len(dataset["train"]) == 8  # 4 GSM8K train problems, 2 rows each
    everything, _ = rows_and_drops("synthetic", **options, exclude_problems="none")
    assert drops["train"] == Counter({"contaminated:gsm8k_test": 6})
    assert drops["test"]["contaminated:gsm8k_test"] == len(everything["test"])
    assert "synthetic: split 'test' is left out: every row was dropped" in caplog.text
    per_split, per_split_drops = rows_and_drops("synthetic", **options, exclude_problems={"test": ["math500"]})
    assert not [key for counts in per_split_drops.values() for key in counts if key.startswith("contaminated:")]
    assert len(per_split["train"]) == 14


def test_problem_files_json_and_jsonl(tmp_path, contaminated, test_data):
    options, _ = contaminated["stepwise"]
    problems = [row["question"] for _, row in read_objects(test_data / "gsm8k" / "test.jsonl")][:2]
    listed = tmp_path / "held_out.json"
    listed.write_text(json.dumps([{"problem": problem} for problem in problems]))
    dataset, drops = rows_and_drops("stepwise", **options, exclude_problems=[str(listed)])
    assert drops == {"train": Counter({"contaminated:held_out.json": 2})} and len(dataset["train"]) == 7
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"text": "x"}]))
    with pytest.raises(ValueError, match=r"bad.json, item 1: expected an object with a string 'problem' .*got \['text'\]"):
        rows_and_drops("stepwise", **options, exclude_problems=str(bad))


def test_processbench_offline_says_what_to_do(contaminated):
    options, _ = contaminated["stepwise"]
    with pytest.raises(ConnectionError, match=r"exclude_problems 'processbench' downloads Qwen/ProcessBench's problems "
                       r"from the Hub .*gsm8k.json.* could not: .*pass their paths instead"):
        rows_and_drops("stepwise", **options, exclude_problems="processbench")


@pytest.mark.slow  # generates with a tiny model (about 3 s)
def test_model_sampled_train_split_too(tiny_chat_model_path, test_data, tmp_path):
    test_problem = next(row for _, row in read_objects(test_data / "gsm8k" / "test.jsonl"))
    train_problem = next(row for _, row in read_objects(test_data / "gsm8k" / "train.jsonl"))
    problems = tmp_path / "train.jsonl"
    problems.write_text("".join(json.dumps(row) + "\n" for row in (test_problem, train_problem)))
    options = {"model": str(tiny_chat_model_path), "problems": str(problems), "num_samples_per_problem": 2,
               "max_new_tokens": 8, "label_method": "outcome", "step_separator": "e",
               "generation_cache_dir": str(tmp_path / "generations")}  # fmt: skip
    everything, _ = rows_and_drops("model_sampled", **options, exclude_problems="none")
    dataset, drops = rows_and_drops("model_sampled", **options)
    assert {row["prompt"] for row in everything["train"]} == {test_problem["question"], train_problem["question"]}
    assert {row["prompt"] for row in dataset["train"]} == {train_problem["question"]}
    contaminated = sum(row["prompt"] == test_problem["question"] for row in everything["train"])
    assert drops["train"]["contaminated:gsm8k_test"] == contaminated
