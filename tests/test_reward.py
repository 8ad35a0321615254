"""PRMReward: exact rewards from a stand-in PRM whose step scores are known, and a real GRPOTrainer run with a tiny
policy and a tiny PRM whose logged rewards must be PRMReward's own."""

import math

import pytest
import torch
from tests.test_evaluation import P_BAD, P_OK, WordScorer, word_tokenizer  # noqa: F401  (fixture)

from prm_trainer import PRMReward, Truncation
from prm_trainer.evaluating.reward import completion_text, prompt_text


def reward_fn(tokenizer, **kwargs):
    return PRMReward(WordScorer(), tokenizer, step_separator="\n", **kwargs)


@pytest.mark.parametrize(
    "aggregation, expected, all_ok",
    [("min", P_BAD, P_OK), ("last", P_BAD, P_OK), ("mean", (P_OK + P_BAD) / 2, P_OK),
     ("prod", P_OK * P_BAD, P_OK * P_OK)],
)
def test_rewards_aggregate_step_scores(word_tokenizer, aggregation, expected, all_ok):
    reward = reward_fn(word_tokenizer, aggregation=aggregation)
    rewards = reward(prompts=["q", "q"], completions=["step ok\nstep bad", "step ok\n\nstep ok\n"])
    assert rewards == [pytest.approx(expected), pytest.approx(all_ok)]
    # The per-step scores behind them, blank pieces between separators dropped.
    assert reward.last_step_scores == [[pytest.approx(P_OK), pytest.approx(P_BAD)], [pytest.approx(P_OK)] * 2]


def test_conversational_prompts_and_completions_score_like_plain_text(word_tokenizer):
    reward = reward_fn(word_tokenizer)
    prompts = [[{"role": "system", "content": "Be careful."}, {"role": "user", "content": "q"}]]
    completions = [[{"role": "assistant", "content": [{"type": "text", "text": "step ok\nstep bad"}]}]]
    assert prompt_text(prompts[0]) == "q" and completion_text(completions[0]) == "step ok\nstep bad"
    assert reward(prompts, completions) == reward(["q"], ["step ok\nstep bad"])


def test_step_scores_method_and_logging_hook(word_tokenizer):
    reward = reward_fn(word_tokenizer)
    logged = {}
    rewards = reward(["q"], ["step bad\nstep ok"], log_extra=lambda column, values: logged.update({column: values}))
    assert rewards == [pytest.approx(P_BAD)]
    assert logged == {"prm_step_scores": ["0.200 0.900"]}
    assert reward.step_scores(["q"], ["step ok"]) == [[pytest.approx(P_OK)]]


def test_unscorable_completions_get_none(word_tokenizer):
    # No step at all; a step cut off by truncation (prompt 1 token + 3 per step: max_length 4 keeps one step).
    reward = PRMReward(WordScorer(), word_tokenizer, step_separator="\n", truncation=Truncation(max_length=4))
    assert reward(["q", "q", "q"], ["", "step ok\nstep ok", "step ok"]) == [None, None, pytest.approx(P_OK)]


def test_scoring_runs_without_gradients_and_restores_training_mode(word_tokenizer):
    class Recorder(WordScorer):
        def forward(self, input_ids, attention_mask=None):
            self.grad_enabled, self.was_training = torch.is_grad_enabled(), self.training
            return super().forward(input_ids, attention_mask)

    model = Recorder().train()
    PRMReward(model, word_tokenizer, step_separator="\n")(["q"], ["step ok"])
    assert (model.grad_enabled, model.was_training, model.training) == (False, False, True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"aggregation": "max"}, "aggregation must be one of"),
        ({"step_separator": ""}, "step_separator must be a non-empty string"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_validates_options(word_tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        PRMReward(WordScorer(), word_tokenizer, **kwargs)


def test_mismatched_inputs_are_refused(word_tokenizer):
    with pytest.raises(ValueError, match="got 2 prompts and 1 completions"):
        reward_fn(word_tokenizer)(["q", "q"], ["step ok"])
    with pytest.raises(ValueError, match="needs a user message"):
        reward_fn(word_tokenizer)([[{"role": "system", "content": "x"}]], ["step ok"])


def test_loads_a_prm_folder_with_its_tokenizer(tmp_path, tiny_model_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(0)
    prm = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    prm.save_pretrained(tmp_path / "prm")
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(tmp_path / "prm")
    completions = ["48 / 2 = 24.\n\n48 + 24 = 72.", "16 - 3 = 13."]
    from_path = PRMReward(str(tmp_path / "prm"), device="cpu")(["Natalia sold 48 clips."] * 2, completions)
    from_object = PRMReward(prm, aggregation="min")(["Natalia sold 48 clips."] * 2, completions)
    assert from_path == pytest.approx(from_object) and all(0.0 < r < 1.0 for r in from_path)


@pytest.mark.slow  # a real training run: 3-6 s on 2 busy cores
# TRL's GRPOTrainer reads transformers' deprecated `is_gradient_checkpointing` itself, when it unwraps the policy
# for generation (trl/models/utils.py): not a path of ours, so pyproject's error for that warning is lifted here.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_grpo_trainer_logs_the_rewards_prm_reward_gives(tmp_path, tiny_model_path):
    """Two real GRPO steps, tiny policy and tiny PRM on CPU: every logged reward is PRMReward on that completion."""
    from datasets import Dataset
    from transformers import AutoModelForTokenClassification, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    prm = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    reward = PRMReward(prm, tokenizer, step_separator="\n")
    prompts = ["Natalia sold 48 clips in April.", "Janet has 16 eggs and eats 3."]
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2, max_completion_length=16,
        max_steps=2, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", seed=0,
        activation_checkpointing=False,
    )
    seen = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, *_, **__):
            logs = trainer._logs
            seen.append((list(logs["prompt"]), list(logs["completion"]), list(logs["rewards"]["prm_reward"])))

    trainer = GRPOTrainer(
        model=str(tiny_model_path), reward_funcs=reward, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"prompt": prompts * 2}), callbacks=[Snapshot()],
    )
    trainer.train()

    assert len(seen) == 2 and all(len(completions) == 4 for _, completions, _ in seen)
    key = "rewards/prm_reward/mean"
    logged_means = [entry[key] for entry in trainer.state.log_history if key in entry]
    assert len(logged_means) == 2
    fresh = PRMReward(prm, tokenizer, step_separator="\n")
    for (step_prompts, completions, logged), logged_mean in zip(seen, logged_means, strict=True):
        direct = [math.nan if r is None else r for r in fresh(step_prompts, completions)]
        assert logged == pytest.approx(direct, rel=1e-6, nan_ok=True)
        scored = [r for r in direct if not math.isnan(r)]
        assert scored and logged_mean == pytest.approx(sum(scored) / len(scored), rel=1e-5)


def test_a_causal_lm_is_not_taken_for_a_prm(tiny_model_path):
    from prm_trainer import load_prm

    with pytest.raises(ValueError, match=r"is not a trained PRM: its checkpoint lacks \['score.bias', 'score.weight'\]"):
        load_prm(str(tiny_model_path), device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_scores_on_the_gpu_equal_those_on_the_cpu(tmp_path, tiny_model_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(0)
    prm = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    prompts, completions = ["Natalia sold 48 clips."] * 3, ["48 / 2 = 24.\n\n48 + 24 = 72.", "16 - 3 = 13.", ""]
    on_cpu = PRMReward(prm, tokenizer)(prompts, completions)
    on_gpu = PRMReward(prm.to("cuda"), tokenizer)(prompts, completions)
    assert on_gpu[2] is None and on_gpu[:2] == pytest.approx(on_cpu[:2], abs=1e-5)
    assert next(prm.parameters()).device.type == "cuda"  # the model stays where the caller put it
