"""tokenize_row's exact outputs, the one Truncation shared by training and scoring, and the import layering."""

import subprocess
import sys

import pytest
from prm_trainer.common.tokenization import StepFormat, Truncation, tokenize_for_scoring, tokenize_row
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

# ---------------------------------------------------------------- a word-level tokenizer with known ids

WORDS = ["[UNK]", "<s>", "</s>", "\n", "what", "is", "2", "+", "3", "?", "=", "5", "6", "the", "answer", "so"]
UNK, BOS, EOS, NL, WHAT, IS, TWO, PLUS, THREE, Q, EQ, FIVE, SIX, THE, ANSWER, SO = range(len(WORDS))
X = -100


def word_tokenizer(bos: bool) -> PreTrainedTokenizerFast:
    """One token per space-separated word, "\\n" a token of its own; ids are the positions in WORDS."""
    model = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", behavior="removed"), pre_tokenizers.Split("\n", behavior="isolated")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="[UNK]", eos_token="</s>", bos_token="<s>" if bos else None
    )


ROW = {"prompt": "what is 2 + 3 ?", "completions": ["2 + 3 = 5", "the answer is 6"], "labels": [True, False]}
PROMPT = [WHAT, IS, TWO, PLUS, THREE, Q]
STEP_1 = [TWO, PLUS, THREE, EQ, FIVE, NL]
STEP_2 = [THE, ANSWER, IS, SIX, NL]
LABELS_1 = [X, X, X, X, X, 1]
LABELS_2 = [X, X, X, X, 0]


def tokenize(row=ROW, bos=False, separator="\n", max_length=None, max_completion_length=None, last_only=False,
             is_eval=False, **kwargs):
    return tokenize_row(
        row, word_tokenizer(bos), separator, max_length, max_completion_length, last_only, is_eval, **kwargs
    )


def test_tokenize_row_labels_sit_on_each_step_last_token():
    assert tokenize() == {
        "input_ids": PROMPT + STEP_1 + STEP_2,
        "labels": [X] * 6 + LABELS_1 + LABELS_2,
    }


def test_tokenize_row_prepends_bos_when_the_tokenizer_has_one():
    assert tokenize(bos=True) == {
        "input_ids": [BOS] + PROMPT + STEP_1 + STEP_2,
        "labels": [X] * 7 + LABELS_1 + LABELS_2,
    }


def test_tokenize_row_separator_and_int_labels():
    row = {**ROW, "labels": [0, 1]}
    assert tokenize(row, separator="\n\n") == {
        "input_ids": PROMPT + STEP_1 + [NL] + STEP_2 + [NL],
        "labels": [X] * 6 + [X] * 6 + [0] + [X] * 5 + [1],
    }


@pytest.mark.parametrize(
    "last_only, is_eval, labels",
    [
        (True, False, [X] * 6 + [X] * 6 + LABELS_2),  # training: only the last step keeps its label
        (True, True, [X] * 6 + LABELS_1 + LABELS_2),  # evaluation: every step
        (False, False, [X] * 6 + LABELS_1 + LABELS_2),
    ],
)
def test_tokenize_row_train_on_last_step_only(last_only, is_eval, labels):
    assert tokenize(last_only=last_only, is_eval=is_eval)["labels"] == labels


def test_tokenize_row_empty_step_with_empty_separator_has_no_label():
    row = {"prompt": "what", "completions": ["2 + 3", "", "5"], "labels": [True, True, False]}
    # No token carries the middle step's label, so it is left out rather than misplaced.
    assert tokenize(row, separator="") == {"input_ids": [WHAT, TWO, PLUS, THREE, FIVE], "labels": [X, X, X, 1, 0]}


def test_tokenize_row_rejects_label_count_mismatch():
    with pytest.raises(ValueError, match="got 2 completions and 1 labels"):
        tokenize({**ROW, "labels": [True]})


# Every truncation case, without BOS unless said otherwise.
@pytest.mark.parametrize(
    "kwargs, input_ids, labels",
    [
        # max_length inside the second step: its label is cut, the first survives
        ({"max_length": 14}, PROMPT + STEP_1 + STEP_2[:2], [X] * 6 + LABELS_1 + [X, X]),
        # max_length exactly at the end: nothing cut
        ({"max_length": 17}, PROMPT + STEP_1 + STEP_2, [X] * 6 + LABELS_1 + LABELS_2),
        # max_length inside the prompt: no labelled token left (TRL's behaviour, kept without max_prompt_length)
        ({"max_length": 5}, PROMPT[:5], [X] * 5),
        # max_completion_length inside the second step
        ({"max_completion_length": 7}, PROMPT + STEP_1 + STEP_2[:1], [X] * 6 + LABELS_1 + [X]),
        # both: the completion is cut first, then the whole sequence
        ({"max_completion_length": 7, "max_length": 11}, PROMPT + STEP_1[:5], [X] * 11),
        # max_prompt_length keeps the end of the prompt
        ({"max_prompt_length": 2}, [THREE, Q] + STEP_1 + STEP_2, [X, X] + LABELS_1 + LABELS_2),
        # a prompt already short enough is untouched
        ({"max_prompt_length": 6}, PROMPT + STEP_1 + STEP_2, [X] * 6 + LABELS_1 + LABELS_2),
        # max_prompt_length applies before max_length: the label that TRL would lose survives
        ({"max_prompt_length": 2, "max_length": 8}, [THREE, Q] + STEP_1, [X, X] + LABELS_1),
        ({"max_length": 8}, PROMPT + STEP_1[:2], [X] * 8),
        # all three
        (
            {"max_prompt_length": 1, "max_completion_length": 8, "max_length": 8},
            [Q] + STEP_1 + STEP_2[:1],
            [X] + LABELS_1 + [X],
        ),
    ],
)
def test_tokenize_row_truncation(kwargs, input_ids, labels):
    assert tokenize(**kwargs) == {"input_ids": input_ids, "labels": labels}


@pytest.mark.parametrize(
    "max_prompt_length, prompt",
    [(1, [BOS]), (3, [BOS, THREE, Q]), (7, [BOS] + PROMPT), (50, [BOS] + PROMPT)],
)
def test_tokenize_row_max_prompt_length_keeps_bos(max_prompt_length, prompt):
    assert tokenize(bos=True, max_prompt_length=max_prompt_length) == {
        "input_ids": prompt + STEP_1 + STEP_2,
        "labels": [X] * len(prompt) + LABELS_1 + LABELS_2,
    }


def test_tokenize_row_on_a_byte_level_bpe_round_trips(tiny_model_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    assert tokenizer.bos_token_id is None
    row = {"prompt": "Janet has 16 eggs.", "completions": ["16 - 3 = 13", "13 * 2 = $26"], "labels": [True, False]}
    out = tokenize_row(row, tokenizer, "\n", None, None, False, False)
    assert tokenizer.decode(out["input_ids"]) == "Janet has 16 eggs.16 - 3 = 13\n13 * 2 = $26\n"
    labelled = [(i, label) for i, label in enumerate(out["labels"]) if label != X]
    newline = tokenizer.encode("\n", add_special_tokens=False)
    assert [label for _, label in labelled] == [1, 0]
    assert labelled[-1][0] == len(out["input_ids"]) - 1
    assert all(out["input_ids"][i] == newline[-1] for i, _ in labelled)


def test_prm_trainer_tokenize_row_is_the_module_function():
    # Drop-in compatibility with trl.experimental.prm: a staticmethod callable on the class with TRL's arguments.
    from prm_trainer import PRMTrainer

    assert PRMTrainer.tokenize_row(ROW, word_tokenizer(False), "\n", None, None, False, False) == tokenize()


# ---------------------------------------------------------------- one truncation for training and scoring


def test_truncation_from_config(tmp_path):
    from prm_trainer import PRMConfig

    config = PRMConfig(output_dir=str(tmp_path), max_length=20, max_prompt_length=3, max_completion_length=9)
    assert config.truncation == Truncation(max_length=20, max_prompt_length=3, max_completion_length=9)
    assert config.truncation.as_kwargs() == {"max_length": 20, "max_prompt_length": 3, "max_completion_length": 9}
    assert config.step_format == StepFormat("\n", config.truncation)


def test_step_format_round_trips_and_overrides_by_part(tmp_path):
    step_format = StepFormat("\n\n", Truncation(max_length=20, max_prompt_length=3))
    assert StepFormat.from_dict(step_format.as_dict()) == step_format
    assert StepFormat.saved(tmp_path) is None
    step_format.save(tmp_path)
    assert StepFormat.saved(tmp_path) == step_format
    assert step_format.override("\n") == StepFormat("\n", step_format.truncation)
    assert step_format.override(truncation=Truncation()) == StepFormat("\n\n")
    assert Truncation(max_length=20).capped(8) == Truncation(max_length=8)
    assert Truncation(max_length=5).capped(8) == Truncation(max_length=5)
    assert Truncation().capped(None) == Truncation()
    (tmp_path / "prm_step_format.json").write_text('{"step_separator": "\\n", "max_length": 0}')
    with pytest.raises(ValueError, match=r"prm_step_format.json: expected the keys \['max_completion_length', "):
        StepFormat.saved(tmp_path)
    bad = {"step_separator": "\n", "max_length": -1, "max_prompt_length": None, "max_completion_length": None}
    with pytest.raises(ValueError, match="where: `max_length` must be a positive integer or None, got -1"):
        StepFormat.from_dict(bad, "where")


TRUNCATIONS = [
    Truncation(),
    Truncation(max_length=14),
    Truncation(max_completion_length=7),
    Truncation(max_prompt_length=2, max_length=8),
    Truncation(max_prompt_length=1, max_completion_length=8, max_length=8),
    Truncation(max_length=5),
]


@pytest.mark.parametrize("truncation", TRUNCATIONS, ids=str)
def test_scoring_reads_scores_exactly_where_training_put_labels(truncation):
    """Every step that training labels is scored at that very token, and only those steps."""
    tokenizer = word_tokenizer(bos=True)
    trained = tokenize(bos=True, **truncation.as_kwargs())
    input_ids, positions = tokenize_for_scoring(ROW["prompt"], ROW["completions"], tokenizer, StepFormat("\n", truncation))
    assert input_ids == trained["input_ids"]
    assert [pos for pos, _ in positions] == [pos for pos, label in enumerate(trained["labels"]) if label != X]
    assert [int(ROW["labels"][step]) for _, step in positions] == [label for label in trained["labels"] if label != X]


def test_score_steps_truncates_the_completion_as_training_does(tiny_model_path):
    """max_completion_length reaches evaluation: a step cut in training is unscored (NaN) in evaluation."""
    import math

    import torch
    from prm_trainer.evaluating.evaluation import score_steps
    from transformers import AutoModelForTokenClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    row = {"prompt": "Janet has 16 eggs.", "completions": ["16 - 3 = 13", "13 * 2 = $26"], "labels": [True, False]}
    first_step = len(tokenizer("16 - 3 = 13\n", add_special_tokens=False)["input_ids"])
    whole = score_steps(model, tokenizer, [row])[0]
    cut = score_steps(model, tokenizer, [row], StepFormat(truncation=Truncation(max_completion_length=first_step)))[0]
    assert all(not math.isnan(score) for score in whole)
    assert cut[0] == pytest.approx(whole[0], abs=1e-6) and math.isnan(cut[1])


# ---------------------------------------------------------------- layering


@pytest.mark.parametrize("module", ["prm_trainer.common.tokenization", "prm_trainer.evaluating.evaluation"])
def test_scoring_modules_do_not_import_the_trainer(module):
    """evaluation -> tokenization, never -> trainer: no import circle, and no torch/transformers to score lists."""
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "print(sorted(m for m in ('prm_trainer.training.trainer', 'torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


# ---------------------------------------------------------------- soft targets


def test_step_targets_hard_soft_and_last_only():
    from prm_trainer.common.tokenization import step_targets

    assert step_targets([True, False, 1], soft=False, last_only=False) == [1, 0, 1]
    assert step_targets([True, False], soft=False, last_only=True) == [X, 0]
    assert step_targets([0.25, float("nan"), 1], soft=True, last_only=False) == [0.25, X, 1.0]
    assert step_targets([0.25, 0.5], soft=True, last_only=True) == [X, 0.5]
    assert step_targets([], soft=True, last_only=True) == []


# ---------------------------------------------------------------- check_rows: the first bad row, named


def rows_dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


GOOD = {"id": "a", "prompt": "p", "completions": ["s1", "s2"], "labels": [True, False], "step_scores": [0.5, 0.0]}


@pytest.mark.parametrize(
    "bad, soft, message",
    [
        ({"labels": [True]}, False, "row 2 \\(id 'bad'\\): field 'labels' has 1 values for 2 steps"),
        ({"completions": ["s1", None]}, False, "row 2 \\(id 'bad'\\): field 'completions' has a null step"),
        ({"prompt": None}, False, "row 2 \\(id 'bad'\\): field 'prompt' is missing"),
        ({"labels": None}, False, "row 2 \\(id 'bad'\\): field 'labels' is missing"),
        ({"step_scores": [0.5, 1.5]}, True, "row 2 \\(id 'bad'\\): field 'step_scores' has a value outside \\[0, 1\\]"),
        ({"step_scores": []}, True, "row 2 .* has 0 values for 2 steps .*label_method='outcome' .*label_type='hard'"),
    ],
)
def test_check_rows_names_split_row_and_field(bad, soft, message):
    from prm_trainer.common.tokenization import check_rows

    rows = [GOOD, GOOD, {**GOOD, "id": "bad", **bad}, {**GOOD, "labels": [True]}]  # row 3 is bad too: 2 is named
    with pytest.raises(ValueError, match=f"the test split, {message}"):
        check_rows(rows_dataset(rows), "test", label_column="step_scores" if soft else "labels", soft=soft)


def test_check_rows_accepts_good_rows_nan_scores_and_int_labels():
    from prm_trainer.common.tokenization import check_rows

    rows = [{**GOOD, "labels": [1, 1]}, {**GOOD, "labels": [1, 0], "step_scores": [float("nan"), 1.0]}]
    check_rows(rows_dataset(rows), "train", "step_scores", soft=True)
    check_rows(rows_dataset(rows).select([1, 0]), "train")  # through an indices mapping too


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("labels", ["yes", "no"], "field 'labels' must be a list of booleans \\(or numbers exactly 0/1\\), one per step"),
        ("labels", [2, 0], "row 0 \\(id 'a'\\): field 'labels' has a label that is not true/false"),
        ("prompt", [{"role": "user", "content": "p"}], "field 'prompt' must be a string"),
        ("completions", "s1 s2", "field 'completions' must be a list of strings"),
    ],
)
def test_check_rows_wrong_types(column, value, message):
    from prm_trainer.common.tokenization import check_rows

    with pytest.raises(ValueError, match=f"the train split.*{message}"):
        check_rows(rows_dataset([{**GOOD, column: value}]), "train")


def test_check_rows_missing_columns():
    from prm_trainer.common.tokenization import check_rows

    message = "needs columns prompt, completions and step_scores .*missing \\['step_scores'\\]"
    with pytest.raises(ValueError, match=message):
        check_rows(rows_dataset([{k: v for k, v in GOOD.items() if k != "step_scores"}]), "train", "step_scores", True)


def test_check_rows_counts_rows_in_the_order_of_a_selected_dataset():
    from prm_trainer.common.tokenization import check_rows

    rows = [{**GOOD, "id": str(i)} for i in range(10)]
    rows[7]["labels"] = [True]
    with pytest.raises(ValueError, match="the train split, row 2 \\(id '7'\\): field 'labels' has 1 values"):
        check_rows(rows_dataset(rows).select([9, 8, 7, 6]), "train")
