"""Scoring stays within the model's context: rows longer than the model's maximum length are cut as training cuts
them (their later steps unscored and counted), and batches are sized by tokens. Also: PRMReward's input checks, and
the step format a PRM was trained with, saved beside it and used by PRMReward and prm-eval."""

import json
import warnings

import datasets
import pytest
import torch
from prm_trainer import PRMConfig, PRMReward, PRMTrainer, StepFormat, Truncation, evaluate
from prm_trainer.evaluating.evaluation import score_steps, token_batches
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

MAX_POSITIONS = 64  # the tiny model's context
BUDGET = 160  # padded tokens per forward pass


@pytest.fixture(scope="module")
def short_context_prm(tiny_model_path):
    """The tiny PRM with a context of 64 tokens, and the (rows, width) of every forward pass it makes."""
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(tiny_model_path, num_labels=2, max_position_embeddings=MAX_POSITIONS)
    model = AutoModelForTokenClassification.from_config(config).eval()
    shapes = []
    model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)
    return model, AutoTokenizer.from_pretrained(tiny_model_path), shapes


def test_token_batches_hold_a_budget_of_padded_tokens():
    # Lengths longest first: 50 alone (a second row would pad to 100 > 90); then 40 + 30 (80); then 20, 10, 5 (60).
    assert token_batches([50, 40, 30, 20, 10, 5], batch_size=8, max_batch_tokens=90) == [[0], [1, 2], [3, 4, 5]]
    assert token_batches([50, 40, 30, 20, 10, 5], batch_size=2, max_batch_tokens=1000) == [[0, 1], [2, 3], [4, 5]]
    assert token_batches([500, 3], batch_size=8, max_batch_tokens=90) == [[0], [1]]  # too long alone: still scored
    assert token_batches([], batch_size=8, max_batch_tokens=90) == []


def test_a_processbench_case_of_10000_steps_is_cut_to_the_context_and_counted(short_context_prm, tmp_path):
    model, tokenizer, shapes = short_context_prm
    cases = [{"id": "huge", "problem": "Janet has 16 eggs.", "steps": [f"step {i}: 16 - 3 = 13" for i in range(10000)],
              "label": -1}]
    cases += [{"id": f"c{i}", "problem": "q", "steps": ["3 + 4 = 7", "so 7"], "label": -1 if i % 2 else 1}
              for i in range(12)]
    folder = tmp_path / "processbench"
    folder.mkdir()
    (folder / "gsm8k.json").write_text(json.dumps(cases))
    shapes.clear()
    # Threshold 0 flags no step: the cut case's prediction is unknown (its tail is unscored), the others' is -1.
    results = evaluate(model, tokenizer, "processbench", subsets=["gsm8k"], data=folder, threshold=0.0,
                       batch_size=8, max_batch_tokens=BUDGET, progress=False)
    gsm8k = results["subsets"]["gsm8k"]
    assert gsm8k["unscored"] == 1
    assert (gsm8k["num_correct"], gsm8k["num_erroneous"]) == (7, 6)  # the unscored case stays in, as a miss
    assert gsm8k["accuracy_correct"] == 6 / 7 and gsm8k["accuracy_erroneous"] == 0.0
    assert max(width for _, width in shapes) == MAX_POSITIONS
    assert max(rows * width for rows, width in shapes) <= BUDGET
    assert sum(rows for rows, _ in shapes) == len(cases)


def test_a_row_past_the_context_is_cut_as_training_cuts_it(short_context_prm):
    model, tokenizer, _ = short_context_prm
    row = {"prompt": "Janet has 16 eggs.", "completions": [f"16 - {i} = {16 - i}" for i in range(40)]}
    capped = score_steps(model, tokenizer, [row])[0]
    explicit = score_steps(model, tokenizer, [row], StepFormat(truncation=Truncation(max_length=MAX_POSITIONS)))[0]
    scored = [score for score in capped if score == score]
    assert 0 < len(scored) < 40 and len(scored) == sum(score == score for score in explicit)
    assert scored == pytest.approx([score for score in explicit if score == score], abs=1e-6)


def test_prm_reward_with_a_100k_character_completion(short_context_prm):
    model, tokenizer, shapes = short_context_prm
    reward = PRMReward(model, tokenizer, step_separator="\n", batch_size=4, max_batch_tokens=BUDGET)
    huge = "x" * 100_000
    shapes.clear()
    rewards = reward(["q"] * 4, ["3 + 4 = 7\nso 7", huge, "so 7", huge + "\n3 + 4 = 7"])
    assert rewards[1] is None and rewards[3] is None  # cut: a step without a score
    assert isinstance(rewards[0], float) and isinstance(rewards[2], float)
    assert max(width for _, width in shapes) <= MAX_POSITIONS
    assert max(rows * width for rows, width in shapes) <= BUDGET


# ---------------------------------------------------------------- PRMReward's inputs


@pytest.mark.parametrize(
    "completion, message",
    [
        (None, r"completions\[1\] must be a string or a list of messages, got NoneType"),
        (3.5, r"completions\[1\] must be a string or a list of messages, got float"),
        ([{"role": "assistant"}], r"completions\[1\], message 0: has no 'content' \(keys: \['role'\]\)"),
        (["so 7"], r"completions\[1\], message 0: expected a dict with 'role' and 'content', got str"),
        ([{"role": "assistant", "content": 7}], r"completions\[1\], message 0: 'content' must be a string or a list"),
        ([{"role": "assistant", "content": [{"type": "text", "text": None}]}],
         r"completions\[1\], message 0, text part 0: 'text' must be a string, got NoneType"),
    ],
)
def test_prm_reward_names_the_completion_it_cannot_read(short_context_prm, completion, message):
    model, tokenizer, _ = short_context_prm
    with pytest.raises(TypeError, match=message):
        PRMReward(model, tokenizer, step_separator="\n")(["q", "q"], ["so 7", completion])


def test_prm_reward_names_the_prompt_it_cannot_read(short_context_prm):
    model, tokenizer, _ = short_context_prm
    with pytest.raises(TypeError, match=r"prompts\[0\], message 0: has no 'content'"):
        PRMReward(model, tokenizer, step_separator="\n")([[{"role": "user"}]], ["so 7"])


# ---------------------------------------------------------------- the step format saved with the model


@pytest.fixture(scope="module")
def trained_prms(tiny_model_path, tmp_path_factory):
    """A full model and a LoRA adapter trained one step with separator "\\n\\n" and max_length 200."""
    from peft import LoraConfig

    rows = datasets.Dataset.from_dict({"prompt": ["What is 3 + 4?"] * 4,
                                       "completions": [["3 + 4 = 7", "so 7"], ["3 + 4 = 8", "so 8"]] * 2,
                                       "labels": [[True, True], [False, False]] * 2})
    folders = {}
    for kind, peft_config in (("full", None), ("lora", LoraConfig(r=4, lora_alpha=8))):
        folder = tmp_path_factory.mktemp(f"prm-{kind}")
        torch.manual_seed(0)
        model = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
        args = PRMConfig(output_dir=str(folder), report_to="none", save_strategy="no", disable_tqdm=True,
                         dataloader_pin_memory=False, max_steps=1, step_separator="\n\n", max_length=200)
        trainer = PRMTrainer(model=model, args=args, train_dataset=rows, peft_config=peft_config,
                             processing_class=AutoTokenizer.from_pretrained(tiny_model_path))
        trainer.train()
        trainer.save_model()
        folders[kind] = folder
    return folders


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_the_training_format_is_saved_beside_the_weights(trained_prms, kind):
    saved = json.loads((trained_prms[kind] / "prm_step_format.json").read_text())
    assert saved == {"step_separator": "\n\n", "max_length": 200, "max_prompt_length": None,
                     "max_completion_length": None}
    assert StepFormat.saved(trained_prms[kind]) == StepFormat("\n\n", Truncation(max_length=200))


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_prm_reward_uses_the_saved_separator(trained_prms, kind):
    reward = PRMReward(str(trained_prms[kind]), device="cpu")
    assert reward.step_format == StepFormat("\n\n", Truncation(max_length=200))
    assert reward.split_steps("3 + 4 = 7\n\nso 7") == ["3 + 4 = 7", "so 7"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the saved separator itself does not warn
        PRMReward(str(trained_prms[kind]), device="cpu", step_separator="\n\n")


def test_an_explicit_other_separator_warns_once(trained_prms):
    with pytest.warns(UserWarning, match=r"splits and scores at '\\n', but the PRM was trained with '\\n\\n'") as seen:
        reward = PRMReward(str(trained_prms["full"]), device="cpu", step_separator="\n")
        reward(["q"], ["a\nb"])
        reward(["q"], ["a\nb"])
    assert len([w for w in seen if "trained with" in str(w.message)]) == 1
    assert reward.step_separator == "\n"


def test_prm_eval_scores_with_the_saved_format(trained_prms, tmp_path, capsys):
    from prm_trainer.eval_cli import main

    rows = [{"prompt": "What is 3 + 4?", "completions": ["3 + 4 = 7", "so 7"], "labels": [True, True]}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "built")
    argv = ["--model", str(trained_prms["lora"]), "--benchmark", "built", "--dataset", str(tmp_path / "built"),
            "--json", "--no_progress", "--device", "cpu"]
    assert main(argv + ["--max-batch-tokens", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["scoring"] == {
        "step_separator": "\n\n", "max_length": 200, "max_prompt_length": None, "max_completion_length": None}
    # A flag overrides its part only; another separator than the saved one warns.
    with pytest.warns(UserWarning, match="trained with '\\\\n\\\\n'"):
        assert main(argv + ["--step_separator", "\\n"]) == 0
    assert json.loads(capsys.readouterr().out)["scoring"] == {
        "step_separator": "\n", "max_length": 200, "max_prompt_length": None, "max_completion_length": None}


def test_evaluate_reward_model_refuses_a_step_format_beside_its_parts(short_context_prm):
    # step_format holds the separator and truncation: both given would silently ignore one of them.
    from prm_trainer import StepFormat, evaluate_reward_model

    model, tokenizer, _ = short_context_prm
    rows = [{"prompt": "q", "completions": ["a", "b"], "labels": [True, False]}]
    for extra in ({"step_separator": "\n\n"}, {"max_length": 32}):
        with pytest.raises(ValueError, match="pass step_format or step_separator and max_\\*length, not both"):
            evaluate_reward_model(model, tokenizer, rows, step_format=StepFormat("\n"), **extra)
    assert evaluate_reward_model(model, tokenizer, rows, step_format=StepFormat("\n"))["num_rows"] == 1
