"""The vllm backend on a GPU (marked `gpu`: skipped without CUDA or without vLLM installed).

Run them on a GPU machine with `python scripts/gpu_check.py`. No weights are downloaded: the
model is a tiny Qwen2 built here, with a head size vLLM's attention kernels support (64).
"""

import json
from collections import deque

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
# Several engines share the GPU in one test session; eager mode skips CUDA graph capture.
ENGINE_OPTIONS = {"gpu_memory_utilization": 0.25, "enforce_eager": True, "max_model_len": 1024}


@pytest.fixture(scope="module")
def vllm_model_path(tmp_path_factory):
    pytest.importorskip("vllm")
    return build_vllm_model(tmp_path_factory.mktemp("tiny-qwen2-vllm"))


def build_vllm_model(path):
    """conftest's tiny chat model (its tokenizer), widened to head size 64 for vLLM's kernels."""
    from prm_builder.tiny_model import build_tiny_model
    from transformers import AutoConfig, Qwen2ForCausalLM

    build_tiny_model(path, with_chat_template=True)
    config = AutoConfig.from_pretrained(path)
    config.hidden_size, config.intermediate_size = 256, 512
    config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def test_vllm_backend_returns_n_seeded_generations(vllm_model_path):
    from prm_builder.backends import Request, Sampling
    from prm_builder.backends.vllm import VLLMBackend

    backend = VLLMBackend(str(vllm_model_path), None, Sampling(1.0, 1.0, 16), engine_options=ENGINE_OPTIONS)
    try:
        requests = [Request("What is 2 + 3?", "", 3, 7), Request("What is 2 + 3?", "Step 1: 2 + 3\n\n", 2, 8)]
        first = dict(backend.generate(deque(requests)))
        again = dict(backend.generate(deque(requests)))
    finally:
        backend.close()
    assert [len(first[r]) for r in requests] == [3, 2]
    assert all(g.finish_reason in ("stop", "length") for gens in first.values() for g in gens)
    assert first == again  # per-request seeds: the same request draws the same text


def test_vllm_build_end_to_end_and_cache_shared_with_other_backends(vllm_model_path, gsm8k_dir, tmp_path, monkeypatch):
    from datasets import load_dataset

    import prm_builder  # noqa: F401
    from prm_builder.generation_cache import list_caches

    monkeypatch.setenv("PRM_BUILDER_VLLM_ARGS", json.dumps(ENGINE_OPTIONS))
    problems = tmp_path / "test.jsonl"
    with open(gsm8k_dir / "test.jsonl", encoding="utf-8") as file:
        problems.write_text("".join(next(file) for _ in range(4)))
    options = {
        "model": str(vllm_model_path),
        "problems": str(problems),
        "num_samples_per_problem": 4,
        "max_new_tokens": 32,
        "mc_rollouts": 4,
        "step_separator": "e",  # random weights rarely write blank lines
        "generation_cache_dir": str(tmp_path / "generations"),
    }
    rows = load_dataset("prm_builder", "model_sampled", backend="vllm", **options)["test"].to_list()
    assert rows
    made = {}  # (problem, prefix) -> rollouts made from it, in waves of 1, 1, 1, 1 (mc_early_stop, the default)
    for row in rows:
        assert len(row["labels"]) == len(row["step_scores"]) == len(row["completions"]) == len(row["step_rollouts"])
        evaluated = [s for s in row["step_scores"] if s == s]
        assert evaluated and all(0 <= s <= 1 for s in evaluated)
        for step, (label, score, count) in enumerate(zip(row["labels"], row["step_scores"], row["step_rollouts"])):
            if score != score:
                assert count == 0  # not evaluated by binary search
            else:  # a bad step makes all 4; a good one stops at the wave of its first success
                assert (count == 4 if not label else 1 <= count <= 4) and (score * count).is_integer()
                made[(row["prompt"], "e".join(row["completions"][: step + 1]))] = count
    (before,) = list_caches(tmp_path / "generations")
    assert before.generations["rollout"] == sum(made.values())
    # The generations are the backend's draws, not the backend's property: transformers relabels
    # them without generating anything.
    relabelled = load_dataset("prm_builder", "model_sampled", backend="transformers", label_method="outcome", **options)
    assert [r["completions"] for r in relabelled["test"]] == [r["completions"] for r in rows]
    (after,) = list_caches(tmp_path / "generations")
    assert after.generations == before.generations and after.bytes == before.bytes
