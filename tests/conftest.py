"""Shared fixtures: no network, caches in tmp_path, and a tiny causal LM built on the spot."""

import os
from pathlib import Path

# Set before datasets/huggingface_hub are imported anywhere: both read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest

from prm_builder.tiny_model import build_tiny_model

# Real data shipped with the repository (see tests/data/README.md), so a plain clone runs every test.
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def isolated_hf_cache(tmp_path, monkeypatch):
    """Every test gets its own datasets cache, so cache hits and misses are the test's own."""
    import datasets

    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")
    return cache


@pytest.fixture(scope="session")
def test_data() -> Path:
    """tests/data; a missing folder is a failure, never a skip (a skip would hide untested code)."""
    if not TEST_DATA.is_dir():
        pytest.fail(f"test data folder not found at {TEST_DATA}: it is part of the repository")
    return TEST_DATA


@pytest.fixture(scope="session")
def gsm8k_dir(test_data) -> Path:
    return test_data / "gsm8k"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_chat_model_path(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2-chat"), with_chat_template=True)
