"""Evaluation of process reward models: step accuracy, ProcessBench's first-error F1, best-of-N selection.

A step's score is the probability of label 1 (the step is still correct) at the step's last token, the same place its
label sat in training. The metric functions take plain lists of scores and labels, so they can be checked by hand;
`score_steps` computes the scores with a model, and the suites (benchmark_suites.py: `evaluate`,
`evaluate_reward_model`) call both.
"""

import math
from collections import defaultdict

import numpy as np

from ..common.tokenization import StepFormat, tokenize_for_scoring

METRICS = ("step_accuracy", "first_error_f1", "best_of_n", "all")
# How step scores become one solution score; `prod` is compared as a sum of logs (same order, no underflow).
AGGREGATIONS = ("min", "prod", "last", "mean")


def _is_scored(score: float) -> bool:
    return not math.isnan(score)


def _binary_step_metrics(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, majority-label baseline and balanced accuracy of boolean predictions against boolean labels."""
    if labels.size == 0:
        return {"step_accuracy": None, "majority_baseline": None, "balanced_accuracy": None}
    positive_rate = float(labels.mean())
    # Mean recall over the classes present: a constant predictor scores 0.5 when both are present.
    recalls = [float((predicted[labels == cls] == cls).mean()) for cls in (False, True) if (labels == cls).any()]
    return {
        "step_accuracy": float((predicted == labels).mean()),
        "majority_baseline": max(positive_rate, 1.0 - positive_rate),
        "balanced_accuracy": sum(recalls) / len(recalls),
    }


def compute_step_accuracy(eval_pred) -> dict:
    """`compute_metrics` for the Trainer: step accuracy on labelled tokens, with baseline and balanced accuracy.

    `accuracy` keeps the key TRL's PRMTrainer reported (its `compute_accuracy`, which `prm_trainer.training.trainer` keeps as
    an alias of this function). Predictions are logits `(batch, seq, 2)` or, after a `preprocess_logits_for_metrics`
    that took the argmax, labels `(batch, seq)`.
    """
    predictions, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    mask = labels != -100
    # The argmax, as TRL: equal logits are class 0. (A score of exactly 0.5 at threshold 0.5 is class 1 in
    # `step_accuracy`; the two differ only on that exact tie.)
    predicted = predictions.argmax(axis=-1) == 1 if predictions.ndim == 3 else predictions == 1
    metrics = _binary_step_metrics(predicted[mask], labels[mask] == 1)
    return {"accuracy": metrics["step_accuracy"], **{k: v for k, v in metrics.items() if k != "step_accuracy"}}


def step_accuracy(scores: list[list[float]], labels: list[list[bool]], threshold: float = 0.5) -> dict:
    """Share of steps whose prediction (score >= threshold) equals the label.

    Reported with the majority-label baseline (the accuracy of always answering the more frequent label) and balanced
    accuracy (mean recall of both labels), because a bare 70% means nothing when 70% of steps are positive. Steps
    without a score (NaN, e.g. cut by truncation) are left out and counted in `unscored_steps`.
    """
    flat_scores = np.array([s for row in scores for s in row], dtype=float)
    flat_labels = np.array([bool(label) for row in labels for label in row], dtype=bool)
    if flat_scores.shape != flat_labels.shape:
        raise ValueError(f"scores and labels differ in size: {flat_scores.size} scores, {flat_labels.size} labels")
    scored = ~np.isnan(flat_scores)
    metrics = _binary_step_metrics(flat_scores[scored] >= threshold, flat_labels[scored])
    return {**metrics, "num_steps": int(scored.sum()), "unscored_steps": int((~scored).sum())}


def predicted_first_error(row_scores: list[float], threshold: float) -> int | None:
    """The first step scoring below `threshold` (-1 if none); None when an unscored step (NaN) comes first, so that
    the prediction is unknown. Steps after the first flagged one do not matter: a row cut by truncation after it
    still has its prediction."""
    for index, score in enumerate(row_scores):
        if not _is_scored(score):
            return None
        if score < threshold:
            return index
    return -1


def first_error_f1(scores: list[list[float]], labels: list[list[bool]], threshold: float = 0.5) -> dict:
    """ProcessBench's metric: find the first wrong step.

    The predicted first error is the first step scoring below `threshold` (-1 if none); the true one is the first step
    labelled False (-1 if none). On rows with an error, accuracy is the exact match of the two indices; on correct rows,
    it is the share where no error is predicted. F1 is their harmonic mean (None when either kind of row is absent).
    A row whose prediction is unknown (an unscored step, e.g. cut by truncation, before any flagged one) counts as a
    miss, as ProcessBench's own evaluation counts a case it cannot read, and is reported in `unscored_rows`: leaving
    it out would raise the F1 of a PRM that truncates.
    """
    if len(scores) != len(labels):
        raise ValueError(f"scores and labels differ in rows: {len(scores)} vs {len(labels)}")
    hits = {"erroneous": [], "correct": []}
    unscored = 0
    for index, (row_scores, row_labels) in enumerate(zip(scores, labels, strict=True)):
        if len(row_scores) != len(row_labels):
            raise ValueError(f"row {index}: {len(row_scores)} scores for {len(row_labels)} labels")
        true_index = next((i for i, label in enumerate(row_labels) if not label), -1)
        predicted_index = predicted_first_error(row_scores, threshold)
        unscored += predicted_index is None
        hits["correct" if true_index == -1 else "erroneous"].append(predicted_index == true_index)
    on_errors = sum(hits["erroneous"]) / len(hits["erroneous"]) if hits["erroneous"] else None
    on_correct = sum(hits["correct"]) / len(hits["correct"]) if hits["correct"] else None
    if on_errors is None or on_correct is None:
        f1 = None
    else:
        f1 = 2 * on_errors * on_correct / (on_errors + on_correct) if on_errors + on_correct else 0.0
    return {
        "first_error_f1": f1,
        "first_error_accuracy_on_errors": on_errors,
        "first_error_accuracy_on_correct": on_correct,
        "first_error_num_erroneous": len(hits["erroneous"]),
        "first_error_num_correct": len(hits["correct"]),
        "first_error_unscored_rows": unscored,
    }


def aggregate_steps(step_scores: list[float], aggregation: str) -> float:
    """One solution score from its step scores: `min`, `prod` (as a sum of logs: same order, no underflow), `last`
    or `mean`."""
    if aggregation == "min":
        return min(step_scores)
    if aggregation == "prod":
        return sum(math.log(s) if s > 0 else -math.inf for s in step_scores)
    if aggregation == "last":
        return step_scores[-1]
    if aggregation == "mean":
        return sum(step_scores) / len(step_scores)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def answer_key(answer: str):
    """What majority vote counts: the number an answer states (so "$1,000" and "1000." vote together), else its
    whitespace-normalized text."""
    from prm_builder.common.grading import stated_number

    number = stated_number(answer)
    return number if number is not None else " ".join(str(answer).split())


def answer_is_correct(answer: str, reference: str) -> bool:
    """prm-builder's grading: numeric comparison when the reference is a number (GSM8K), math-verify otherwise."""
    from prm_builder.common.grading import MATH, NUMERIC, answers_match, stated_number

    if not str(answer).strip():
        return False  # a solution that states no answer is wrong, however sound its steps
    return answers_match(answer, reference, NUMERIC if stated_number(reference) is not None else MATH)


def best_of_n_selection(
    scores: list[list[float]],
    prompts: list[str],
    correct: list[bool],
    final_answers: list[str] | None = None,
    aggregation: str = "min",
) -> dict:
    """Best-of-N selection: per prompt, pick the solution with the best aggregated score and check it.

    Reported beside the oracle (some solution is correct), random choice (the expected accuracy of a uniform pick)
    and, when `final_answers` are given, majority vote over the final answers (by `answer_key`; empty answers do not
    vote). Ties, between solutions or votes, count as the expected accuracy of breaking them at random, so the figures
    are exact and need no seed. Solutions with an unscored step or no step are left out and counted.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    lengths = {len(scores), len(prompts), len(correct)} | ({len(final_answers)} if final_answers is not None else set())
    if len(lengths) > 1:
        raise ValueError("scores, prompts, correct (and final_answers) must have one entry per solution")
    groups = defaultdict(list)
    unscored = 0
    for index, (row_scores, prompt) in enumerate(zip(scores, prompts, strict=True)):
        if not row_scores or not all(_is_scored(s) for s in row_scores):
            unscored += 1
            continue
        groups[prompt].append(index)

    totals = {"prm": 0.0, "oracle": 0.0, "random": 0.0, "majority_vote": 0.0}
    for members in groups.values():
        solution_scores = [aggregate_steps(scores[i], aggregation) for i in members]
        best = max(solution_scores)
        chosen = [i for i, s in zip(members, solution_scores, strict=True) if s == best]
        totals["prm"] += sum(correct[i] for i in chosen) / len(chosen)
        totals["oracle"] += float(any(correct[i] for i in members))
        totals["random"] += sum(correct[i] for i in members) / len(members)
        if final_answers is not None:
            votes = defaultdict(list)
            for i in members:
                if str(final_answers[i]).strip():
                    votes[answer_key(final_answers[i])].append(correct[i])
            if votes:
                top = max(len(v) for v in votes.values())
                winners = [v for v in votes.values() if len(v) == top]
                totals["majority_vote"] += sum(sum(v) / len(v) for v in winners) / len(winners)

    num_groups = len(groups)

    def rate(total: float) -> float | None:
        return total / num_groups if num_groups else None

    return {
        "best_of_n_accuracy": rate(totals["prm"]),
        "best_of_n_oracle": rate(totals["oracle"]),
        "best_of_n_random": rate(totals["random"]),
        "best_of_n_majority_vote": rate(totals["majority_vote"]) if final_answers is not None else None,
        "best_of_n_aggregation": aggregation,
        "best_of_n_num_problems": num_groups,
        "best_of_n_num_solutions": sum(len(m) for m in groups.values()),
        "best_of_n_unscored_solutions": unscored,
    }


# Padded tokens per forward pass when scoring: activations grow with the tokens of a batch, not with its rows.
MAX_BATCH_TOKENS = 16384


def check_scoring_options(threshold: float, batch_size: int, max_batch_tokens: int = MAX_BATCH_TOKENS) -> None:
    """The options every scoring entry point shares, checked with one wording."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def model_max_length(model) -> int | None:
    """The longest sequence the model takes (`max_position_embeddings`), None when its config does not say."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def token_batches(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices of `lengths` (sorted longest first) in batches of at most `batch_size` rows and `max_batch_tokens`
    padded tokens (rows x the batch's longest row); a row longer than the budget on its own makes a batch alone."""
    batches, batch = [], []
    for index, _ in enumerate(lengths):
        if batch and (len(batch) == batch_size or (len(batch) + 1) * lengths[batch[0]] > max_batch_tokens):
            batches.append(batch)
            batch = []
        batch.append(index)
    return batches + ([batch] if batch else [])


def score_steps(
    model,
    tokenizer,
    rows,
    step_format: StepFormat | None = None,
    *,
    batch_size: int = 8,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    progress: bool = False,
    desc: str = "Scoring steps",
) -> list[list[float]]:
    """Per row, the probability of label 1 at each step's last token; NaN for a step that was not scored.

    Rows are cut with `step_format` (the training separator and truncation; default `StepFormat()`), and never
    beyond the model's own maximum length (`max_position_embeddings`): a longer row is cut as training cuts it, and
    its steps past the cut are unscored (NaN), so one huge row cannot exhaust memory. Rows are batched longest first
    by tokens: at most `batch_size` rows and `max_batch_tokens` padded tokens per forward pass. Rows with no step
    left to score are not run at all. `progress` shows a bar (labelled `desc`).
    """
    import torch
    from tqdm.auto import tqdm

    step_format = step_format or StepFormat()
    # The same cuts and token positions as training (tokenization.py), so a score is read where the label sat.
    step_format = step_format.override(truncation=step_format.truncation.capped(model_max_length(model)))
    encoded = []
    for row in rows:
        steps = row["completions"]
        input_ids, positions = tokenize_for_scoring(row["prompt"], steps, tokenizer, step_format)
        encoded.append((input_ids, positions, len(steps)))

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    scores = [[math.nan] * num_steps for _, _, num_steps in encoded]
    # Longest first, so each batch holds rows of similar length and pads little.
    order = sorted((i for i in range(len(encoded)) if encoded[i][1]), key=lambda i: len(encoded[i][0]), reverse=True)
    batches = [[order[k] for k in batch]
               for batch in token_batches([len(encoded[i][0]) for i in order], batch_size, max_batch_tokens)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(encoded), desc=desc, unit="row", disable=not progress) as bar:
            bar.update(len(encoded) - len(order))  # rows with nothing to score
            for batch in batches:
                width = len(encoded[batch[0]][0])
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids = encoded[i][0]
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, : len(ids)] = 1
                logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
                probabilities = logits.float().softmax(dim=-1)[..., 1].cpu()
                for row, i in enumerate(batch):
                    for pos, step in encoded[i][1]:
                        scores[i][step] = float(probabilities[row, pos])
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return scores


def built_figures(scores: list[list[float]], rows: list[dict], threshold: float, metrics, aggregation: str) -> dict:
    """`metrics` (from `step_accuracy`, `first_error_f1`, `best_of_n`) of scored rows, with `num_rows`."""
    labels = [[bool(label) for label in row["labels"]] for row in rows]
    results = {"num_rows": len(rows)}
    if "step_accuracy" in metrics:
        results.update(step_accuracy(scores, labels, threshold))
    if "first_error_f1" in metrics:
        results.update(first_error_f1(scores, labels, threshold))
    if "best_of_n" in metrics:
        correct = []
        for row, row_labels in zip(rows, labels, strict=True):
            final, reference = str(row.get("final_answer") or ""), str(row.get("reference_answer") or "")
            if reference.strip():
                correct.append(answer_is_correct(final, reference))
            else:
                correct.append(all(row_labels))
        has_answers = any("final_answer" in row for row in rows)
        final_answers = [str(row.get("final_answer") or "") for row in rows] if has_answers else None
        results.update(best_of_n_selection(scores, [row["prompt"] for row in rows], correct, final_answers, aggregation))
    return results
