"""Metrics of prm_trainer.evaluation against hand-computed values, and evaluate_reward_model with a model whose scores
are known exactly."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from prm_trainer import evaluate_reward_model
from prm_trainer.evaluation import (
    aggregate_steps,
    answer_is_correct,
    answer_key,
    best_of_n,
    compute_step_accuracy,
    first_error_f1,
    score_steps,
    step_accuracy,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import EvalPrediction, PreTrainedTokenizerFast

NAN = math.nan


# ---------------------------------------------------------------- step accuracy


def test_step_accuracy_hand_computed():
    scores = [[0.9, 0.2], [0.6, 0.4, 0.1]]
    labels = [[True, False], [True, True, False]]
    # predictions (>= 0.5): T F | T F F -> right: T T | T F T = 4/5
    # 3 of 5 labels positive -> majority baseline 0.6
    # recall on positives 2/3 (0.4 missed), on negatives 2/2 -> balanced (2/3 + 1) / 2 = 5/6
    assert step_accuracy(scores, labels) == {
        "step_accuracy": 0.8,
        "majority_baseline": 0.6,
        "balanced_accuracy": pytest.approx(5 / 6),
        "num_steps": 5,
        "unscored_steps": 0,
    }


def test_step_accuracy_threshold_is_inclusive_and_movable():
    assert step_accuracy([[0.5, 0.49]], [[True, False]])["step_accuracy"] == 1.0
    # At threshold 0.3 the 0.49 step is predicted correct, which is wrong.
    assert step_accuracy([[0.5, 0.49]], [[True, False]], threshold=0.3)["step_accuracy"] == 0.5


def test_step_accuracy_constant_predictor_sits_at_the_baselines():
    scores = [[0.9, 0.9, 0.9, 0.9]]
    labels = [[True, True, True, False]]
    result = step_accuracy(scores, labels)
    assert result["step_accuracy"] == result["majority_baseline"] == 0.75
    assert result["balanced_accuracy"] == 0.5


def test_step_accuracy_one_class_and_unscored_steps():
    # Only positives present: balanced accuracy is the recall of that class alone.
    result = step_accuracy([[0.9, NAN, 0.1]], [[True, True, True]])
    assert result == {
        "step_accuracy": 0.5,
        "majority_baseline": 1.0,
        "balanced_accuracy": 0.5,
        "num_steps": 2,
        "unscored_steps": 1,
    }


def test_step_accuracy_empty_and_mismatched():
    assert step_accuracy([], [])["step_accuracy"] is None
    with pytest.raises(ValueError, match="differ in size"):
        step_accuracy([[0.1, 0.2]], [[True]])


# ---------------------------------------------------------------- first-error F1 (ProcessBench)


def test_first_error_f1_hand_computed():
    scores = [
        [0.9, 0.3, 0.2],  # true first error 1, predicted 1: hit
        [0.9, 0.8, 0.2],  # true first error 1, predicted 2: miss
        [0.2, 0.9, 0.9],  # true first error 0, predicted 0: hit
        [0.9, 0.9],  # correct, no error predicted: hit
        [0.9, 0.4],  # correct, error predicted at 1: miss
        [0.6, 0.7, 0.8],  # correct, no error predicted: hit
    ]
    labels = [
        [True, False, False],
        [True, False, False],
        [False, False, False],
        [True, True],
        [True, True],
        [True, True, True],
    ]
    # accuracy on erroneous rows 2/3, on correct rows 2/3, F1 = 2/3
    assert first_error_f1(scores, labels) == {
        "first_error_f1": pytest.approx(2 / 3),
        "first_error_accuracy_on_errors": pytest.approx(2 / 3),
        "first_error_accuracy_on_correct": pytest.approx(2 / 3),
        "first_error_num_erroneous": 3,
        "first_error_num_correct": 3,
        "first_error_unscored_rows": 0,
    }


def test_first_error_f1_is_a_harmonic_mean():
    # erroneous: 1 of 2 hit (0.5); correct: 1 of 1 hit (1.0) -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    scores = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]
    labels = [[False, False], [False, False], [True, True]]
    result = first_error_f1(scores, labels)
    assert result["first_error_accuracy_on_errors"] == 0.5
    assert result["first_error_accuracy_on_correct"] == 1.0
    assert result["first_error_f1"] == pytest.approx(2 / 3)


def test_first_error_f1_undefined_without_both_kinds_and_skips_unscored_rows():
    result = first_error_f1([[0.9, 0.9], [0.9, NAN]], [[True, True], [True, False]])
    assert result["first_error_f1"] is None
    assert result["first_error_accuracy_on_errors"] is None
    assert result["first_error_accuracy_on_correct"] == 1.0
    assert result["first_error_unscored_rows"] == 1
    # Both accuracies zero: F1 is 0, not a division by zero.
    assert first_error_f1([[0.1], [0.9]], [[True], [False]])["first_error_f1"] == 0.0


# ---------------------------------------------------------------- best-of-N


def test_aggregate_steps():
    assert aggregate_steps([0.9, 0.5, 0.8], "min") == 0.5
    assert aggregate_steps([0.9, 0.5, 0.8], "last") == 0.8
    assert math.exp(aggregate_steps([0.9, 0.5, 0.8], "prod")) == pytest.approx(0.36)
    assert aggregate_steps([0.9, 0.0], "prod") == -math.inf
    assert aggregate_steps([0.9, 0.5, 0.8], "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        aggregate_steps([0.9], "median")


def _two_problems():
    # Problem A: 3 solutions, one correct (index 1). Problem B: 2 solutions, both wrong.
    prompts = ["A", "A", "A", "B", "B"]
    correct = [False, True, False, False, False]
    final_answers = ["5", "7", "5", "1", "2"]
    scores = [
        [0.9, 0.3],  # min 0.3, prod 0.27, last 0.3
        [0.6, 0.6],  # min 0.6, prod 0.36, last 0.6
        [0.2, 0.95],  # min 0.2, prod 0.19, last 0.95
        [0.5],
        [0.4],
    ]
    return scores, prompts, correct, final_answers


@pytest.mark.parametrize(
    "aggregation, expected_accuracy",
    [
        ("min", 0.5),  # A picks the correct solution 1, B can only be wrong
        ("prod", 0.5),  # same pick
        ("last", 0.0),  # A picks solution 2 (0.95), wrong
    ],
)
def test_best_of_n_hand_computed(aggregation, expected_accuracy):
    scores, prompts, correct, final_answers = _two_problems()
    result = best_of_n(scores, prompts, correct, final_answers, aggregation=aggregation)
    assert result == {
        "best_of_n_accuracy": expected_accuracy,
        "best_of_n_oracle": 0.5,  # A has a correct solution, B has none
        "best_of_n_random": pytest.approx((1 / 3 + 0) / 2),
        "best_of_n_majority_vote": 0.0,  # A votes "5" (wrong), B ties 1 vs 2 (both wrong)
        "best_of_n_aggregation": aggregation,
        "best_of_n_num_problems": 2,
        "best_of_n_num_solutions": 5,
        "best_of_n_unscored_solutions": 0,
    }


def test_best_of_n_ties_count_as_expected_accuracy():
    # Two solutions tie on score, one correct: a random tie-break is right half the time.
    result = best_of_n([[0.7], [0.7], [0.1]], ["P"] * 3, [True, False, False], ["3", "4", "4"])
    assert result["best_of_n_accuracy"] == 0.5
    # Majority vote: "4" has two votes and is wrong.
    assert result["best_of_n_majority_vote"] == 0.0
    # Vote tie between a right and a wrong answer: 0.5; empty answers do not vote.
    tie = best_of_n([[0.7], [0.7], [0.1]], ["P"] * 3, [True, False, False], ["3", "4", ""])
    assert tie["best_of_n_majority_vote"] == 0.5


def test_best_of_n_majority_vote_normalizes_answers():
    result = best_of_n([[0.1]] * 3, ["P"] * 3, [True, True, False], ["1,000", "$1000.", "999"])
    assert result["best_of_n_majority_vote"] == 1.0


def test_best_of_n_without_answers_skips_vote_and_counts_unscored():
    result = best_of_n([[0.9], [NAN], []], ["P", "P", "P"], [True, False, False])
    assert result["best_of_n_majority_vote"] is None
    assert result["best_of_n_unscored_solutions"] == 2
    assert result["best_of_n_num_solutions"] == 1
    assert result["best_of_n_accuracy"] == 1.0


def test_best_of_n_validates():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        best_of_n([[0.1]], ["P"], [True], aggregation="max")
    with pytest.raises(ValueError, match="one entry per solution"):
        best_of_n([[0.1]], ["P", "Q"], [True])


@pytest.mark.parametrize(
    "first, second, same",
    [("72", " 72. ", True), ("$1,000", "1000", True), ("72.0", "72", True), ("0.5", "1/2", True),
     ("x  +  y", "x + y", True), ("72", "27", False), ("", "0", False)],
)
def test_answer_key_groups_votes(first, second, same):
    assert (answer_key(first) == answer_key(second)) is same


@pytest.mark.parametrize(
    "answer, reference, correct",
    [("$26", "26", True), ("26.00", "26", True), ("27", "26", False), ("", "26", False),
     ("\\frac{1}{2}", "\\frac{1}{2}", True)],
)
def test_answer_is_correct_uses_the_project_grader(answer, reference, correct):
    assert answer_is_correct(answer, reference) is correct


# ---------------------------------------------------------------- the Trainer's compute_metrics


def test_compute_step_accuracy_on_logits():
    # Two sequences, 3 positions; label -100 positions are ignored whatever the logits say.
    logits = np.array(
        [
            [[0.0, 1.0], [5.0, 0.0], [0.0, 2.0]],  # predicted 1, 0, 1
            [[1.0, 0.0], [0.0, 3.0], [-100.0, -100.0]],  # predicted 0, 1, (padding)
        ]
    )
    labels = np.array([[1, -100, 0], [0, 1, -100]])
    # labelled: (1 vs 1) right, (1 vs 0) wrong, (0 vs 0) right, (1 vs 1) right -> 3/4
    # labels 1, 0, 0, 1 -> baseline 0.5; recall(1) = 2/2, recall(0) = 1/2 -> balanced 0.75
    metrics = compute_step_accuracy(EvalPrediction(predictions=logits, label_ids=labels))
    assert metrics == {"accuracy": 0.75, "majority_baseline": 0.5, "balanced_accuracy": 0.75}


def test_compute_step_accuracy_on_argmax_predictions():
    predictions = np.array([[1, 0, 1], [0, 1, -100]])
    labels = np.array([[1, -100, 0], [0, 1, -100]])
    assert compute_step_accuracy(EvalPrediction(predictions=predictions, label_ids=labels))["accuracy"] == 0.75


# ---------------------------------------------------------------- evaluate_reward_model with exact scores

WORDS = ["[UNK]", "[PAD]", "\n", "q", "ok", "bad", "step", "answer"]


@pytest.fixture(scope="module")
def word_tokenizer():
    vocab = {word: index for index, word in enumerate(WORDS)}
    model = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", behavior="removed"), pre_tokenizers.Split("\n", behavior="isolated")]
    )
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", pad_token="[PAD]")


P_OK, P_BAD = 0.9, 0.2


class WordScorer(torch.nn.Module):
    """A stand-in PRM: at each token, p(correct) is 0.9 if the previous word is "ok", 0.2 if it is "bad", else 0.5."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, input_ids, attention_mask=None):
        previous = torch.roll(input_ids, 1, dims=1)
        logit = torch.zeros(input_ids.shape)
        logit[previous == WORDS.index("ok")] = math.log(P_OK / (1 - P_OK))
        logit[previous == WORDS.index("bad")] = math.log(P_BAD / (1 - P_BAD))
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(logit), logit], dim=-1))


def row(prompt, completions, labels, final_answer):
    return {"prompt": prompt, "completions": completions, "labels": labels, "final_answer": final_answer,
            "reference_answer": "1"}


ROWS = [
    row("q", ["step ok", "step ok"], [True, True], "1"),
    row("q", ["step ok", "step bad"], [True, False], "2"),
    row("q q q q", ["step bad", "step ok", "answer ok"], [True, False, False], "3"),
]


def test_score_steps_reads_each_step_last_token(word_tokenizer):
    scores = score_steps(WordScorer(), word_tokenizer, ROWS, batch_size=2)
    assert scores == [
        [pytest.approx(P_OK), pytest.approx(P_OK)],
        [pytest.approx(P_OK), pytest.approx(P_BAD)],
        [pytest.approx(P_BAD), pytest.approx(P_OK), pytest.approx(P_OK)],
    ]
    # Batching and padding change nothing.
    assert score_steps(WordScorer(), word_tokenizer, ROWS, batch_size=1) == scores


def test_score_steps_marks_truncated_steps_unscored(word_tokenizer):
    # Row 3 is 4 prompt tokens + 3 per step: max_length 9 keeps only its first step.
    scores = score_steps(WordScorer(), word_tokenizer, ROWS[2:], max_length=9)
    assert scores[0][0] == pytest.approx(P_BAD)
    assert math.isnan(scores[0][1]) and math.isnan(scores[0][2])


def test_evaluate_reward_model_all_metrics(word_tokenizer):
    result = evaluate_reward_model(WordScorer(), word_tokenizer, ROWS, metric="all", batch_size=2)
    # predictions: T T | T F | F T T against labels T T | T F | T F F -> right: 2 + 2 + 0 = 4 of 7
    assert result["num_rows"] == 3
    assert result["step_accuracy"] == pytest.approx(4 / 7)
    assert result["majority_baseline"] == pytest.approx(4 / 7)
    # recall(True) = 3/4 (row 3 step 1 missed), recall(False) = 1/3 -> balanced 13/24
    assert result["balanced_accuracy"] == pytest.approx(13 / 24)
    # first error: row 1 correct, none predicted (hit); row 2 true 1, predicted 1 (hit); row 3 true 1, predicted 0
    assert result["first_error_accuracy_on_correct"] == 1.0
    assert result["first_error_accuracy_on_errors"] == 0.5
    assert result["first_error_f1"] == pytest.approx(2 / 3)
    # best-of-N over the 2 rows with prompt "q" (min: 0.9 vs 0.2 -> row 1, correct) and row 3 alone (wrong)
    assert result["best_of_n_num_problems"] == 2
    assert result["best_of_n_accuracy"] == 0.5
    assert result["best_of_n_oracle"] == 0.5
    assert result["best_of_n_random"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["best_of_n_majority_vote"] == pytest.approx((1 / 2 + 0) / 2)  # "1" vs "2" tie, then "3"


def test_evaluate_reward_model_single_metric_and_training_mode_restored(word_tokenizer):
    model = WordScorer().train()
    result = evaluate_reward_model(model, word_tokenizer, ROWS)
    assert set(result) == {
        "num_rows", "step_accuracy", "majority_baseline", "balanced_accuracy", "num_steps", "unscored_steps"
    }
    assert model.training


def test_evaluate_reward_model_best_of_n_falls_back_to_labels_without_reference(word_tokenizer):
    rows = [{key: row[key] for key in ("prompt", "completions", "labels")} for row in ROWS]
    result = evaluate_reward_model(WordScorer(), word_tokenizer, rows, metric="best_of_n")
    # Correct = every step labelled correct: only row 1, which min picks.
    assert result["best_of_n_accuracy"] == 0.5
    assert result["best_of_n_majority_vote"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "f1"}, "metric must be one of"),
        ({"aggregation": "median"}, "aggregation must be one of"),
        ({"threshold": 1.5}, "threshold must be between 0 and 1"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_evaluate_reward_model_validates(word_tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate_reward_model(WordScorer(), word_tokenizer, ROWS, **kwargs)
