"""`prm_trainer.evaluate`: one PRM on one benchmark suite (ProcessBench, a built split, best-of-N); the engine of prm-eval.

(The top-level `benchmarks/` folder holds speed scripts; this module measures a PRM's quality.) Every suite gets a
`scorer(rows, name) -> step scores` (scoring.py), which batches rows by tokens and scores them on the model's device
with the step separator and truncation the PRM was trained with (its saved `StepFormat`), resumably; the suite modules
only read files and compute figures. What to measure and how is one `EvalOptions`.
"""

import warnings
from collections import defaultdict
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .evaluation import AGGREGATIONS, MAX_BATCH_TOKENS, METRICS, built_figures, check_scoring_options
from .processbench import SUBSETS
from .scoring import Scorer
from ..common.tokenization import StepFormat, Truncation, saved_step_format

BENCHMARKS = ("processbench", "built", "best_of_n")


@dataclass(frozen=True)
class EvalOptions:
    """What `evaluate` measures and how; each field is the `prm-eval` flag of the same name, with its default.

    Scoring (every suite):
        step_format: the separator and truncation to score with; None: the one saved with the model
            (`prm_step_format.json`, written by `PRMTrainer`), else `StepFormat()`.
        batch_size, max_batch_tokens: at most this many rows and padded tokens per forward pass.
        threshold: a step is predicted correct when its score is at least this.
        progress: show progress bars. scores_dir: keep every row's step scores in `<scores_dir>/<name>.jsonl` and
            resume from them (see `scoring.Scorer`). device, dtype: where and how a model given by path is loaded.
    ProcessBench: subsets, data (a local folder, else the Hub's `Qwen/ProcessBench` at `revision` from
        `endpoint`), calibrate (the subset to pick the threshold on).
    Built split: dataset (as `prm-train --dataset_name` takes it, a `datasets.Dataset`, or a list of rows),
        dataset_options, split; metrics (from `step_accuracy`, `first_error_f1`, `best_of_n`) and the aggregation
        of step scores for `best_of_n`.
    Best-of-N: candidates (the candidates file) and the aggregations of step scores to compare.
    on_scored: called as `on_scored(name, rows, scores)` after each set of rows is scored (a ProcessBench subset, the
        built split, the best-of-N candidates), e.g. to show the rows (prm-eval --html).
    """

    step_format: StepFormat | None = None
    batch_size: int = 8
    max_batch_tokens: int = MAX_BATCH_TOKENS
    threshold: float = 0.5
    progress: bool = True
    scores_dir: str | Path | None = None
    device: str | None = "auto"
    dtype: str = "auto"
    subsets: tuple = SUBSETS
    data: str | Path | None = None
    calibrate: str | None = None
    revision: str | None = None
    endpoint: str | None = None
    dataset: object = None
    dataset_options: dict | None = None
    split: str = "test"
    metrics: tuple = ("step_accuracy", "first_error_f1")
    aggregation: str = "min"
    candidates: str | Path | None = None
    aggregations: tuple = AGGREGATIONS
    on_scored: object = None

    def __post_init__(self):
        check_scoring_options(self.threshold, self.batch_size, self.max_batch_tokens)
        if self.step_format is not None and not isinstance(self.step_format, StepFormat):
            raise ValueError(f"step_format must be a StepFormat, got {type(self.step_format).__name__}")
        unknown = [name for name in self.aggregations if name not in AGGREGATIONS]
        if unknown or not self.aggregations:
            raise ValueError(f"aggregations must be among {AGGREGATIONS}, got {list(self.aggregations)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        unknown = [name for name in self.metrics if name not in METRICS or name == "all"]
        if unknown or not self.metrics:
            raise ValueError(f"metrics must be among {METRICS[:-1]}, got {list(self.metrics)}")

    @classmethod
    def of(cls, options: "EvalOptions | None" = None, **changes) -> "EvalOptions":
        """`options` (default: the defaults) with `changes`; `step_separator=` and `truncation=` are accepted as
        shorthands for the two parts of `step_format`."""
        options = options or cls()
        separator, truncation = changes.pop("step_separator", None), changes.pop("truncation", None)
        if separator is not None or truncation is not None:
            base = changes.get("step_format") or options.step_format or StepFormat()
            changes["step_format"] = base.override(separator, truncation)
        names = {field.name for field in fields(cls)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown evaluation options {unknown}; the options are {sorted(names)}")
        return replace(options, **changes)


def built_metrics(scores: list[list[float]], rows: list[dict], threshold: float,
                  metrics=("step_accuracy", "first_error_f1"), aggregation: str = "min") -> dict:
    """`metrics` overall and per `source` (step accuracy with majority baseline and balanced accuracy, first-error
    F1, best-of-N)."""

    def figures(indices):
        return built_figures([scores[i] for i in indices], [rows[i] for i in indices], threshold, metrics, aggregation)

    by_source = defaultdict(list)
    for index, row in enumerate(rows):
        by_source[str(row.get("source") or "unknown")].append(index)
    return {
        "overall": figures(range(len(rows))),
        "sources": {source: figures(indices) for source, indices in sorted(by_source.items())},
    }


def _reporting(scorer, on_scored):
    def score(rows, name):
        scores = scorer(rows, name)
        on_scored(name, rows, scores)
        return scores

    return score


def _load_split(dataset, dataset_options: dict | None, split: str) -> list[dict]:
    """The rows of `split`, checked once: from a folder saved by `prm-builder build`, a `prm_builder:CONFIG`, a Hub
    id, a `datasets.Dataset` or a list of rows."""
    from ..common.row_checks import check_row_list, check_rows

    if isinstance(dataset, (str, Path)):
        from ..common.data import load_prm_dataset

        loaded = load_prm_dataset(str(dataset), None, dataset_options or {}, flag="--dataset")
        if split not in loaded:
            raise ValueError(f"--split {split!r} is not a split of {dataset}: {list(loaded)}")
        if len(loaded[split]) == 0:
            raise ValueError(f"the {split} split of {dataset} has no rows to score")
        dataset = loaded[split]
    if isinstance(dataset, (list, tuple)):
        check_row_list(dataset, split)
        return list(dataset)
    check_rows(dataset, split)
    return list(dataset)


def _warn_on_other_separator(step_format: StepFormat | None, saved: StepFormat | None, where: str) -> None:
    if step_format is not None and saved is not None and step_format.step_separator != saved.step_separator:
        warnings.warn(
            f"scoring with step_separator {step_format.step_separator!r}, but {where} was trained with "
            f"{saved.step_separator!r} (its prm_step_format.json): scores are read at tokens it was not trained on",
            UserWarning, stacklevel=3,
        )


def evaluate_reward_model(
    model,
    tokenizer,
    dataset,
    metric: str = "step_accuracy",
    batch_size: int = 8,
    threshold: float = 0.5,
    step_separator: str = "\n",
    aggregation: str = "min",
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    progress: bool = False,
    step_format: StepFormat | None = None,
) -> dict:
    """Score every step of `dataset` with a PRM and compute `metric`: the built-split benchmark of `prm-eval`
    (`evaluate(..., "built")` below), its overall figures as one flat dict.

    Args:
        model: a token classification model with 2 labels (a PeftModel too), e.g. trained by `PRMTrainer`.
        tokenizer: its tokenizer.
        dataset: a `datasets.Dataset` or list of rows with `prompt`, `completions`, `labels`; `best_of_n` also
            uses `final_answer` and `reference_answer` when present.
        metric: `step_accuracy`, `first_error_f1`, `best_of_n` or `all`.
        batch_size: rows per forward pass (at most; see `score_steps` for the token budget).
        threshold: a step is predicted correct when its score is at least this.
        step_separator: the separator the model was trained with.
        aggregation: how `best_of_n` turns step scores into a solution score: `min`, `prod`, `last` or `mean`.
        max_length, max_prompt_length, max_completion_length: truncation as in training (pass
            `**config.truncation.as_kwargs()` of the `PRMConfig`); `None` (default) scores whole rows.
        progress: show a progress bar over the rows (on stderr).
        step_format: the separator and truncation as one `StepFormat` (e.g. `StepFormat.from_args(config)`), instead
            of the four arguments above.

    Returns:
        A flat dict of metrics (see `step_accuracy`, `first_error_f1`, `best_of_n`) plus `num_rows`. In `best_of_n`,
        a solution is correct when its final answer matches the reference answer (`answer_is_correct`), or, for rows
        without a reference answer, when every step is labelled correct.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    lengths = (max_length, max_prompt_length, max_completion_length)
    if step_format is None:
        step_format = StepFormat(step_separator, Truncation(*lengths))
    elif step_separator != "\n" or any(length is not None for length in lengths):
        raise ValueError("pass step_format or step_separator and max_*length, not both: step_format holds the "
                         f"separator and truncation, got step_format={step_format!r} and step_separator="
                         f"{step_separator!r}, lengths {lengths}")
    metrics = ("step_accuracy", "first_error_f1", "best_of_n") if metric == "all" else (metric,)
    options = EvalOptions(step_format=step_format, batch_size=batch_size, threshold=threshold, progress=progress,
                          dataset=dataset, metrics=metrics, aggregation=aggregation)
    return evaluate(model, tokenizer, "built", options)["overall"]


def evaluate(model, tokenizer=None, benchmark: str = "processbench", options: EvalOptions | None = None,
             **changes) -> dict:
    """Measure a PRM on a benchmark suite; what `prm-eval` prints, as a dict.

    Args:
        model: a PRM (a token classification model with 2 labels, or a PeftModel of one), or a folder / Hub id of a
            full model or a LoRA adapter (loaded with `load_prm` onto `options.device`, in `options.dtype`).
        tokenizer: its tokenizer (loaded with the model when `model` is a path).
        benchmark: `processbench`, `built` or `best_of_n`.
        options: an `EvalOptions`; any of its fields may also be given as keywords (`subsets=["gsm8k"]`,
            `step_separator="\\n"`), which override it.

    A model given by path is scored with the step format it was trained with (`prm_step_format.json`) unless
    `step_format` says otherwise; a different separator warns.
    """
    from .best_of_n import evaluate_best_of_n
    from .processbench import evaluate_processbench
    from .reward import load_prm

    options = EvalOptions.of(options, **changes)
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    if benchmark == "built" and options.dataset is None:
        raise ValueError("the built benchmark needs a dataset (--dataset DIR_OR_CONFIG)")
    if benchmark == "best_of_n" and options.candidates is None:
        raise ValueError("the best_of_n benchmark needs a candidates file (--candidates FILE)")

    name = str(model) if isinstance(model, (str, Path)) else getattr(model, "name_or_path", type(model).__name__)
    saved = saved_step_format(model)
    _warn_on_other_separator(options.step_format, saved, name)
    if isinstance(model, (str, Path)):
        model, loaded_tokenizer = load_prm(str(model), device=options.device, dtype=options.dtype,
                                           progress=options.progress)
        tokenizer = tokenizer or loaded_tokenizer
    if tokenizer is None:
        raise ValueError("pass the PRM's tokenizer along with a model object")
    step_format = options.step_format or saved or StepFormat()

    scorer = Scorer(model, tokenizer, step_format, options.batch_size, options.progress, options.scores_dir, name,
                    max_batch_tokens=options.max_batch_tokens)
    if options.on_scored is not None:
        scorer = _reporting(scorer, options.on_scored)

    threshold = options.threshold
    if benchmark == "processbench":
        results = evaluate_processbench(scorer, options.subsets, options.data, threshold, options.calibrate,
                                        options.revision, options.endpoint)
    elif benchmark == "built":
        rows = _load_split(options.dataset, options.dataset_options, options.split)
        dataset = options.dataset
        source = str(dataset) if isinstance(dataset, (str, Path)) else type(dataset).__name__
        results = {"benchmark": "built", "dataset": source, "split": options.split, "threshold": threshold,
                   **built_metrics(scorer(rows, options.split), rows, threshold, options.metrics, options.aggregation)}
    else:
        results = evaluate_best_of_n(scorer, options.candidates, step_format.step_separator, options.aggregations)
    return {"model": name, **results, "scoring": step_format.as_dict()}
