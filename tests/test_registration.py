"""`load_dataset("prm_builder", ...)` on datasets 5: registration, Arrow cache, options and errors.

The registration wraps a private datasets function; these tests are the alarm for a datasets
release that moves it.
"""

import json
import os
from pathlib import Path

import datasets
import datasets.load
import pytest
from datasets import load_dataset

import prm_builder
from prm_builder import synthetic


def write_gsm8k(folder: Path, train: list[dict], test: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        if rows is not None:
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


@pytest.fixture
def gsm8k_slice(gsm8k_dir, tmp_path) -> Path:
    """The first 2,500 train and 300 test problems of GSM8K: several shards, quick to build."""
    lines = {split: (gsm8k_dir / f"{split}.jsonl").read_text().splitlines() for split in ("train", "test")}
    folder = tmp_path / "gsm8k_slice"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(lines["train"][:2500]) + "\n")
    (folder / "test.jsonl").write_text("\n".join(lines["test"][:300]) + "\n")
    return folder


def test_private_datasets_api_is_still_there():
    # If this fails, datasets changed the function we wrap: see prm_builder._register_with_datasets.
    assert getattr(datasets.load.dataset_module_factory, "_prm_builder_wrapper", False)
    module = datasets.load.dataset_module_factory("prm_builder")
    assert isinstance(module, datasets.load.DatasetModule)
    assert module.module_path == "prm_builder.builder"
    assert module.hash == prm_builder.builder_source_hash()


def test_loads_from_an_empty_folder_and_from_one_full_of_jsonl(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    first = load_dataset("prm_builder", "synthetic", problems="sample")
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    for i in range(50):
        (noisy / f"stray_{i}.jsonl").write_text('{"question": "x", "answer": "y"}\n')
    monkeypatch.chdir(noisy)
    second = load_dataset("prm_builder", "synthetic", problems="sample")
    # Stray files are not data files: same rows, same cache entry.
    assert second["train"].cache_files == first["train"].cache_files
    assert second["train"].to_list() == first["train"].to_list()


def test_other_names_still_reach_datasets(tmp_path):
    data = tmp_path / "plain.jsonl"
    data.write_text('{"a": 1}\n{"a": 2}\n')
    assert load_dataset("json", data_files=str(data), split="train")["a"] == [1, 2]


def test_cache_layout_and_cache_hit(monkeypatch, isolated_hf_cache):
    first = load_dataset("prm_builder", "synthetic", problems="sample")
    arrow = Path(first["train"].cache_files[0]["filename"])
    assert arrow.parent.parent.parent.parent == isolated_hf_cache / "prm_builder"
    assert arrow.parent.parent.parent.name.startswith("synthetic-")
    calls = []
    monkeypatch.setattr(synthetic, "generate_rows", lambda *a, **k: calls.append(1) or iter(()))
    again = load_dataset("prm_builder", "synthetic", problems="sample")
    assert calls == []  # served from Arrow, nothing generated
    assert again["train"].to_list() == first["train"].to_list()


def test_explicit_defaults_share_the_cache_other_options_do_not():
    default = load_dataset("prm_builder", "synthetic", problems="sample")
    explicit = load_dataset("prm_builder", "synthetic", problems="sample", seed=0, strategies="flip_number,change_operator,calculation_error,wrong_final_answer")
    other = load_dataset("prm_builder", "synthetic", problems="sample", seed=1)
    assert explicit["train"].cache_files == default["train"].cache_files
    assert other["train"].cache_files != default["train"].cache_files
    assert other["train"]["completions"] != default["train"]["completions"]


def test_changed_builder_source_means_a_new_build(monkeypatch):
    before = load_dataset("prm_builder", "synthetic", problems="sample")
    monkeypatch.setattr(prm_builder, "builder_source_hash", lambda: "0123456789abcdef")
    after = load_dataset("prm_builder", "synthetic", problems="sample")
    assert after["train"].cache_files != before["train"].cache_files
    assert "0123456789abcdef" in after["train"].cache_files[0]["filename"]


def test_edited_local_problems_are_rebuilt(tmp_path, gsm8k_dir):
    rows = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").read_text().splitlines()[:3]]
    folder = write_gsm8k(tmp_path / "mine", rows)
    before = load_dataset("prm_builder", "synthetic", problems=str(folder), split="train")
    write_gsm8k(folder, rows[:2])
    after = load_dataset("prm_builder", "synthetic", problems=str(folder), split="train")
    assert len({r["id"].split("/")[0] for r in before}) == 3
    assert len({r["id"].split("/")[0] for r in after}) == 2


def test_same_rows_whatever_num_proc(gsm8k_slice):
    one = load_dataset("prm_builder", "synthetic", problems=str(gsm8k_slice))
    datasets.disable_caching()
    try:
        two = load_dataset(
            "prm_builder", "synthetic", problems=str(gsm8k_slice), num_proc=2, download_mode="force_redownload"
        )
    finally:
        datasets.enable_caching()
    for split in ("train", "test"):
        assert two[split].to_list() == one[split].to_list()


def test_max_examples_caps_each_split_with_the_first_rows(gsm8k_slice):
    full = load_dataset("prm_builder", "synthetic", problems=str(gsm8k_slice))
    capped = load_dataset("prm_builder", "synthetic", problems=str(gsm8k_slice), max_examples=25, num_proc=2)
    for split in ("train", "test"):
        assert capped[split].to_list() == full[split].select(range(25)).to_list()


def test_streaming_yields_the_same_rows():
    built = load_dataset("prm_builder", "synthetic", problems="sample", split="train")
    streamed = load_dataset("prm_builder", "synthetic", problems="sample", split="train", streaming=True)
    assert list(streamed) == built.to_list()


# -- errors -------------------------------------------------------------------------------------------


def test_unknown_config_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown prm_builder config 'gsm8k'; valid configs: synthetic"):
        load_dataset("prm_builder", "gsm8k")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) num_incorrect for prm_builder config 'synthetic'; valid options: problems, num_incorrect_per_problem"):
        load_dataset("prm_builder", "synthetic", problems="sample", num_incorrect=2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_incorrect_per_problem": -1}, "num_incorrect_per_problem must be >= 0, got -1"),
        ({"num_incorrect_per_problem": "3"}, "num_incorrect_per_problem must be an integer, got '3'"),
        ({"max_examples": 0}, "max_examples must be >= 1, got 0"),
        ({"strategies": ["flip_number", "typo"]}, r"strategies must be a non-empty list of \['flip_number'"),
        ({"include_correct": "yes"}, "include_correct must be True or False, got 'yes'"),
        ({"problems": "/no/such/folder"}, "problems must be 'gsm8k', 'sample' or an existing local path"),
        ({"data_dir": "/tmp"}, r"unknown option\(s\) data_dir for prm_builder config 'synthetic'"),
        ({"include_correct": False, "num_incorrect_per_problem": 0}, "would yield no rows"),
        ({"seed": None}, "seed=None: expected a value; leave seed out to get its default, 0"),
        ({"problems": None}, "problems=None: expected a value; leave problems out to get its default, 'gsm8k'"),
        ({"exclude_problems": None}, "exclude_problems=None: expected a value; leave exclude_problems out to get its default, 'default'"),
        ({"num_incorrect_per_problem": float("inf")}, "num_incorrect_per_problem must be an integer, got inf"),
    ],
)
def test_bad_options_say_what_was_expected(options, message):
    options = {"problems": "sample", **options}
    with pytest.raises(ValueError, match=message):
        load_dataset("prm_builder", "synthetic", **options)


def test_malformed_line_names_file_and_line(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"question": "q", "answer": "1+1 = <<1+1=2>>2\\n#### 2"}\n{not json\n')
    with pytest.raises(ValueError, match=r"train\.jsonl, line 2: expected a JSON object, got invalid JSON"):
        load_dataset("prm_builder", "synthetic", problems=str(folder))


def test_missing_key_names_file_and_line(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "test.jsonl").write_text('\n{"question": "q"}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl, line 2: expected string fields 'question' and 'answer', missing or not a string: answer"):
        load_dataset("prm_builder", "synthetic", problems=str(folder))


def test_folder_without_gsm8k_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected train.jsonl, validation.jsonl, test.jsonl in this folder, found none"):
        load_dataset("prm_builder", "synthetic", problems=str(tmp_path))


def test_problem_files_name_their_splits_as_for_model_sampled(tmp_path, gsm8k_dir):
    # One reading of `problems` for synthetic and model_sampled (problems.problem_files): a file
    # named after a split is that split, any other file is train, a folder may hold validation.jsonl.
    lines = (gsm8k_dir / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    folder = tmp_path / "three"
    folder.mkdir()
    for split, part in (("train", lines[:2]), ("validation", lines[2:3]), ("test", lines[3:4])):
        (folder / f"{split}.jsonl").write_text("".join(part), encoding="utf-8")
    options = {"num_incorrect_per_problem": 0, "exclude_problems": "none"}
    built = load_dataset("prm_builder", "synthetic", problems=str(folder), **options)
    assert {split: built[split]["id"] for split in built} == {
        "train": ["train-00000/correct", "train-00001/correct"],
        "validation": ["validation-00000/correct"],
        "test": ["test-00000/correct"],
    }
    one = load_dataset("prm_builder", "synthetic", problems=str(folder / "test.jsonl"), **options)
    assert list(one) == ["test"]
    other = tmp_path / "problems.jsonl"
    other.write_text("".join(lines[:1]), encoding="utf-8")
    assert list(load_dataset("prm_builder", "synthetic", problems=str(other), **options)) == ["train"]
    with pytest.raises(ValueError, match=r"problems='math500' has no worked solutions to corrupt"):
        load_dataset("prm_builder", "synthetic", problems="math500")


def test_unparseable_problem_is_skipped_counted_and_reported(tmp_path, caplog):
    folder = write_gsm8k(
        tmp_path / "mixed",
        [
            {"question": "ok", "answer": "She has 2 * 3 = <<2*3=6>>6 pens.\nShe gives 1, so 6 - 1 = <<6-1=5>>5.\n#### 5"},
            {"question": "no marker", "answer": "She has 5 pens."},
        ],
    )
    data = load_dataset("prm_builder", "synthetic", problems=str(folder), split="train")
    assert {row["id"].split("/")[0] for row in data} == {"train-00000"}
    folder_of_arrow = Path(data.cache_files[0]["filename"]).parent
    assert prm_builder.load_drops(folder_of_arrow)["train"]["no_final_answer"] == 1
    assert "dropped" in caplog.text and "no_final_answer" in caplog.text
    assert os.path.isdir(folder_of_arrow / "prm_builder_drops")


def test_every_config_declares_a_checked_config_spec():
    from prm_builder import synthetic
    from prm_builder.builder import CONFIGS
    from prm_builder.contract import ConfigSpec

    assert {name: type(spec) for name, spec in CONFIGS.items()} == {name: ConfigSpec for name in CONFIGS}
    modules = {name: spec.config_class.__module__ for name, spec in CONFIGS.items()}
    assert modules == {name: f"prm_builder.{name}" for name in CONFIGS}
    assert [name for name, spec in CONFIGS.items() if spec.generate_tables is not None] == ["math_shepherd"]
    assert [name for name, spec in CONFIGS.items() if spec.shards_are_independent] == ["synthetic"]
    sampled = CONFIGS["model_sampled"]
    early = sampled.config_class(name="model_sampled", label_method="mc", mc_early_stop=True)
    plain = sampled.config_class(name="model_sampled", label_method="outcome")
    assert set(sampled.row_features(early)) - set(sampled.row_features(plain)) == {"step_rollouts"}
    assert CONFIGS["synthetic"].row_features(None) is CONFIGS["synthetic"].features
    fields = ("config_class", "features", "description", "homepage", "license", "citation", "split_generators")
    base = {key: getattr(synthetic.SPEC, key) for key in fields}
    rows = synthetic.generate_rows
    with pytest.raises(TypeError, match="give exactly one of generate_rows and generate_tables"):
        ConfigSpec(**base)
    with pytest.raises(TypeError, match="give exactly one of generate_rows and generate_tables"):
        ConfigSpec(**base, generate_rows=rows, generate_tables=rows)
    with pytest.raises(TypeError, match="shards_are_independent applies to generate_rows only"):
        ConfigSpec(**base, generate_tables=rows, shards_are_independent=True)
    with pytest.raises(TypeError, match="config_class must be a PRMBuilderConfig subclass, got dict"):
        ConfigSpec(**{**base, "config_class": dict}, generate_rows=rows)


def test_dropped_names_its_reason_and_detail():
    from prm_builder.drops import Dropped

    error = Dropped("not_json", "not valid JSON (Expecting value)")
    assert (error.reason, error.detail) == ("not_json", "not valid JSON (Expecting value)")
    assert str(error) == "not_json: not valid JSON (Expecting value)"
    assert (Dropped("no_tag").detail, str(Dropped("no_tag"))) == ("no_tag", "no_tag")
