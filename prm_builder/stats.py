"""What a built dataset holds: rows per split and source, label balance, steps, first errors, drops.

Shared by `prm-builder build`/`stats` and the dataset card, so the numbers a user sees on the
command line are the ones published.
"""

from collections import Counter

import numpy as np
from datasets import Dataset, DatasetDict

from .drops import describe_drops
from .features import CORE_FEATURES
from .judge import DISAGREEMENTS, JUDGE_DROPS

# Extra columns with few distinct values (e.g. prm800k's phase, finish_reason) get a breakdown.
MAX_BREAKDOWN_VALUES = 20


def summarize_splits(dataset: DatasetDict, drops: dict[str, Counter] | None = None) -> dict:
    """A JSON-ready summary of every split."""
    drops = drops or {}
    return {split: _summarize_split(data, drops.get(split, Counter())) for split, data in dataset.items()}


def _summarize_split(data: Dataset, drops: Counter) -> dict:
    columns = data.select_columns(["labels", "first_error", "source"]).to_dict()
    steps = np.array([len(labels) for labels in columns["labels"]], dtype=np.int64)
    positives = int(sum(sum(labels) for labels in columns["labels"]))
    total_steps = int(steps.sum())
    first_errors = Counter()
    for source, first_error in zip(columns["source"], columns["first_error"]):
        if first_error >= 0:
            first_errors[source] += 1
    summary = {
        "rows": len(data),
        "rows_per_source": dict(sorted(Counter(columns["source"]).items())),
        "steps": total_steps,
        "positive_steps": positives,
        "negative_steps": total_steps - positives,
        "positive_fraction": positives / total_steps if total_steps else 0.0,
        "rows_with_error": int(sum(1 for f in columns["first_error"] if f >= 0)),
        "steps_per_solution": _distribution(steps),
        "first_error_position": _distribution(np.array([f for f in columns["first_error"] if f >= 0], dtype=np.int64)),
        "dropped": dict(sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    breakdowns = {}
    for name, feature in data.features.items():
        if name in CORE_FEATURES or getattr(feature, "dtype", None) not in ("string", "int32", "int64", "bool"):
            continue
        counts = Counter(data[name])
        if len(counts) <= MAX_BREAKDOWN_VALUES:
            breakdowns[name] = {str(value): n for value, n in sorted(counts.items(), key=lambda kv: str(kv[0]))}
    if breakdowns:
        summary["rows_per_value"] = breakdowns
    if "judge_first_error" in data.column_names:
        summary["agreement"] = _agreement(data, drops)
    return summary


def _agreement(data: Dataset, drops: Counter) -> dict:
    """How a judge's first errors compare with Monte Carlo's (label_method judge or consensus).

    Rows are the solutions kept; consensus dropped its disagreements, so their kinds come from the
    drop counts: together they are every solution both methods labelled.
    """
    columns = data.select_columns(["judge_first_error", "mc_first_error"]).to_dict()
    pairs = list(zip(columns["judge_first_error"], columns["mc_first_error"]))
    disagreements = {reason: int(drops.get(reason, 0)) for reason in DISAGREEMENTS}
    rows_with_mc = [(judge, mc) for judge, mc in pairs if mc != -2]
    both = len(rows_with_mc) + sum(disagreements.values())
    agreed = sum(1 for judge, mc in rows_with_mc if judge == mc)
    return {
        "judge_labelled": len(pairs) + sum(disagreements.values()),
        "judge_dropped": {reason: int(drops[reason]) for reason in JUDGE_DROPS if drops.get(reason)},
        "both_labelled": both,
        "agreed": agreed,
        "agreement": agreed / both if both else None,
        # Judge vs Monte Carlo first errors, by kind: the confusion of the two labellers.
        "confusion": {
            "both_all_right": sum(1 for judge, mc in rows_with_mc if judge == mc == -1),
            "same_wrong_step": sum(1 for judge, mc in rows_with_mc if judge == mc >= 0),
            "judge_earlier": disagreements["disagree_judge_earlier"] + sum(1 for j, m in rows_with_mc if 0 <= j < m),
            "judge_later": disagreements["disagree_judge_later"] + sum(1 for j, m in rows_with_mc if j > m >= 0),
            "only_judge_all_right": disagreements["disagree_judge_all_right"] + sum(1 for j, m in rows_with_mc if j == -1 != m),
            "only_mc_all_right": disagreements["disagree_mc_all_right"] + sum(1 for j, m in rows_with_mc if m == -1 != j),
        },
    }


def format_agreement(a: dict) -> list[str]:
    dropped = ", ".join(f"{n:,} {reason}" for reason, n in a["judge_dropped"].items()) or "none"
    lines = [f"  judge: {a['judge_labelled']:,} solutions labelled; dropped without a verdict: {dropped}"]
    if a["both_labelled"]:
        c = a["confusion"]
        lines += [
            f"  judge vs Monte Carlo: {a['both_labelled']:,} labelled by both, {a['agreed']:,} agree ({a['agreement']:.1%})",
            "    first errors        judge: all right  judge: a wrong step",
            f"    MC: all right       {c['both_all_right']:>16,}  {c['only_mc_all_right']:>19,}",
            f"    MC: a wrong step    {c['only_judge_all_right']:>16,}  {c['same_wrong_step']:,} same step, "
            f"{c['judge_earlier']:,} judge earlier, {c['judge_later']:,} judge later",
        ]
    return lines


def _distribution(values: np.ndarray) -> dict:
    if not len(values):
        return {"count": 0}
    return {
        "count": int(len(values)),
        "mean": round(float(values.mean()), 2),
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
    }


def format_summary(summary: dict) -> str:
    """The summary as the plain-text report printed by the CLI."""
    lines = []
    for split, s in summary.items():
        lines.append(f"== {split}: {s['rows']:,} rows, {s['steps']:,} steps ==")
        lines.append(
            f"  label balance: {s['positive_steps']:,} positive / {s['negative_steps']:,} negative steps "
            f"({s['positive_fraction']:.1%} positive); {s['rows_with_error']:,} rows contain an error"
        )
        lines.append("  rows per source:")
        width = max((len(source) for source in s["rows_per_source"]), default=0)
        for source, n in s["rows_per_source"].items():
            lines.append(f"    {source:<{width}}  {n:>8,}")
        for column, counts in s.get("rows_per_value", {}).items():
            lines.append(f"  rows per {column}: " + ", ".join(f"{value}: {n:,}" for value, n in counts.items()))
        for name, label in (("steps_per_solution", "steps per solution"), ("first_error_position", "first error at step")):
            d = s[name]
            if d["count"]:
                lines.append(
                    f"  {label}: mean {d['mean']}, min {d['min']}, median {d['median']:g}, max {d['max']}"
                )
        if "agreement" in s:
            lines += format_agreement(s["agreement"])
        dropped = describe_drops(Counter(s["dropped"]))
        lines.append(f"  {dropped}" if dropped else "  dropped nothing")
    return "\n".join(lines)


def plot_distributions(dataset: DatasetDict, path, title: str | None = None) -> None:
    """Steps per solution, and first-error position per source, one row of panels per split, to a file
    (a path or a binary file object; PNG). `title` names what was built, e.g. the config and its options."""
    figure = distribution_figure(dataset, title)
    try:
        figure.savefig(path, dpi=110, format="png")
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def distribution_figure(dataset: DatasetDict, title: str | None = None):
    """The figure of `plot_distributions`, for callers that embed it (report.py) rather than save it."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    splits = list(dataset)
    figure, axes = plt.subplots(len(splits), 2, figsize=(11, 3.6 * len(splits) + 0.4), squeeze=False)
    for row, split in enumerate(splits):
        columns = dataset[split].select_columns(["labels", "first_error", "source"]).to_dict()
        steps = [len(labels) for labels in columns["labels"]]
        left, right = axes[row]
        left.set_title(f"{split}: steps per solution ({len(steps):,} rows)")
        if steps:
            left.hist(steps, bins=range(1, max(steps) + 2), color="#4c72b0", align="left", rwidth=0.85)
            _integer_axes(left, MaxNLocator)
            left.set_xlabel("steps")
            left.set_ylabel("rows")
        else:
            _say(left, "no rows")
        by_source: dict[str, list[int]] = {}
        for source, first_error in zip(columns["source"], columns["first_error"]):
            if first_error >= 0:
                by_source.setdefault(source, []).append(first_error)
        by_source = dict(sorted(by_source.items()))  # same colour per source in every split
        right.set_title(f"{split}: first error position per source")
        if not by_source:
            # Empty axes read as a drawing bug; say what the data holds instead.
            _say(right, "no errors: every step of every row is labelled correct" if steps else "no rows")
            continue
        top = max(max(v) for v in by_source.values())
        # Side by side, one colour per source, with the row count in the legend: several sources never hide
        # behind each other, and a source with one error still shows in the legend.
        counts, _, _ = right.hist(list(by_source.values()), bins=range(0, top + 2), align="left",
                                  label=[f"{source} ({len(v):,})" for source, v in by_source.items()])
        # Headroom above the tallest bar for the legend, one line per source, so it covers no bar.
        right.set_ylim(0, np.max(counts) * (1.1 + 0.1 * len(by_source)))
        right.legend(fontsize=8, loc="upper right")
        _integer_axes(right, MaxNLocator)
        right.set_xlabel("index of first wrong step (0 = first step)")
        right.set_ylabel("rows")
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def _integer_axes(axes, locator) -> None:
    """Rows and step indices are whole numbers: no 0.5-row ticks."""
    axes.xaxis.set_major_locator(locator(integer=True))
    axes.yaxis.set_major_locator(locator(integer=True))


def _say(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, fontsize=10, color="#555555")
    axes.set_xticks([])
    axes.set_yticks([])
