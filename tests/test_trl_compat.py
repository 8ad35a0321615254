"""PRMTrainer as a drop-in for TRL 1.9's `trl.experimental.prm`: the cases of TRL's own PRM trainer tests, written
again here against prm_trainer with local stand-ins for their Hub model and data; `tokenize_row` compared token for
token with TRL's documented behaviour on 3,000 random rows; and a subclass's `tokenize_row` is what trains.

Deliberate differences are listed in docs/trainer.md ("Differences from trl.experimental.prm"); the tests that meet
one say so.
"""

import random

import datasets
import numpy as np
import pytest
import torch
from prm_trainer import PRMConfig, PRMTrainer
from prm_trainer.training.trainer import compute_accuracy
from transformers import AutoModelForTokenClassification, AutoTokenizer, EvalPrediction

X = -100

# ---------------------------------------------------------------- TRL's documented tokenize_row, written again


def trl_tokenize_row(features, tokenizer, step_separator, max_length, max_completion_length, train_on_last_step_only,
                     is_eval):
    """What TRL 1.9's docstring and code say `PRMTrainer.tokenize_row` does, step by step: the prompt's ids (BOS in
    front when the tokenizer has one), then each step's ids followed by the separator's, the step's `int(label)` on
    the last of them; the completion cut to `max_completion_length`, then the whole to `max_length`."""
    prompt = list(tokenizer(features["prompt"], add_special_tokens=False)["input_ids"])
    separator = list(tokenizer.encode(step_separator, add_special_tokens=False))
    steps = [list(tokenizer(text, add_special_tokens=False)["input_ids"]) + separator
             for text in features["completions"]]
    if train_on_last_step_only and not is_eval:
        targets = [X] * (len(features["labels"]) - 1) + [int(features["labels"][-1])]
    else:
        targets = [int(label) for label in features["labels"]]
    completion, completion_labels = [], []
    for ids, target in zip(steps, targets, strict=True):
        completion += ids
        completion_labels += [X] * (len(ids) - 1) + [target]
    if tokenizer.bos_token_id is not None:
        prompt = [tokenizer.bos_token_id] + prompt
    if max_completion_length is not None:
        completion, completion_labels = completion[:max_completion_length], completion_labels[:max_completion_length]
    input_ids, labels = prompt + completion, [X] * len(prompt) + completion_labels
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


class OneTextTokenizer:
    """A stand-in for the mocked tokenizer of TRL's tests: a table from text to ids, one text per call (a list is
    an error, as it was for the mock), BOS id 0."""

    bos_token_id, eos_token_id = 0, 2

    def __init__(self, table: dict[str, list[int]]):
        self.table = table

    def encode(self, text, add_special_tokens):
        assert add_special_tokens is False
        return list(self.table[text])

    def __call__(self, text, add_special_tokens):
        return {"input_ids": self.encode(text, add_special_tokens)}


TABLE = {
    "Is 7 prime?": [310, 311, 312, 313],
    "7 has no divisor but 1 and 7.": [320, 321, 322],
    "So 7 is not prime.": [330, 331, 332],
    "\n": [900],
    "\n\n": [900, 900],
}
FEATURES = {"prompt": "Is 7 prime?", "completions": ["7 has no divisor but 1 and 7.", "So 7 is not prime."],
            "labels": [True, False]}
IDS = [0, 310, 311, 312, 313, 320, 321, 322, 900, 330, 331, 332, 900]


def call_tokenize_row(separator="\n", max_length=None, max_completion_length=None, last_only=False, **extra):
    return PRMTrainer.tokenize_row(
        features=FEATURES, tokenizer=OneTextTokenizer(TABLE), step_separator=separator, max_length=max_length,
        max_completion_length=max_completion_length, train_on_last_step_only=last_only, is_eval=False, **extra,
    )


def test_tokenize_row_without_truncation():
    assert call_tokenize_row() == {"input_ids": IDS, "labels": [X] * 8 + [1, X, X, X, 0]}


def test_tokenize_row_on_the_last_step_only():
    assert call_tokenize_row(last_only=True) == {"input_ids": IDS, "labels": [X] * 12 + [0]}


def test_tokenize_row_cuts_the_completion():
    assert call_tokenize_row(max_completion_length=6) == {"input_ids": IDS[:11], "labels": [X] * 8 + [1, X, X]}


def test_tokenize_row_cuts_the_whole_sequence():
    assert call_tokenize_row(max_length=9) == {"input_ids": IDS[:9], "labels": [X] * 8 + [1]}


def test_tokenize_row_with_a_two_token_separator():
    assert call_tokenize_row("\n\n") == {
        "input_ids": [0, 310, 311, 312, 313, 320, 321, 322, 900, 900, 330, 331, 332, 900, 900],
        "labels": [X] * 9 + [1, X, X, X, X, 0],
    }


def test_tokenize_row_cuts_the_prompt_from_the_left_keeping_bos():
    # A deliberate difference: TRL's later `max_prompt_length` kept the prompt's last 3 ids, BOS included in the
    # count and so dropped ([311, 312, 313]...); here BOS stays first and counts toward the 3.
    assert call_tokenize_row(max_prompt_length=3) == {
        "input_ids": [0, 312, 313, 320, 321, 322, 900, 330, 331, 332, 900],
        "labels": [X] * 6 + [1, X, X, X, 0],
    }


# ---------------------------------------------------------------- 3,000 random rows against TRL's behaviour

WORDS = ["Janet", "has", "16", "eggs", "3", "+", "4", "=", "7", "so", "the", "answer", "is", "$", "x", "(", ")", "."]
SEPARATORS = ["\n", "\n\n", " ", ". ", "<|im_end|>", "\nStep:"]


def random_text(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text if rng.random() < 0.8 else text.replace(" ", rng.choice(["", "\n", "  "]))


def random_row(rng: random.Random) -> dict:
    num_steps = rng.randint(1, 6)
    steps = [random_text(rng, rng.randint(0 if rng.random() < 0.1 else 1, 8)) for _ in range(num_steps)]
    label_kinds = [lambda: rng.random() < 0.5, lambda: rng.randint(0, 1), lambda: float(rng.randint(0, 1))]
    kind = rng.choice(label_kinds)
    return {"prompt": random_text(rng, rng.randint(0, 12)), "completions": steps, "labels": [kind() for _ in steps]}


def test_tokenize_row_equals_trl_on_3000_random_rows(tiny_model_path):
    plain = AutoTokenizer.from_pretrained(tiny_model_path)
    with_bos = AutoTokenizer.from_pretrained(tiny_model_path)
    with_bos.bos_token = "<|im_start|>"
    assert plain.bos_token_id is None and with_bos.bos_token_id is not None
    rng = random.Random(0)
    compared = cut = 0
    for _ in range(3000):
        features = random_row(rng)
        args = (
            rng.choice([plain, with_bos]),
            rng.choice(SEPARATORS),
            rng.choice([None, rng.randint(1, 40)]),
            rng.choice([None, rng.randint(1, 30)]),
            rng.random() < 0.3,
            rng.random() < 0.3,
        )
        ours = PRMTrainer.tokenize_row(features, *args)
        assert ours == trl_tokenize_row(features, *args), (features, args[1:])
        assert len(ours["input_ids"]) == len(ours["labels"])
        compared += 1
        cut += args[2] is not None or args[3] is not None
    assert compared == 3000 and 1000 < cut < 3000  # both cut and whole rows were compared


# ---------------------------------------------------------------- labels: floats exactly 0/1, as TRL accepted


def test_float_labels_of_exactly_zero_and_one_are_hard_labels():
    as_bools = call_tokenize_row()
    FEATURES_FLOAT = {**FEATURES, "labels": [1.0, 0.0]}
    got = PRMTrainer.tokenize_row(FEATURES_FLOAT, OneTextTokenizer(TABLE), "\n", None, None, False, False)
    assert got == as_bools


@pytest.mark.parametrize("label", [0.5, float("nan"), 2, None, "1"])
def test_other_hard_labels_are_refused_not_rounded(label):
    features = {**FEATURES, "labels": [True, label]}
    with pytest.raises(ValueError, match=r"step 1: a hard label must be true/false \(or exactly 0/1\), got .*"
                                         r"label_type='soft'"):
        PRMTrainer.tokenize_row(features, OneTextTokenizer(TABLE), "\n", None, None, False, False)


def test_soft_label_type_keeps_the_numbers():
    features = {**FEATURES, "labels": [0.75, 0.25]}
    got = PRMTrainer.tokenize_row(features, OneTextTokenizer(TABLE), "\n", None, None, False, False,
                                  label_type="soft")
    assert [label for label in got["labels"] if label != X] == [0.75, 0.25]


def test_check_rows_accepts_float_zero_one_labels_and_names_others():
    from prm_trainer.common.tokenization import check_rows

    good = datasets.Dataset.from_list([{**FEATURES, "labels": [1.0, 0.0]}])
    assert good.features["labels"].feature.dtype == "float64"
    check_rows(good, "train")  # no error
    bad = datasets.Dataset.from_list([{**FEATURES, "labels": [1.0, 0.0]}, {**FEATURES, "labels": [1.0, 0.5]}])
    with pytest.raises(ValueError, match=r"the train split, row 1: field 'labels' has a label that is not true/false "
                                         r"\(0/1\); numbers between 0 and 1 are soft labels: label_type='soft'"):
        check_rows(bad, "train")


# ---------------------------------------------------------------- compute_accuracy, TRL's name for the metric


def test_compute_accuracy_is_kept_under_trls_name():
    from prm_trainer.evaluating.evaluation import compute_step_accuracy

    assert compute_accuracy is compute_step_accuracy


@pytest.mark.parametrize(
    "labels, accuracy",
    [
        ([[0, 1], [1, 0]], 0.5),  # two right, two wrong
        ([[1, 0], [1, X]], 1.0),  # every labelled token right
        ([[1, 1], [0, X]], 1 / 3),  # one right of three labelled
    ],
)
def test_compute_accuracy_on_token_logits(labels, accuracy):
    logits = np.array([[[0.2, 0.8], [0.7, 0.3]], [[0.4, 0.6], [0.9, 0.1]]])  # argmax 1, 0 | 1, 0
    result = compute_accuracy(EvalPrediction(predictions=logits, label_ids=np.array(labels)))
    assert result["accuracy"] == pytest.approx(accuracy)


def test_equal_logits_are_class_zero_as_an_argmax():
    # Before, equal logits counted as class 1 (p >= 0.5): here the label 0 is right and the label 1 wrong.
    logits = np.array([[[0.3, 0.3], [1.5, 1.5]]])
    assert compute_accuracy(EvalPrediction(predictions=logits, label_ids=np.array([[0, 1]])))["accuracy"] == 0.5
    assert compute_accuracy(EvalPrediction(predictions=logits, label_ids=np.array([[0, 0]])))["accuracy"] == 1.0


# ---------------------------------------------------------------- the trainer on a tiny model and local rows


def stepwise_rows() -> datasets.Dataset:
    """A local stand-in for TRL's `standard_stepwise_supervision` test split: short prompts, 1-3 steps."""
    rows = [
        ("Which is heavier, a kilo of iron or a kilo of wool?", ["Both weigh one kilo.", "So neither."], [1, 1]),
        ("Is 91 prime?", ["91 = 7 * 13.", "So 91 is prime."], [1, 0]),
        ("What is 15% of 40?", ["10% of 40 is 4.", "5% is 2.", "So 6."], [1, 1, 1]),
        ("Half of 9?", ["9 / 2 = 4."], [0]),
        ("How many days in a leap year?", ["A year has 365 days.", "A leap year adds one: 366."], [1, 1]),
        ("Is 0.1 + 0.2 equal to 0.3?", ["In decimals, yes.", "In binary floats it is 0.30000000000000004."],
         [1, 1]),
        ("What is 2^10?", ["2^5 = 32.", "32^2 = 1000."], [1, 0]),
        ("Sum of angles of a triangle?", ["180 degrees."], [1]),
    ]
    return datasets.Dataset.from_dict({
        "prompt": [r[0] for r in rows], "completions": [r[1] for r in rows], "labels": [[bool(v) for v in r[2]]
                                                                                        for r in rows],
    })


@pytest.fixture
def model_and_tokenizer(tiny_model_path):
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    return model, AutoTokenizer.from_pretrained(tiny_model_path)


def config(tmp_path, **overrides) -> PRMConfig:
    options = dict(output_dir=str(tmp_path), report_to="none", save_strategy="no", disable_tqdm=True,
                   dataloader_pin_memory=False, per_device_train_batch_size=4)
    return PRMConfig(**{**options, **overrides})


def assert_changed(before: dict, model, names=None):
    for name, value in before.items():
        if names is None or any(part in name for part in names):
            if value.sum() != 0:  # biases that start at 0 may stay there
                assert not torch.allclose(value, model.get_parameter(name), rtol=1e-12, atol=1e-12), name


@pytest.mark.parametrize("train_on_last_step_only", [True, False])
def test_train_full(tmp_path, model_and_tokenizer, train_on_last_step_only):
    model, tokenizer = model_and_tokenizer
    trainer = PRMTrainer(model=model, args=config(tmp_path, train_on_last_step_only=train_on_last_step_only),
                         processing_class=tokenizer, train_dataset=stepwise_rows())
    before = {name: value.clone() for name, value in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    assert_changed(before, trainer.model)


def test_train_full_pretokenized(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rng = random.Random(1)
    input_ids, labels = [], []
    for _ in range(12):
        length = rng.randint(6, 16)
        input_ids.append([rng.randrange(3, len(tokenizer)) for _ in range(length)])
        labels.append([rng.randint(0, 1) if i % 4 == 3 or i == length - 1 else X for i in range(length)])
    dataset = datasets.Dataset.from_dict({"input_ids": input_ids, "labels": labels})
    trainer = PRMTrainer(model=model, args=config(tmp_path), processing_class=tokenizer, train_dataset=dataset)
    assert trainer.train_dataset[0] == {"input_ids": input_ids[0], "labels": labels[0]}  # used as it is
    before = {name: value.clone() for name, value in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    assert_changed(before, trainer.model)


def test_train_lora(tmp_path, model_and_tokenizer):
    from peft import LoraConfig, TaskType

    model, tokenizer = model_and_tokenizer
    peft_config = LoraConfig(task_type=TaskType.TOKEN_CLS, inference_mode=False, r=8, lora_alpha=32,
                             lora_dropout=0.1)
    trainer = PRMTrainer(model=model, args=config(tmp_path, max_steps=3, learning_rate=1e-3),
                         processing_class=tokenizer, train_dataset=stepwise_rows(), peft_config=peft_config)
    trainable = ("lora", "modules_to_save")
    before = {name: value.clone() for name, value in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    for name, value in before.items():
        unchanged = torch.allclose(value, trainer.model.get_parameter(name), rtol=1e-12, atol=1e-12)
        if any(part in name for part in trainable):
            assert not unchanged or value.sum() == 0, name  # lora_B starts at 0 and must move; lora_A too
        else:
            assert unchanged, name
    assert any(not torch.allclose(value, trainer.model.get_parameter(name)) for name, value in before.items()
               if "lora_B" in name)


def test_tags(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    trainer = PRMTrainer(model=model, args=config(tmp_path), processing_class=tokenizer, train_dataset=stepwise_rows())
    assert trainer.model.model_tags == trainer._tag_names


# ---------------------------------------------------------------- a subclass's tokenize_row is what trains


class FirstStepOnlyTrainer(PRMTrainer):
    """Overrides tokenize_row with TRL's seven arguments, as a TRL user would: only the first step keeps its label."""

    calls = []

    @staticmethod
    def tokenize_row(features, tokenizer, step_separator, max_length, max_completion_length, train_on_last_step_only,
                     is_eval):
        FirstStepOnlyTrainer.calls.append((step_separator, max_length, max_completion_length,
                                           train_on_last_step_only, is_eval))
        out = PRMTrainer.tokenize_row(features, tokenizer, step_separator, max_length, max_completion_length,
                                      train_on_last_step_only, is_eval)
        labelled = [i for i, label in enumerate(out["labels"]) if label != X]
        out["labels"] = [label if i == labelled[0] else X for i, label in enumerate(out["labels"])]
        return out


def test_a_subclass_tokenize_row_is_used_for_training_and_evaluation(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    FirstStepOnlyTrainer.calls.clear()
    rows = stepwise_rows()
    trainer = FirstStepOnlyTrainer(model=model, args=config(tmp_path, max_length=256), processing_class=tokenizer,
                                   train_dataset=rows, eval_dataset=rows)
    for prepared in (trainer.train_dataset, trainer.eval_dataset):
        assert [sum(label != X for label in row["labels"]) for row in prepared] == [1] * len(rows)
    # Called with TRL's arguments only (no max_prompt_length when it is not set), once per row of each split.
    assert sorted(set(FirstStepOnlyTrainer.calls)) == [("\n", 256, None, False, False), ("\n", 256, None, False, True)]
    assert len(FirstStepOnlyTrainer.calls) == 2 * len(rows)
    # The labels it left out on purpose are not reported as lost to truncation.
    assert trainer.dropped_rows == {"train": {}, "eval": {}}
    # The plain trainer labels every step: the override, not the module function, made the difference.
    plain = PRMTrainer(model=model, args=config(tmp_path, max_length=256), processing_class=tokenizer,
                       train_dataset=rows)
    assert sum(sum(label != X for label in row["labels"]) for row in plain.train_dataset) == sum(
        len(labels) for labels in rows["labels"])
