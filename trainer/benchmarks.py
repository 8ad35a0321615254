"""`prm_trainer.evaluate`: one PRM on one benchmark (ProcessBench, a built split, best-of-N); the engine of prm-eval.

Every benchmark gets a `scorer(rows, name) -> step scores` (scoring.py), which batches rows by length and scores them on
the model's device with the step separator and truncation the PRM was trained with, resumably; the benchmark modules
only read files and compute figures.
"""

from collections import defaultdict
from pathlib import Path

from .evaluation import AGGREGATIONS, check_scoring_options, first_error_f1, step_accuracy
from .processbench import SUBSETS
from .scoring import Scorer
from .tokenization import Truncation

BENCHMARKS = ("processbench", "built", "best_of_n")


def built_metrics(scores: list[list[float]], rows: list[dict], threshold: float) -> dict:
    """Step accuracy (with majority baseline and balanced accuracy) and first-error F1, overall and per `source`."""

    def figures(indices):
        labels = [list(rows[i]["labels"]) for i in indices]
        chosen = [scores[i] for i in indices]
        return {"num_rows": len(indices), **step_accuracy(chosen, labels, threshold),
                **first_error_f1(chosen, labels, threshold)}

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
    """The rows of `split` of a folder saved by `prm-builder build`, a `prm_builder:CONFIG`, a Hub id, or a Dataset."""
    if isinstance(dataset, (str, Path)):
        from .cli import load_prm_dataset

        loaded = load_prm_dataset(str(dataset), None, dataset_options or {})
        if split not in loaded:
            raise ValueError(f"--split {split!r} is not a split of {dataset}: {list(loaded)}")
        dataset = loaded[split]
    if len(dataset) == 0:
        raise ValueError(f"the {split} split of {dataset} has no rows to score")
    missing = {"prompt", "completions", "labels"} - set(getattr(dataset, "column_names", None) or dataset[0])
    if missing:
        raise ValueError(f"the built split needs columns prompt, completions and labels; missing {sorted(missing)}")
    return list(dataset)


def evaluate(
    model,
    tokenizer=None,
    benchmark: str = "processbench",
    *,
    step_separator: str = "\n",
    truncation: Truncation | None = None,
    batch_size: int = 8,
    threshold: float = 0.5,
    progress: bool = True,
    subsets=SUBSETS,
    data: str | Path | None = None,
    calibrate: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    dataset=None,
    dataset_options: dict | None = None,
    split: str = "test",
    candidates: str | Path | None = None,
    aggregations=AGGREGATIONS,
    device: str | None = "auto",
    dtype: str = "auto",
    scores_dir: str | Path | None = None,
    on_scored=None,
) -> dict:
    """Measure a PRM on a benchmark; what `prm-eval` prints, as a dict.

    Args:
        model: a PRM (a token classification model with 2 labels, or a PeftModel of one), or a folder / Hub id of a
            full model or a LoRA adapter (loaded with `load_prm` onto `device`, in `dtype`).
        tokenizer: its tokenizer (loaded with the model when `model` is a path).
        benchmark: `processbench`, `built` or `best_of_n`.
        step_separator: the separator the PRM was trained with (`PRMConfig.step_separator`); for best-of-N, text
            candidates are also split into steps at it.
        truncation: the training `Truncation` (e.g. `PRMConfig(...).truncation`); None scores whole rows.
        batch_size: rows per forward pass. threshold: a step is predicted correct when its score is at least this.
        progress: show progress bars.
        subsets, data, calibrate, revision, endpoint: ProcessBench's subsets, a local folder with its files (else the
            Hub's `Qwen/ProcessBench` at `revision`, from `endpoint`), and the subset to calibrate the threshold on.
        dataset, dataset_options, split: the built benchmark's data (as `prm-train --dataset_name` takes it, or a
            `datasets.Dataset`) and split.
        candidates, aggregations: the best-of-N candidates file and the aggregations of step scores to compare.
        scores_dir: keep every row's step scores in `<scores_dir>/<name>.jsonl` as they come, and resume an
            interrupted run from there (see `scoring.Scorer`).
        on_scored: called as `on_scored(name, rows, scores)` after each batch of rows is scored (a ProcessBench
            subset, the built split, the best-of-N candidates), e.g. to show the rows (prm-eval --html).
    """
    from .best_of_n import evaluate_best_of_n
    from .processbench import evaluate_processbench
    from .reward import load_prm

    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    check_scoring_options(threshold, batch_size)
    unknown = [name for name in aggregations if name not in AGGREGATIONS]
    if unknown or not aggregations:
        raise ValueError(f"aggregations must be among {AGGREGATIONS}, got {list(aggregations)}")
    if benchmark == "built" and dataset is None:
        raise ValueError("the built benchmark needs a dataset (--dataset DIR_OR_CONFIG)")
    if benchmark == "best_of_n" and candidates is None:
        raise ValueError("the best_of_n benchmark needs a candidates file (--candidates FILE)")

    name = str(model) if isinstance(model, (str, Path)) else getattr(model, "name_or_path", type(model).__name__)
    if isinstance(model, (str, Path)):
        model, loaded_tokenizer = load_prm(str(model), device=device, dtype=dtype)
        tokenizer = tokenizer or loaded_tokenizer
    if tokenizer is None:
        raise ValueError("pass the PRM's tokenizer along with a model object")
    truncation = truncation or Truncation()

    scorer = Scorer(model, tokenizer, step_separator, truncation, batch_size, progress, scores_dir, name)
    if on_scored is not None:
        scorer = _reporting(scorer, on_scored)

    if benchmark == "processbench":
        results = evaluate_processbench(scorer, subsets, data, threshold, calibrate, revision, endpoint)
    elif benchmark == "built":
        rows = _load_split(dataset, dataset_options, split)
        source = str(dataset) if isinstance(dataset, (str, Path)) else type(dataset).__name__
        results = {"benchmark": "built", "dataset": source, "split": split, "threshold": threshold,
                   **built_metrics(scorer(rows, split), rows, threshold)}
    else:
        results = evaluate_best_of_n(scorer, candidates, step_separator, aggregations)
    settings = {"step_separator": step_separator, **truncation.as_kwargs()}
    return {"model": name, **results, "scoring": settings}
