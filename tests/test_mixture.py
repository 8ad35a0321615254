"""Mixtures in prm-train: TRL's mixture format with builder options, TRL's fraction rule, dedup across sources."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from prm_trainer.training import mixture
from prm_trainer.cli import make_parser

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("sizes", "fractions", "expected"),
    [
        # N is the largest total with no entry oversampled: min(40 / 0.5, 5 / 0.25, 7 / 0.25) = 20.
        ([40, 5, 7], [0.5, 0.25, 0.25], [10, 5, 5]),
        # Fractions are normalised: 2:1:1 is 0.5/0.25/0.25.
        ([40, 5, 7], [2, 1, 1], [10, 5, 5]),
        ([100, 100], [0.7, 0.3], [100, 43]),
        ([10, 3], [0.5, 0.0], [10, 0]),
        ([6, 9], [None, None], [6, 9]),
    ],
)
def test_realised_counts_follow_trl(sizes, fractions, expected):
    assert mixture.realised_counts(sizes, fractions) == expected


def test_entry_errors():
    with pytest.raises(ValueError, match=r"set fraction for every dataset of the mixture or for none, got \[0.5, None\]"):
        mixture.entries([{"path": "a", "fraction": 0.5}, {"path": "b"}])
    with pytest.raises(ValueError, match=r"datasets\[0\] has unknown key\(s\) \['option'\]"):
        mixture.entries([{"path": "prm_builder", "option": {}}])
    with pytest.raises(ValueError, match=r"datasets\[1\] must be a mapping with at least a 'path'"):
        mixture.entries([{"path": "a"}, "b"])


def write_stepwise(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_duplicates_across_sources_are_kept_once_and_counted(tmp_path):
    a = [{"prompt": f"p{i}", "completions": ["x", "y"], "labels": [True, i % 2 == 0]} for i in range(6)]
    # b repeats two of a's solutions (other labels: still the same solution) and one of its own twice.
    b = [a[1] | {"labels": [False, False]}, a[4], {"prompt": "q", "completions": ["z"], "labels": [True]},
         {"prompt": "q", "completions": ["z"], "labels": [True]}]  # fmt: skip
    arguments = mixture.MixtureArguments(datasets=[
        {"path": "prm_builder", "name": "stepwise", "options": {"data_files": write_stepwise(tmp_path / "a.jsonl", a)}},
        {"path": "prm_builder", "name": "stepwise", "options": {"data_files": write_stepwise(tmp_path / "b.jsonl", b)}},
    ])  # fmt: skip
    dataset, report = mixture.load_mixture(arguments)
    assert dataset["train"]["prompt"] == ["p0", "p1", "p2", "p3", "p4", "p5", "q", "q"]
    assert [(r["loaded"], r["duplicates"], r["rows"]) for r in report] == [(6, 0, 6), (4, 2, 2)]


def test_early_stopped_scores_never_mix_with_estimates(tmp_path):
    row = {"prompt": "p", "completions": ["x", "y"], "labels": [True, False], "step_scores": [1.0, 0.0]}
    early = [row | {"prompt": f"e{i}", "step_rollouts": [1, 8]} for i in range(2)]
    full = [row | {"prompt": f"f{i}", "step_scores": [0.75, 0.0]} for i in range(2)]

    def entry(name, rows):
        return {"path": "json", "data_files": write_stepwise(tmp_path / f"{name}.jsonl", rows), "split": "train"}

    mixed, _ = mixture.load_mixture(mixture.MixtureArguments(datasets=[entry("early", early), entry("full", full)]))
    assert mixed["train"].column_names == ["prompt", "completions", "labels"]  # the marker would be lost: no scores
    both, _ = mixture.load_mixture(mixture.MixtureArguments(datasets=[entry("early", early), entry("again", early)]))
    assert "step_rollouts" in both["train"].column_names and "step_scores" in both["train"].column_names
    plain, _ = mixture.load_mixture(mixture.MixtureArguments(datasets=[entry("full", full), entry("more", full)]))
    assert plain["train"].column_names == ["prompt", "completions", "labels", "step_scores"]


@pytest.fixture
def mix_yaml(tmp_path, test_data, gsm8k_dir, tiny_model_path) -> Path:
    config = {
        "model_name_or_path": str(tiny_model_path),
        "datasets": [
            {"path": "prm_builder", "name": "synthetic", "fraction": 0.5,
             "options": {"problems": str(gsm8k_dir), "max_examples": 40}},
            {"path": "prm_builder", "name": "prm800k", "fraction": 0.25,
             "options": {"data_files": str(test_data / "prm800k" / "samples.jsonl"), "alternatives": True}},
            {"path": "prm_builder", "name": "math_shepherd", "fraction": 0.25,
             "data_files": str(test_data / "math_shepherd" / "samples.jsonl")},
        ],
        "test_split_size": 0.25,
    }  # fmt: skip
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_parser_reads_the_mixture(mix_yaml, tmp_path):
    script_args, _, _ = make_parser().parse_args_and_config(["--config", str(mix_yaml), "--output_dir", str(tmp_path)])
    entries = mixture.entries(script_args.datasets)
    assert [(e.path, e.name, e.fraction, e.split) for e in entries] == [
        ("prm_builder", "synthetic", 0.5, "train"), ("prm_builder", "prm800k", 0.25, "train"),
        ("prm_builder", "math_shepherd", 0.25, "train")]  # fmt: skip
    assert entries[0].options == {"problems": str(Path(entries[0].options["problems"])), "max_examples": 40}
    assert script_args.test_split_size == 0.25 and not script_args.dataset_name


@pytest.mark.slow  # a whole training run in a subprocess (about 10 s)
def test_prm_train_on_a_mixture(mix_yaml, tmp_path, tiny_model_path):
    out = tmp_path / "prm"
    result = subprocess.run(
        [str(BIN / "prm-train"), "--config", str(mix_yaml), "--output_dir", str(out), "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--report_to", "none",
         "--save_strategy", "no", "--seed", "0", "--eval_metric", "step_accuracy"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    # Loaded: 40 synthetic rows; prm800k 7 (1 line left by the default MATH500 exclusion, with its
    # 6 rated alternatives); math_shepherd 7. N = min(40 / 0.5, 7 / 0.25, 7 / 0.25) = 28:
    # round(0.5 * 28) = 14, round(0.25 * 28) = 7, 7.
    table = [
        "| prm_builder:synthetic | train | 40 | 0 | 0.5 | 14 | 0.5000 |",
        "| prm_builder:prm800k (samples.jsonl) | train | 7 | 0 | 0.25 | 7 | 0.2500 |",
        "| prm_builder:math_shepherd (samples.jsonl) | train | 7 | 0 | 0.25 | 7 | 0.2500 |",
        "| total | | 54 | 0 | | 28 | 1.0000 |",
    ]
    printed = result.stdout
    assert "Training data mixture (rows realised per dataset):" in printed
    assert all(line in printed for line in table)
    card = (out / "README.md").read_text()
    assert "## Training data mixture" in card and all(line in card for line in table)
    evaluation = json.loads((out / "prm_eval_results.json").read_text())
    assert evaluation["split"] == "test" and evaluation["num_rows"] == 7  # 25% of the 28 rows
    trained, base = load_file(out / "model.safetensors"), load_file(tiny_model_path / "model.safetensors")
    assert not torch.equal(trained["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


# ---------------------------------------------------------------- mistakes in a mixture, each one clear line


@pytest.mark.parametrize(
    ("fraction", "message"),
    [
        (float("nan"), "datasets[0].fraction must be a finite number >= 0, got nan"),
        (float("inf"), "datasets[0].fraction must be a finite number >= 0, got inf"),
        (-0.5, "datasets[0].fraction must be a finite number >= 0, got -0.5"),
        ("0.5", "datasets[0].fraction must be a number, got '0.5' (a quoted string in YAML: write it without quotes)"),
        (True, "datasets[0].fraction must be a number, got True"),
    ],
)
def test_fraction_errors(fraction, message):
    with pytest.raises(ValueError) as raised:
        mixture.entries([{"path": "a", "fraction": fraction}, {"path": "b", "fraction": 0.5}])
    assert str(raised.value) == message


def test_fractions_from_yaml(tmp_path):
    """What YAML makes of `.nan`, `.inf` and `'0.5'`, through prm-train's parser, is refused the same way."""
    for text, message in ((".nan", "got nan"), (".inf", "got inf"), ("'0.5'", "got '0.5' (a quoted string")):
        config = tmp_path / "mix.yaml"
        config.write_text(f"datasets:\n  - {{path: a.jsonl, fraction: {text}}}\n  - {{path: b, fraction: 1}}\n")
        script_args, _, _ = make_parser().parse_args_and_config(["--config", str(config), "--output_dir", "o"])
        with pytest.raises(ValueError, match=re.escape(message)):
            mixture.entries(script_args.datasets)


def test_the_same_entry_twice_is_refused(tmp_path):
    data = write_stepwise(tmp_path / "a.jsonl", [{"prompt": "p", "completions": ["x"], "labels": [True]}])
    entry = {"path": "prm_builder", "name": "stepwise", "options": {"data_files": data}}
    with pytest.raises(ValueError) as raised:
        twice = [{**entry, "fraction": 0.5}, {**entry, "fraction": 0.25}]
        mixture.load_mixture(mixture.MixtureArguments(datasets=twice))
    assert str(raised.value) == (
        "datasets[1] repeats datasets[0] (prm_builder:stepwise (a.jsonl)): every row of the repeat would be dropped as "
        "a duplicate of the first, leaving it no rows; list it once, with fraction 0.75 for both"
    )


def test_an_entry_left_without_rows_is_named(tmp_path):
    rows = [{"prompt": f"p{i}", "completions": ["x"], "labels": [True]} for i in range(3)]
    a, b = write_stepwise(tmp_path / "a.jsonl", rows), write_stepwise(tmp_path / "b.jsonl", rows[:2])
    arguments = mixture.MixtureArguments(datasets=[
        {"path": "prm_builder", "name": "stepwise", "fraction": 0.5, "options": {"data_files": a}},
        {"path": "prm_builder", "name": "stepwise", "fraction": 0.5, "options": {"data_files": b}},
    ])  # fmt: skip
    with pytest.raises(ValueError) as raised:
        mixture.load_mixture(arguments)
    assert str(raised.value) == (
        "datasets[1] (prm_builder:stepwise (b.jsonl)) adds no rows to the mixture: all 2 of its rows are in earlier "
        "entries; with fraction 0.5 the whole mixture would be empty; remove it or set its fraction to 0"
    )


def test_streaming_false_is_accepted_and_true_refused(tmp_path):
    data = write_stepwise(tmp_path / "a.jsonl", [{"prompt": "p", "completions": ["x"], "labels": [True]}])
    for streaming in ("false", "true"):
        config = tmp_path / "mix.yaml"
        config.write_text(f"streaming: {streaming}\ndatasets:\n  - {{path: json, data_files: {data}}}\n")
        script_args, _, _ = make_parser().parse_args_and_config(["--config", str(config), "--output_dir", "o"])
        if streaming == "false":
            dataset, report = mixture.load_mixture(script_args)
            assert dataset["train"]["prompt"] == ["p"] and [r["dataset"] for r in report] == ["a.jsonl"]
        else:
            with pytest.raises(ValueError, match=r"^streaming: true is not supported for a mixture: TRL's fraction"):
                mixture.load_mixture(script_args)


def test_entries_are_named_by_their_files_or_config(tmp_path):
    assert [mixture.label(entry) for entry in mixture.entries([
        {"path": "json", "data_files": "/data/prm/a.jsonl"},
        {"path": "json", "data_files": {"train": ["x/b.jsonl", "c.jsonl"]}},
        {"path": "parquet", "data_dir": "/data/shards"},
        {"path": "prm_builder", "name": "synthetic", "options": {"problems": "sample"}},
        {"path": "prm_builder", "name": "stepwise", "options": {"data_files": "/home/me/d.jsonl"}},
        {"path": "peiyi9979/Math-Shepherd"},
    ])] == ["a.jsonl", "train=b.jsonl, c.jsonl", "shards", "prm_builder:synthetic", "prm_builder:stepwise (d.jsonl)",
            "peiyi9979/Math-Shepherd"]  # fmt: skip


def test_a_saved_folder_is_an_entry_and_a_missing_one_is_named(tmp_path, monkeypatch):
    import datasets

    monkeypatch.chdir(tmp_path)
    rows = [{"prompt": "p", "completions": ["x"], "labels": [True]}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "built")
    dataset, report = mixture.load_mixture(mixture.MixtureArguments(datasets=[{"path": "built"}]))
    assert dataset["train"]["prompt"] == ["p"] and report[0]["dataset"] == "built"
    with pytest.raises(FileNotFoundError) as raised:
        mixture.load_mixture(mixture.MixtureArguments(datasets=[{"path": "./biult"}]))
    assert str(raised.value) == (
        f"datasets: path './biult': no such folder ({tmp_path.resolve()}/biult does not exist); did you mean built?"
    )


def test_a_mixture_without_a_test_split_says_how_to_hold_one_out(tmp_path):
    from prm_trainer.cli import load_splits

    data = write_stepwise(tmp_path / "a.jsonl", [{"prompt": "p", "completions": ["x"], "labels": [True]}])
    config = tmp_path / "mix.yaml"
    config.write_text(f"datasets:\n  - {{path: json, data_files: {data}}}\n")
    script_args, training_args, _ = make_parser().parse_args_and_config(
        ["--config", str(config), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(ValueError) as raised:
        load_splits(script_args, training_args)
    assert str(raised.value) == (
        "--dataset_test_split 'test' is not a split of the dataset: ['train'] (a mixture has a test split only with "
        "test_split_size in --config; or pass --dataset_test_split none to skip evaluation)"
    )
    script_args.dataset_test_split = "none"
    train, test, _, report = load_splits(script_args, training_args)
    assert train["prompt"] == ["p"] and test is None and report[0]["rows"] == 1
