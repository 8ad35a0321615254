"""Shared fixtures: no network, caches in tmp_path, and a tiny causal LM built on the spot."""

import os
from pathlib import Path

# Set before datasets/huggingface_hub are imported anywhere: both read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest

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


def build_tiny_model(path: Path, *, with_chat_template: bool = False, seed: int = 0) -> Path:
    """A 2-layer Qwen2 (hidden size 32) with a byte-level BPE tokenizer trained on a few math lines.

    Byte-level BPE like Qwen's own, so `AutoTokenizer` (which maps the qwen2 model type to
    Qwen2Tokenizer) loads it faithfully and every string round-trips, newlines included.
    Runs in well under a second on CPU; saved with save_pretrained so code under test loads it
    exactly as it would load a Hub checkpoint.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    corpus = [
        "Natalia sold 48 clips in April and half as many in May. 48 / 2 = 24.\n48 + 24 = 72.\n",
        "The answer is 72. Step 1: compute the total.\n\nStep 2: subtract. \\boxed{72}\n",
        "Janet has 16 eggs and eats 3, so 16 - 3 = 13 remain. She earns $2 each: 13 * 2 = $26.\n",
    ] * 3
    tokenizer_model = Tokenizer(models.BPE())
    tokenizer_model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer_model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer_model.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_model, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    if with_chat_template:
        tokenizer.chat_template = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_chat_model_path(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2-chat"), with_chat_template=True)
