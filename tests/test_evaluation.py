"""Metrics of prm_trainer.evaluating.evaluation against hand-computed values, and evaluate_reward_model with a model whose scores
are known exactly."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from prm_trainer import evaluate, evaluate_reward_model
from prm_trainer.evaluating.best_of_n import best_of_n_curve, group_sizes, read_candidates
from prm_trainer.evaluating.evaluation import (
    aggregate_steps,
    answer_is_correct,
    answer_key,
    best_of_n_selection,
    compute_step_accuracy,
    first_error_f1,
    predicted_first_error,
    score_steps,
    step_accuracy,
)
from prm_trainer.evaluating.processbench import calibrate_threshold, load_processbench, read_subset_file
from prm_trainer.common.tokenization import StepFormat, Truncation
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


def test_first_error_f1_undefined_without_both_kinds():
    result = first_error_f1([[0.9, 0.9], [0.9, 0.9]], [[True, True], [True, True]])
    assert result["first_error_f1"] is None
    assert result["first_error_accuracy_on_errors"] is None
    assert result["first_error_accuracy_on_correct"] == 1.0
    # Both accuracies zero: F1 is 0, not a division by zero.
    assert first_error_f1([[0.1], [0.9]], [[True], [False]])["first_error_f1"] == 0.0


# ---------------------------------------------------------------- best-of-N


def test_first_error_f1_counts_an_unscored_row_as_a_miss():
    """ProcessBench's own evaluation counts a case it cannot read as wrong; leaving it out of both denominators (as
    before) gave F1 1.0 here, rewarding a PRM that truncates."""
    scores = [[0.9, 0.9], [0.9, NAN], [0.9, NAN, NAN], [0.1, NAN]]
    labels = [[True, True], [True, False], [True, True, True], [False, False]]
    result = first_error_f1(scores, labels)
    # Row 0 correct, hit. Row 1 erroneous, unknown: miss. Row 2 correct, unknown: miss. Row 3: step 0 flagged before
    # the cut, so the prediction (0) is known and right: hit.
    assert result["first_error_unscored_rows"] == 2
    assert result["first_error_num_erroneous"] == 2 and result["first_error_num_correct"] == 2
    assert result["first_error_accuracy_on_errors"] == 0.5 and result["first_error_accuracy_on_correct"] == 0.5
    assert result["first_error_f1"] == 0.5
    assert predicted_first_error([0.9, NAN], 0.5) is None and predicted_first_error([0.1, NAN], 0.5) == 0
    with pytest.raises(ValueError, match="row 0: 1 scores for 2 labels"):
        first_error_f1([[0.9]], [[True, True]])


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
    result = best_of_n_selection(scores, prompts, correct, final_answers, aggregation=aggregation)
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
    result = best_of_n_selection([[0.7], [0.7], [0.1]], ["P"] * 3, [True, False, False], ["3", "4", "4"])
    assert result["best_of_n_accuracy"] == 0.5
    # Majority vote: "4" has two votes and is wrong.
    assert result["best_of_n_majority_vote"] == 0.0
    # Vote tie between a right and a wrong answer: 0.5; empty answers do not vote.
    tie = best_of_n_selection([[0.7], [0.7], [0.1]], ["P"] * 3, [True, False, False], ["3", "4", ""])
    assert tie["best_of_n_majority_vote"] == 0.5


def test_best_of_n_majority_vote_normalizes_answers():
    result = best_of_n_selection([[0.1]] * 3, ["P"] * 3, [True, True, False], ["1,000", "$1000.", "999"])
    assert result["best_of_n_majority_vote"] == 1.0


def test_best_of_n_without_answers_skips_vote_and_counts_unscored():
    result = best_of_n_selection([[0.9], [NAN], []], ["P", "P", "P"], [True, False, False])
    assert result["best_of_n_majority_vote"] is None
    assert result["best_of_n_unscored_solutions"] == 2
    assert result["best_of_n_num_solutions"] == 1
    assert result["best_of_n_accuracy"] == 1.0


def test_best_of_n_validates():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        best_of_n_selection([[0.1]], ["P"], [True], aggregation="max")
    with pytest.raises(ValueError, match="one entry per solution"):
        best_of_n_selection([[0.1]], ["P", "Q"], [True])


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
    scores = score_steps(WordScorer(), word_tokenizer, ROWS[2:], StepFormat(truncation=Truncation(max_length=9)))
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


# ---------------------------------------------------------------- ProcessBench on hand-written cases

from prm_trainer import evaluate  # noqa: E402

def case(case_id, steps, label):
    return {"id": case_id, "generator": "hand", "problem": "q", "steps": [f"step {w}" for w in steps],
            "final_answer_correct": label == -1, "label": label}


# gsm8k: erroneous 3 of 6 found, correct 1 of 2 left alone -> 1/2, 1/2, F1 1/2
GSM8K_CASES = [
    case("g0", ["ok", "ok", "ok"], -1),  # correct, nothing flagged: hit
    case("g1", ["ok", "bad", "ok"], -1),  # correct, step 1 flagged: miss
    case("g2", ["bad", "ok", "ok"], 0),  # error at the first step, found: hit
    case("g3", ["ok", "bad", "ok"], 1),  # error in the middle, found: hit
    case("g4", ["ok", "ok", "ok"], 2),  # error at the last step, nothing flagged: miss
    case("g5", ["ok", "ok", "bad"], 2),  # error at the last step, found: hit
    case("g6", ["ok", "ok", "bad", "ok"], 1),  # flagged too late: miss
    case("g7", ["bad", "ok"], 1),  # flagged too early: miss
]
# math: erroneous 3 of 4, correct 1 of 4 -> F1 = 2 * 3/4 * 1/4 / 1 = 3/8
MATH_CASES = [
    case("m0", ["ok"], -1),
    case("m1", ["ok", "bad"], -1),
    case("m2", ["bad", "ok"], -1),
    case("m3", ["ok", "ok", "bad"], -1),
    case("m4", ["bad"], 0),
    case("m5", ["ok", "bad", "bad"], 1),
    case("m6", ["ok", "ok", "bad"], 2),
    case("m7", ["ok", "ok", "ok", "ok"], 1),
]


@pytest.fixture
def processbench_dir(tmp_path):
    import json

    folder = tmp_path / "processbench"
    folder.mkdir()
    (folder / "gsm8k.json").write_text(json.dumps(GSM8K_CASES))  # a JSON array, as on the Hub
    (folder / "math.jsonl").write_text("\n".join(json.dumps(c) for c in MATH_CASES) + "\n")  # JSON Lines
    return folder


def test_processbench_f1_matches_hand_computed_values(word_tokenizer, processbench_dir):
    results = evaluate(WordScorer(), word_tokenizer, "processbench", subsets=["gsm8k", "math"], data=processbench_dir,
                       progress=False)
    assert results["subsets"] == {
        "gsm8k": {"accuracy_erroneous": 0.5, "accuracy_correct": 0.5, "f1": 0.5, "num_erroneous": 6,
                  "num_correct": 2, "unscored": 0},
        "math": {"accuracy_erroneous": 0.75, "accuracy_correct": 0.25, "f1": 0.375, "num_erroneous": 4,
                 "num_correct": 4, "unscored": 0},
    }
    assert results["average"] == {"accuracy_erroneous": 0.625, "accuracy_correct": 0.375, "f1": 0.4375}
    assert results["threshold"] == 0.5 and results["calibration"] is None


def test_processbench_threshold_moves_the_predictions(word_tokenizer, processbench_dir):
    # At 0.1 no step is flagged: every correct case is a hit, no erroneous one; F1 0.
    results = evaluate(WordScorer(), word_tokenizer, "processbench", subsets=["gsm8k"], data=processbench_dir,
                       threshold=0.1, progress=False)
    assert results["subsets"]["gsm8k"]["accuracy_correct"] == 1.0
    assert results["subsets"]["gsm8k"]["accuracy_erroneous"] == 0.0
    assert results["average"]["f1"] == 0.0


def test_processbench_calibration_on_another_subset(word_tokenizer, processbench_dir):
    results = evaluate(WordScorer(), word_tokenizer, "processbench", subsets=["math"], data=processbench_dir,
                       calibrate="gsm8k", progress=False)
    # Only thresholds between the two scores (0.2 and 0.9) flag the "bad" steps alone; the midpoint is chosen.
    assert results["calibration"]["subset"] == "gsm8k"
    assert results["calibration"]["threshold"] == pytest.approx((P_OK + P_BAD) / 2)
    assert results["calibration"]["f1"] == 0.5
    assert list(results["subsets"]) == ["math"] and results["average"]["f1"] == 0.375


score_lists = st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=5), min_size=2, max_size=12)


@settings(max_examples=60, deadline=None)
@given(score_lists, st.data())
def test_calibrated_threshold_is_the_best_f1(scores, data):
    cases = [{"label": data.draw(st.integers(-1, len(row) - 1))} for row in scores]
    assume(any(c["label"] == -1 for c in cases) and any(c["label"] != -1 for c in cases))
    labels = [[c["label"] == -1 or i < c["label"] for i in range(len(row))] for row, c in zip(scores, cases)]
    threshold, best = calibrate_threshold(scores, cases)
    assert first_error_f1(scores, labels, threshold)["first_error_f1"] == pytest.approx(best)
    for other in [0.0, 1.0] + [s for row in scores for s in row]:
        assert first_error_f1(scores, labels, other)["first_error_f1"] <= best + 1e-12


def test_calibration_between_neighbouring_floats():
    # Their midpoint rounds onto the lower score, which would flag neither step; found by hypothesis.
    scores, cases = [[5e-324], [0.0]], [{"label": -1}, {"label": 0}]
    threshold, best = calibrate_threshold(scores, cases)
    assert (threshold, best) == (5e-324, 1.0)
    assert first_error_f1(scores, [[True], [False]], threshold)["first_error_f1"] == 1.0


@pytest.mark.parametrize(
    "content, message",
    [
        ('[{"id": "a", "problem": "q", "steps": ["s"]}]', r"case 0: missing field 'label'"),
        ('[{"id": "a", "problem": "q", "steps": ["s"], "label": 1}]', r"'label' must be -1 or a step index below 1"),
        ('[{"id": "a", "problem": "q", "steps": [], "label": -1}]', r"'steps' must be a non-empty list"),
        ('{"id": "a", "problem": "q", "steps": ["s"], "label": -1}\n{oops', r"line 2: expected a JSON object"),
        ('[{"id": "a", "problem": "q", "steps": ["s"], "label": true}]', r"'label' must be int, got bool"),
    ],
)
def test_processbench_files_are_checked(tmp_path, content, message):
    path = tmp_path / "gsm8k.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_subset_file(path)


def test_processbench_folder_without_the_subset_says_what_it_found(processbench_dir):
    with pytest.raises(FileNotFoundError, match=r"expected omnimath.json or omnimath.jsonl, found \['gsm8k.json'"):
        load_processbench(["omnimath"], data=processbench_dir)
    with pytest.raises(ValueError, match="ProcessBench subsets are gsm8k, math, olympiadbench, omnimath"):
        load_processbench(["aime"], data=processbench_dir)


# ---------------------------------------------------------------- best-of-N against N


def test_group_sizes():
    assert [group_sizes(n) for n in (1, 2, 3, 4, 6)] == [[1], [1, 2], [1, 2, 3], [1, 2, 4], [1, 2, 4, 6]]


def test_best_of_n_curve_hand_computed(tmp_path):
    import json

    candidates = [
        "Half of 48 is 24.\n\\boxed{72}",  # right; as text, split at "\n" into 2 steps
        ["Add them.", "The answer is 70."],  # wrong
        ["Add them.", "#### 70"],  # wrong
        ["Add them.", "So the answer is $72$."],  # right
    ]
    path = tmp_path / "candidates.jsonl"
    path.write_text(json.dumps({"prompt": "P", "reference_answer": "72", "candidates": candidates}) + "\n")
    problems = read_candidates(path, "\n")
    assert problems[0]["candidates"][0] == ["Half of 48 is 24.", "\\boxed{72}"]
    scores = [[[0.9, 0.8], [0.3, 0.95], [0.6, 0.7], [0.5, 0.9]]]
    curve = best_of_n_curve(scores, problems)
    assert curve["num_problems"] == 1 and curve["max_n"] == 4
    assert curve["by_n"][1] == {"prm_min": 0.5, "prm_prod": 0.5, "prm_last": 0.5, "prm_mean": 0.5,
                                "majority_vote": 0.5, "pass_at_n": 0.5, "random": 0.5, "groups": 4, "unscored": 0}
    # Groups (0, 1) and (2, 3): min picks 0 (right) and 2 (wrong); last 1 and 3; mean and prod 0 and 3.
    # Majority vote ties 72 against 70 in both groups: expected 0.5.
    assert curve["by_n"][2] == {"prm_min": 0.5, "prm_prod": 1.0, "prm_last": 0.5, "prm_mean": 1.0,
                                "majority_vote": 0.5, "pass_at_n": 1.0, "random": 0.5, "groups": 2, "unscored": 0}
    # One group of 4: min, mean and prod pick 0 (right), last picks 1 (0.95, wrong).
    assert curve["by_n"][4] == {"prm_min": 1.0, "prm_prod": 1.0, "prm_last": 0.0, "prm_mean": 1.0,
                                "majority_vote": 0.5, "pass_at_n": 1.0, "random": 0.5, "groups": 1, "unscored": 0}


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "P", "candidates": ["a"]}', r"line 1: missing \['reference_answer'\]"),
        ('{"prompt": "P", "reference_answer": "1", "candidates": []}', "'candidates' must be a non-empty list"),
        ('{"prompt": "P", "reference_answer": "1", "candidates": [3]}', "candidate 0: a candidate must be a text"),
        ("[1, 2]", "line 1: expected a JSON object, got list"),
    ],
)
def test_candidates_file_is_checked(tmp_path, line, message):
    path = tmp_path / "candidates.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        read_candidates(path)


def test_best_of_n_benchmark_scores_every_candidate(word_tokenizer, tmp_path):
    import json

    path = tmp_path / "candidates.jsonl"
    path.write_text(json.dumps({"prompt": "q", "reference_answer": "1",
                                "candidates": ["step bad\nanswer is 1", "step ok\nanswer is 2"]}) + "\n")
    results = evaluate(WordScorer(), word_tokenizer, "best_of_n", candidates=path, progress=False)
    # Second candidate scores higher under every aggregation (0.9 vs 0.2 on its first step) and is wrong.
    assert results["by_n"][2]["prm_min"] == 0.0 and results["by_n"][2]["pass_at_n"] == 1.0
    assert results["benchmark"] == "best_of_n" and results["scoring"]["step_separator"] == "\n"


# ---------------------------------------------------------------- built splits, per source


def test_built_benchmark_per_source(word_tokenizer, tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [dict(r, source=source) for r, source in zip(ROWS, ["synthetic/a", "synthetic/a", "prm800k"])]
    DatasetDict({"test": Dataset.from_list(rows)}).save_to_disk(tmp_path / "built")
    results = evaluate(WordScorer(), word_tokenizer, "built", dataset=tmp_path / "built", split="test", progress=False)
    assert results["overall"]["num_rows"] == 3 and results["overall"]["step_accuracy"] == pytest.approx(4 / 7)
    assert results["overall"]["first_error_f1"] == pytest.approx(2 / 3)
    # synthetic/a: both rows predicted exactly (4 of 4 steps; correct row hit, error found) -> F1 1
    assert results["sources"]["synthetic/a"]["step_accuracy"] == 1.0
    assert results["sources"]["synthetic/a"]["first_error_f1"] == 1.0
    # prm800k: predictions F T T against T F F -> 0 of 3; only an erroneous row, so F1 is undefined
    assert results["sources"]["prm800k"]["step_accuracy"] == 0.0
    assert results["sources"]["prm800k"]["first_error_f1"] is None
    with pytest.raises(ValueError, match=r"--split 'validation' is not a split of .*\['test'\]"):
        evaluate(WordScorer(), word_tokenizer, "built", dataset=tmp_path / "built", split="validation")


# ---------------------------------------------------------------- resumable scoring


class CountingScorer(WordScorer):
    """WordScorer that counts the rows it scores and stops (as Ctrl-C would) after `stop_after` forward passes."""

    def __init__(self, stop_after=None):
        super().__init__()
        self.rows_scored, self.calls, self.stop_after = 0, 0, stop_after

    def forward(self, input_ids, attention_mask=None):
        if self.stop_after is not None and self.calls == self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.rows_scored += input_ids.shape[0]
        return super().forward(input_ids, attention_mask)


def make_scorer(model, tokenizer, folder, separator="\n"):
    from prm_trainer.evaluating.scoring import Scorer
    from prm_trainer.common.tokenization import StepFormat, Truncation

    return Scorer(model, tokenizer, StepFormat(separator, Truncation()), batch_size=1, progress=False, scores_dir=folder,
                  model_name="word-scorer")


def test_scoring_resumes_after_an_interruption(word_tokenizer, tmp_path, monkeypatch):
    from prm_trainer.evaluating import scoring

    monkeypatch.setattr(scoring, "CHUNK_ROWS", 2)  # a write after every 2 rows
    rows = ROWS * 3  # 9 rows
    expected = make_scorer(WordScorer(), word_tokenizer, None)(rows, "split")

    with pytest.raises(KeyboardInterrupt):  # stopped in the third chunk: 4 rows were written
        make_scorer(CountingScorer(stop_after=5), word_tokenizer, tmp_path)(rows, "split")
    lines = (tmp_path / "split.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"settings": {"model": "word-scorer", "step_separator": "\n", "max_length": None,
                                                 "max_prompt_length": None, "max_completion_length": None}}
    assert [json.loads(line)["index"] for line in lines[1:]] == [0, 1, 2, 3]

    # A write cut in the middle of a line is dropped and its row scored again.
    with open(tmp_path / "split.jsonl", "a") as out:
        out.write('{"index": 4, "fingerp')
    resumed = CountingScorer()
    assert make_scorer(resumed, word_tokenizer, tmp_path)(rows, "split") == expected
    assert resumed.rows_scored == 5

    # All scored: nothing runs; a row whose text changed is scored again.
    again = CountingScorer()
    changed = [*rows[:8], dict(rows[8], prompt="q q")]
    make_scorer(again, word_tokenizer, tmp_path)(changed, "split")
    assert again.rows_scored == 1
    assert [json.loads(line)["index"] for line in (tmp_path / "split.jsonl").read_text().splitlines()[1:]] == [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 8
    ]


def test_scores_of_other_settings_are_refused(word_tokenizer, tmp_path):
    make_scorer(WordScorer(), word_tokenizer, tmp_path)(ROWS, "split")
    with pytest.raises(ValueError, match=r"split.jsonl holds scores computed with .*'step_separator': '\\n'.*remove it"):
        make_scorer(WordScorer(), word_tokenizer, tmp_path, separator="\n\n")(ROWS, "split")
