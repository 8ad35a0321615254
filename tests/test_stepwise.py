"""The `stepwise` config: a TRL stepwise-supervision file round-trips, with provenance added."""

import json
from collections import Counter

import pytest
from datasets import load_dataset, load_from_disk

import prm_builder  # noqa: F401  (registers the builder)
from prm_builder import stepwise
from prm_builder.drops import Dropped, recorded_drops

TRL_ROWS = [
    {
        "prompt": "Which number is larger, 9.11 or 9.9?",
        "completions": ["The fractional part of 9.9 is 0.90.", "0.90 > 0.11, so 9.9 is larger: \\boxed{9.9}"],
        "labels": [True, True],
    },
    {
        "prompt": "What is 12 * 3?",
        "completions": ["12 * 3 = 36.", "Add 2 to be safe: 38.", "The answer is 38"],
        "labels": [True, False, False],
    },
    {"prompt": "Name a prime.", "completions": ["4 is prime."], "labels": [False]},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_trl_file_round_trips_with_provenance(tmp_path):
    path = write_jsonl(tmp_path / "my_prm_data.jsonl", TRL_ROWS)
    dataset = load_dataset("prm_builder", "stepwise", data_files={"train": str(path)})
    rows = dataset["train"].to_list()
    assert [{k: r[k] for k in ("prompt", "completions", "labels")} for r in rows] == TRL_ROWS
    assert [(r["id"], r["first_error"], r["final_answer"], r["reference_answer"], r["source"]) for r in rows] == [
        ("train/0", -1, "9.9", "", "stepwise/my_prm_data"),
        ("train/1", 1, "38", "", "stepwise/my_prm_data"),
        ("train/2", 0, "", "", "stepwise/my_prm_data"),
    ]


def test_near_variants_through_known_names_and_column_map(tmp_path):
    variant = [
        {"question": "What is 2 + 2?", "steps": ["2 + 2 = 4", "#### 4"], "step_labels": [1, 1], "gold": "4", "id": "q1"},
        {"question": "What is 3 + 3?", "steps": ["3 + 3 = 7", "#### 7"], "step_labels": ["+", "-"], "gold": "6", "id": "q2"},
        {"question": "What is 5 - 1?", "steps": ["5 - 1 = 4"], "step_labels": ["correct"], "gold": "4", "id": "q3"},
        {"question": "Odd?", "steps": ["yes", "no"], "step_labels": ["maybe", "-"], "gold": "", "id": "q4"},
        {"question": "Count?", "steps": ["one"], "step_labels": [1, 0], "gold": "", "id": "q5"},
        {"question": "", "steps": ["x"], "step_labels": [1], "gold": "", "id": "q6"},
    ]
    path = write_jsonl(tmp_path / "variant.jsonl", [{**r, "step_labels": list(map(str, r["step_labels"]))} for r in variant])
    dataset = load_dataset("prm_builder", "stepwise", data_files=str(path), column_map={"reference_answer": "gold"})
    rows = dataset["train"].to_list()
    assert [(r["id"], r["prompt"], r["labels"], r["final_answer"], r["reference_answer"]) for r in rows] == [
        ("q1", "What is 2 + 2?", [True, True], "4", "4"),
        ("q2", "What is 3 + 3?", [True, False], "7", "6"),
        ("q3", "What is 5 - 1?", [True], "", "4"),
    ]
    assert recorded_drops(dataset) == {"train": Counter(bad_labels=1, label_count_mismatch=1, bad_prompt=1)}


def test_column_map_from_the_command_line(tmp_path):
    from prm_builder import cli

    rows = [{"problem_text": "What is 2 + 2?", "steps": ["2 + 2 = 4"], "step_labels": [True]}]
    path = write_jsonl(tmp_path / "odd.jsonl", rows)
    assert cli.main(["build", "stepwise", "--data-files", f"train={path}", "--column-map", "prompt=problem_text",
                     "--output-dir", str(tmp_path / "out")]) == 0  # fmt: skip
    assert load_from_disk(str(tmp_path / "out"))["train"]["prompt"] == ["What is 2 + 2?"]


def test_dataset_argument_and_data_dir_read_a_folder_as_load_dataset_does(tmp_path):
    folder = tmp_path / "my-prm-data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", TRL_ROWS)
    write_jsonl(folder / "test.jsonl", TRL_ROWS[:1])
    for options in ({"dataset": str(folder)}, {"data_dir": str(folder)}):
        dataset = load_dataset("prm_builder", "stepwise", **options)
        assert {split: len(rows) for split, rows in dataset.items()} == {"train": 3, "test": 1}
        assert set(dataset["train"]["source"]) == {"stepwise/my-prm-data"}


def test_label_values():
    assert [stepwise.as_label(v) for v in (True, 1, 1.0, "+", "TRUE", " correct ", "1")] == [True] * 7
    assert [stepwise.as_label(v) for v in (False, 0, -1, "-", "false", "incorrect", "-1", "0")] == [False] * 8
    with pytest.raises(Dropped, match="bad_labels"):
        stepwise.as_label("neutral")


def test_parquet_splits_and_max_examples(tmp_path):
    from datasets import Dataset

    Dataset.from_list(TRL_ROWS).to_parquet(str(tmp_path / "train.parquet"))
    Dataset.from_list(TRL_ROWS[:1]).to_parquet(str(tmp_path / "test.parquet"))
    files = {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")}
    dataset = load_dataset("prm_builder", "stepwise", data_files=files, max_examples=2)
    assert {split: rows["prompt"] for split, rows in dataset.items()} == {
        "train": [TRL_ROWS[0]["prompt"], TRL_ROWS[1]["prompt"]],
        "test": [TRL_ROWS[0]["prompt"]],
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"stepwise needs exactly one of dataset \(a Hub id\), data_files or data_dir; got none"),
        ({"column_map": {"answer": "gold"}, "dataset": "x/y"}, r"column_map keys must be among .*got \['answer'\]"),
        ({"data_dir": "/nonexistent/sw"}, r"data_dir must be a folder of data files, got '/nonexistent/sw'"),
        ({"column_map": "prompt:question", "dataset": "x/y"}, r"column_map as text must be 'ours=theirs,...'"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("prm_builder", "stepwise", **options)


@pytest.mark.parametrize("config", ["stepwise", "math_shepherd", "prm800k"])
def test_data_files_naming_a_folder_says_to_use_data_dir(tmp_path, monkeypatch, config):
    # datasets itself says only "Unable to find" the folder (it resolves data_files before our config exists).
    folder = tmp_path / "mine"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", TRL_ROWS)
    expected = (f"data_files: '{folder}' is a folder; data_files names files (e.g. data_files='{folder}/train.jsonl'), "
                f"data_dir='{folder}' reads a folder")
    with pytest.raises(ValueError) as error:
        load_dataset("prm_builder", config, data_files=str(folder))
    assert str(error.value) == expected
    monkeypatch.chdir(tmp_path)  # relative, per split
    with pytest.raises(ValueError) as error:
        load_dataset("prm_builder", config, data_files={"test": [str(folder / "train.jsonl"), "mine"]})
    assert str(error.value) == ("data_files: 'mine' is a folder; data_files names files (e.g. data_files={'test': "
                                "'mine/train.jsonl'}), data_dir='mine' reads a folder")


def test_missing_column_names_the_alternatives(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"text": "a", "completions": ["b"], "labels": [True]}])
    with pytest.raises(ValueError, match=r"split 'train' has no prompt column: expected one of \['prompt', 'question', "
                       r"'problem'\] \(or name it with column_map=\{'prompt': 'COLUMN'\}\), found columns"):
        load_dataset("prm_builder", "stepwise", data_files=str(path))
