"""ProcessBench (Zheng et al., 2024, arXiv:2412.06559): can the PRM point at the first wrong step of a solution?

The benchmark is four JSON files on the Hub dataset `Qwen/ProcessBench`, one per subset (`gsm8k.json`, `math.json`,
`olympiadbench.json`, `omnimath.json`; 400, 1000, 1000 and 1000 cases). A case holds `id`, `generator`, `problem`,
`steps` (list of strings), `final_answer_correct` and `label`, the index of the earliest wrong step (-1: every step is
right). The predicted first error is the first step scoring below the threshold. Per subset: accuracy on erroneous
cases (the prediction equals the label), accuracy on correct cases (no step flagged), and F1, their harmonic mean; the
headline number is the mean F1 over the subsets.
"""

import json
from pathlib import Path

import numpy as np

from .evaluation import first_error_f1

HUB_REPO = "Qwen/ProcessBench"
SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
# Published F1 on the four subsets' average, for scale (ProcessBench paper and Qwen2.5-Math-PRM report).
ANCHORS = {"Math-Shepherd-PRM-7B": 31.5, "Qwen2.5-Math-7B-PRM800K": 56.5, "Qwen2.5-Math-PRM-7B": 73.5}


def _check_case(case, where: str) -> dict:
    """One case as read from a file, checked field by field (`where` names the file and position)."""
    if not isinstance(case, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(case).__name__}")
    for name, kind in (("id", str), ("problem", str), ("steps", list), ("label", int)):
        if name not in case:
            raise ValueError(f"{where}: missing field {name!r} (ProcessBench cases have id, problem, steps, label)")
        if not isinstance(case[name], kind) or isinstance(case[name], bool):
            raise ValueError(f"{where}: {name!r} must be {kind.__name__}, got {type(case[name]).__name__}")
    steps, label = case["steps"], case["label"]
    if not steps or not all(isinstance(step, str) for step in steps):
        raise ValueError(f"{where} (id {case['id']!r}): 'steps' must be a non-empty list of strings")
    if not -1 <= label < len(steps):
        raise ValueError(
            f"{where} (id {case['id']!r}): 'label' must be -1 or a step index below {len(steps)}, got {label}"
        )
    return case


def read_subset_file(path: str | Path) -> list[dict]:
    """The cases of one subset file: a JSON array (as on the Hub) or JSON Lines, one case per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is no content
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: expected UTF-8 text, got byte 0x{error.object[error.start]:02x} at byte {error.start}; save the file as UTF-8"
        ) from None
    if text.lstrip().startswith("["):
        try:
            cases = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        cases = [_check_case(case, f"{path}, case {index}") for index, case in enumerate(cases)]
    else:
        from prm_builder.common.jsonl import read_objects

        cases = [_check_case(case, f"{path}, line {number}") for number, case in read_objects(path)]
    if not cases:
        raise ValueError(f"{path}: no cases found (expected a JSON array or JSON Lines of ProcessBench cases)")
    return cases


def download_subset(subset: str, revision: str | None = None, endpoint: str | None = None) -> Path:
    """The Hub's `<subset>.json` of `Qwen/ProcessBench`, through huggingface_hub's cache (downloaded once)."""
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(HUB_REPO, f"{subset}.json", repo_type="dataset", revision=revision, endpoint=endpoint)
    )


def load_processbench(
    subsets=SUBSETS, data: str | Path | None = None, revision: str | None = None, endpoint: str | None = None
) -> dict[str, list[dict]]:
    """The cases of each subset, from the folder `data` (`<subset>.json` or `.jsonl`) or else from the Hub.

    `endpoint` is the Hub's address (default: `HF_ENDPOINT`, else huggingface.co); `revision` a branch, tag or commit.
    """
    subsets = list(subsets)
    unknown = [subset for subset in subsets if subset not in SUBSETS]
    if unknown or not subsets:
        raise ValueError(f"ProcessBench subsets are {', '.join(SUBSETS)}; got {subsets}")
    loaded = {}
    for subset in subsets:
        if data is None:
            path = download_subset(subset, revision, endpoint)
        else:
            candidates = [Path(data, f"{subset}{suffix}") for suffix in (".json", ".jsonl")]
            path = next((candidate for candidate in candidates if candidate.is_file()), None)
            if path is None:
                found = sorted(p.name for p in Path(data).iterdir()) if Path(data).is_dir() else "no such folder"
                raise FileNotFoundError(f"--data {data}: expected {subset}.json or {subset}.jsonl, found {found}")
        loaded[subset] = read_subset_file(path)
    return loaded


def case_to_row(case: dict) -> dict:
    """A case as a step-labelled row: steps before the first error are correct, the rest wrong."""
    label = case["label"]
    labels = [label == -1 or index < label for index in range(len(case["steps"]))]
    return {"id": case["id"], "prompt": case["problem"], "completions": case["steps"], "labels": labels}


def subset_metrics(scores: list[list[float]], cases: list[dict], threshold: float) -> dict:
    """Accuracy on erroneous and on correct cases, and their F1, as fractions (None when a kind is absent)."""
    result = first_error_f1(scores, [case_to_row(case)["labels"] for case in cases], threshold)
    return {
        "accuracy_erroneous": result["first_error_accuracy_on_errors"],
        "accuracy_correct": result["first_error_accuracy_on_correct"],
        "f1": result["first_error_f1"],
        "num_erroneous": result["first_error_num_erroneous"],
        "num_correct": result["first_error_num_correct"],
        "unscored": result["first_error_unscored_rows"],
    }


def calibrate_threshold(scores: list[list[float]], cases: list[dict]) -> tuple[float, float]:
    """The threshold with the best F1 on these cases (unscored ones counting as misses), and that F1.

    F1 only changes where the threshold crosses a step score, so every gap between two neighbouring scores is tried
    once, at its midpoint; among equally good thresholds the one nearest 0.5 wins. A case is a hit for every threshold
    in one interval: (score of the labelled step, lowest score before it] for an erroneous case, (-inf, lowest score]
    for a correct one, which makes the search one vectorized comparison.
    """
    low, high, erroneous = [], [], []
    for row_scores, case in zip(scores, cases, strict=True):
        label = case["label"]
        erroneous.append(label != -1)
        # An unscored step (NaN) hides every prediction past it: such a case is a miss at any threshold (as in
        # `first_error_f1`) unless its labelled first error comes before the cut.
        unscored = [index for index, score in enumerate(row_scores) if np.isnan(score)]
        if unscored and (label == -1 or label >= unscored[0]):
            low.append(np.inf)
            high.append(-np.inf)
            continue
        low.append(row_scores[label] if label != -1 else -np.inf)
        high.append(min(row_scores[:label]) if label > 0 else (np.inf if label == 0 else min(row_scores)))
    erroneous = np.array(erroneous, dtype=bool)
    if not erroneous.any() or erroneous.all():
        raise ValueError("calibrating the threshold needs both erroneous and correct cases in the subset")
    edges = np.unique(np.concatenate([[0.0, 1.0], [s for row in scores for s in row if not np.isnan(s)]]))
    # Any threshold in (lower, upper] of a gap flags the same steps; the midpoint reads best, but between two
    # neighbouring floats it rounds down onto the lower score, so the upper one stands in there.
    midpoints = (edges[:-1] + edges[1:]) / 2
    candidates = np.concatenate([[0.0], np.where(midpoints > edges[:-1], midpoints, edges[1:]), [1.0]])
    low, high = np.array(low), np.array(high)
    hits = (low[None, :] < candidates[:, None]) & (candidates[:, None] <= high[None, :])
    on_errors = hits[:, erroneous].mean(axis=1)
    on_correct = hits[:, ~erroneous].mean(axis=1)
    total = on_errors + on_correct
    f1 = np.divide(2 * on_errors * on_correct, total, out=np.zeros_like(total), where=total > 0)
    best = np.flatnonzero(f1 == f1.max())
    choice = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return float(candidates[choice]), float(f1[choice])


def evaluate_processbench(
    scorer,
    subsets=SUBSETS,
    data: str | Path | None = None,
    threshold: float = 0.5,
    calibrate: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
) -> dict:
    """Score every step of every case with `scorer(rows, subset) -> step scores` and compute ProcessBench's metrics.

    With `calibrate=SUBSET`, the threshold is the one with the best F1 on that subset (loaded too if it is not among
    `subsets`, and then left out of the average); the other subsets are scored at it.
    """
    subsets = list(subsets)
    if calibrate is not None and calibrate not in SUBSETS:
        raise ValueError(f"--calibrate must name a ProcessBench subset ({', '.join(SUBSETS)}), got {calibrate!r}")
    wanted = subsets + ([calibrate] if calibrate and calibrate not in subsets else [])
    cases = load_processbench(wanted, data, revision, endpoint)
    scores = {subset: scorer([case_to_row(case) for case in cases[subset]], subset) for subset in wanted}
    calibration = None
    if calibrate is not None:
        threshold, best_f1 = calibrate_threshold(scores[calibrate], cases[calibrate])
        calibration = {"subset": calibrate, "threshold": threshold, "f1": best_f1}
    per_subset = {subset: subset_metrics(scores[subset], cases[subset], threshold) for subset in subsets}
    average = {}
    for key in ("accuracy_erroneous", "accuracy_correct", "f1"):
        values = [metrics[key] for metrics in per_subset.values()]
        average[key] = None if None in values else sum(values) / len(values)
    return {
        "benchmark": "processbench",
        "data": str(data) if data is not None else f"{HUB_REPO}@{revision or 'main'}",
        "threshold": threshold,
        "calibration": calibration,
        "subsets": per_subset,
        "average": average,
    }
