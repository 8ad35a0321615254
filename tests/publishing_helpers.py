"""Helpers shared by the publishing tests (test_card.py, test_hub.py): small datasets and row checks."""

import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, load_dataset

from prm_builder import card
from prm_builder.builder import CONFIGS
from prm_builder.features import CORE_FEATURES

REPO_ID = "me/math-prm"
TOKEN = "hf_testtokenthatmustneverbeprinted"


def builder_options(config: str, test_data: Path, model_path: Path | None = None) -> dict:
    """Small, fully local options for each config (the whole of each source stays off the network)."""
    if config == "synthetic":
        return {"problems": str(test_data / "gsm8k"), "max_examples": 24}
    if config == "prm800k":
        return {"data_files": {"train": [str(test_data / "prm800k" / "samples.jsonl")]}}
    return {
        "model": str(model_path),
        "backend": "transformers",
        "problems": str(test_data / "gsm8k"),
        "max_problems": 2,
        "num_samples_per_problem": 2,
        "max_new_tokens": 24,
        "mc_rollouts": 2,
    }


def build(config: str, options: dict) -> DatasetDict:
    if config not in CONFIGS:
        pytest.skip(f"config {config!r} is not registered yet")
    return load_dataset("prm_builder", config, **options)


def assert_same_rows(built: DatasetDict, loaded: DatasetDict) -> None:
    assert list(loaded) == list(built)
    for split in built:
        assert loaded[split].features == built[split].features
        assert comparable(loaded[split].to_list()) == comparable(built[split].to_list())


def comparable(rows: list[dict]) -> list[dict]:
    # NaN (model_sampled's unevaluated step scores) never equals itself; compare it as a string.
    return json.loads(json.dumps(rows), parse_constant=str)


def section_of(card_text: str, config: str) -> str:
    return next(m[0] for m in card.SECTION.finditer(card_text) if m["name"] == config)


def small_dataset() -> DatasetDict:
    def row(index, labels, source):
        first_error = labels.index(False) if False in labels else -1
        return {
            "id": f"p{index}",
            "prompt": f"problem {index}",
            "completions": [f"step {i}" for i in range(len(labels))],
            "labels": labels,
            "first_error": first_error,
            "final_answer": "1",
            "reference_answer": "1",
            "source": source,
        }

    train = [
        row(0, [True, True, True], "synthetic/correct"),
        row(1, [True, False, False, False], "synthetic/flip_number"),
    ]
    test = [row(2, [False], "synthetic/flip_number")]
    return DatasetDict(
        {
            "train": Dataset.from_list(train, features=CORE_FEATURES),
            "test": Dataset.from_list(test, features=CORE_FEATURES),
        }
    )
