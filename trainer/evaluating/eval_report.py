"""What `prm-eval` shows: a results dict of `prm_trainer.evaluate` as a text table, a bar or line chart, and a
section of the model card.

Tables and card show percentages with one decimal, as ProcessBench reports them; `--json` keeps the fractions.
"""

import re
from collections import Counter
from datetime import date
from pathlib import Path

from .processbench import ANCHORS

TITLES = {"processbench": "ProcessBench", "built": "Built split", "best_of_n": "Best-of-N"}


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table(header: list[str], rows: list[list], markdown: bool) -> str:
    """Rows of cells as a text table (first column left-aligned, the others right-aligned) or a Markdown table."""
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        lines.insert(1, "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in cells
    )


def _processbench_table(results: dict, markdown: bool) -> str:
    rows = [
        [subset, percent(m["accuracy_erroneous"]), percent(m["accuracy_correct"]), percent(m["f1"]),
         m["num_erroneous"] + m["num_correct"]]
        for subset, m in results["subsets"].items()
    ]
    average = results["average"]
    cases = sum(row[-1] for row in rows)
    rows.append(["average", percent(average["accuracy_erroneous"]), percent(average["accuracy_correct"]),
                 percent(average["f1"]), cases])
    return _table(["subset", "erroneous", "correct", "F1", "cases"], rows, markdown)


def _built_table(results: dict, markdown: bool) -> str:
    rows = []
    for source, m in [("overall", results["overall"]), *results["sources"].items()]:
        rows.append([source, m["num_rows"], m["num_steps"], percent(m["step_accuracy"]),
                     percent(m["majority_baseline"]), percent(m["balanced_accuracy"]),
                     percent(m["first_error_accuracy_on_errors"]), percent(m["first_error_accuracy_on_correct"]),
                     percent(m["first_error_f1"])])
    # "erroneous" and "correct" are ProcessBench's two accuracies: first error found exactly, no step flagged.
    header = ["source", "rows", "steps", "step acc", "majority", "balanced", "erroneous", "correct", "first-error F1"]
    return _table(header, rows, markdown)


def _best_of_n_table(results: dict, markdown: bool) -> str:
    by_n = results["by_n"]
    columns = [key for key in next(iter(by_n.values())) if key.startswith("prm_")]
    columns += ["majority_vote", "pass_at_n", "random"]
    rows = [[n, *(percent(figures[column]) for column in columns)] for n, figures in by_n.items()]
    names = {"majority_vote": "majority", "pass_at_n": "pass@N"}
    return _table(["N", *(names.get(c, c.replace("prm_", "PRM ")) for c in columns)], rows, markdown)


TABLES = {"processbench": _processbench_table, "built": _built_table, "best_of_n": _best_of_n_table}


def summary(results: dict) -> str:
    """One line on what was measured and how."""
    benchmark = results["benchmark"]
    parts = [f"{TITLES[benchmark]} of {results['model']}"]
    if benchmark == "processbench":
        parts.append(f"data {results['data']}")
        calibration = results["calibration"]
        if calibration:
            parts.append(f"threshold {calibration['threshold']:.4f}, calibrated on {calibration['subset']} "
                         f"(F1 {percent(calibration['f1'])} there)")
        else:
            parts.append(f"threshold {results['threshold']}")
    elif benchmark == "built":
        parts.append(f"{results['dataset']}, split {results['split']}, threshold {results['threshold']}")
    else:
        parts.append(f"{results['num_problems']} problems, up to {results['max_n']} candidates each")
    critic = results.get("critic")
    if critic:
        # A judge scored as a critic: its verdicts, not step scores, and what it left without one.
        missing = Counter()
        for counts in critic["no_verdict"].values():
            missing.update(counts)
        what = ", ".join(f"{n} {reason}" for reason, n in sorted(missing.items())) or "none"
        parts.append(f"critic, {critic['judge_samples']} verdict(s) per solution; no verdict (counted as a miss): {what}")
    else:
        parts.append(f"step separator {results['scoring']['step_separator']!r}")
    return "; ".join(parts)


def render_table(results: dict) -> str:
    """The terminal report: summary line, table, and for ProcessBench the published figures for scale."""
    text = summary(results) + "\n\n" + TABLES[results["benchmark"]](results, markdown=False)
    if results["benchmark"] == "processbench":
        unscored = {subset: m["unscored"] for subset, m in results["subsets"].items() if m["unscored"]}
        if unscored:
            counts = ", ".join(f"{count} in {subset}" for subset, count in unscored.items())
            text += (f"\n\nCounted as misses, unscored (a step cut by truncation before any flagged step; raise "
                     f"--max_length): {counts} cases.")
        anchors = ", ".join(f"{name} {f1}" for name, f1 in ANCHORS.items())
        text += f"\n\nPublished average F1 for scale: {anchors}."
    return text


def plot(results: dict, path: str | Path) -> Path:
    """ProcessBench and built splits: grouped bars; best-of-N: accuracy against N. Written as an image to `path`."""
    import matplotlib.pyplot as plt

    chart = figure(results)
    try:
        chart.savefig(path)
    finally:
        plt.close(chart)
    return Path(path)


def figure(results: dict):
    """The chart of `plot` as a matplotlib figure (report.py embeds it in the HTML page)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chart, axes = plt.subplots(figsize=(8, 4.5))
    if results["benchmark"] == "best_of_n":
        _best_of_n_lines(axes, results)
    else:
        _grouped_bars(axes, results)
    axes.set_title(_chart_title(results), fontsize=10)
    axes.legend(fontsize=8)
    chart.tight_layout()
    return chart


def _chart_title(results: dict) -> str:
    """What was measured, on what, at which threshold: a chart read on its own must say it."""
    title = summary(results).split(";")[0]
    if results["benchmark"] == "built":
        title += f"\n{results['dataset']}, split {results['split']}, threshold {results['threshold']}"
    elif results["benchmark"] == "processbench":
        calibration = results["calibration"]
        threshold = (f"threshold {calibration['threshold']:.4f} (calibrated on {calibration['subset']})" if calibration
                     else f"threshold {results['threshold']}")
        title += f"\n{results['data']}, {threshold}"
    else:
        title += f"\n{results.get('candidates', 'candidates')}: {results['num_problems']} problems"
    return title


BASELINE_STYLES = {"majority_vote": "--", "pass_at_n": ":", "random": "-."}


def _best_of_n_lines(axes, results: dict) -> None:
    """One line per distinct curve: aggregations (or baselines) with equal figures at every N are drawn once, under a
    combined label, instead of one hiding the other."""
    sizes = [int(n) for n in results["by_n"]]
    curves: dict[tuple, list[str]] = {}
    for column in next(iter(results["by_n"].values())):
        if column in ("groups", "unscored"):
            continue
        values = tuple(figures[column] for figures in results["by_n"].values())
        curves.setdefault(values, []).append(column)
    for values, columns in curves.items():
        prm = [c.removeprefix("prm_") for c in columns if c.startswith("prm_")]
        others = [c.replace("_", " ").replace("pass at n", "pass@N") for c in columns if not c.startswith("prm_")]
        label = " = ".join(([f"PRM {' = '.join(prm)}"] if prm else []) + others)
        # A figure that could not be computed (no scored group) is left out of the line, not drawn as 0.
        points = [(n, 100 * v) for n, v in zip(sizes, values) if v is not None]
        # Baselines in dashes of their own, so where two of them run together both stay visible.
        style = "-o" if prm else BASELINE_STYLES[columns[0]]
        axes.plot([n for n, _ in points], [v for _, v in points], style, label=label)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sizes, [str(n) for n in sizes])
    axes.minorticks_off()
    axes.set_xlabel("N (candidates per problem)")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)


def _grouped_bars(axes, results: dict) -> None:
    """Bars per subset or source; a figure that does not apply (e.g. F1 without erroneous rows) is marked n/a, not
    drawn as a zero bar, and every bar carries its value so a real 0 shows as 0.0."""
    if results["benchmark"] == "processbench":
        groups = {**results["subsets"], "average": results["average"]}
        bars = {"erroneous": "accuracy_erroneous", "correct": "accuracy_correct", "F1": "f1"}
    else:
        groups = {"overall": results["overall"], **results["sources"]}
        bars = {"step acc": "step_accuracy", "balanced": "balanced_accuracy", "first-error F1": "first_error_f1"}
    width = 0.8 / len(bars)
    for offset, (label, key) in enumerate(bars.items()):
        positions = [index + (offset - (len(bars) - 1) / 2) * width for index in range(len(groups))]
        values = [metrics.get(key) for metrics in groups.values()]
        drawn = axes.bar(positions, [100 * v if v is not None else 0 for v in values], width, label=label)
        for bar, position, value in zip(drawn, positions, values):
            if value is None:
                bar.set_visible(False)
            axes.text(position, (100 * value if value is not None else 0) + 1, percent(value) if value is not None
                      else "n/a", ha="center", va="bottom", fontsize=7, rotation=90 if len(groups) > 4 else 0)
        if key == "step_accuracy":
            # Step accuracy only means something above the share of the commoner label: draw that baseline on it.
            for number, (position, metrics) in enumerate(zip(positions, groups.values())):
                baseline = metrics.get("majority_baseline")
                if baseline is not None:
                    axes.hlines(100 * baseline, position - width / 2, position + width / 2, colors="black",
                                linestyles="--", linewidth=1.5, label="majority baseline" if number == 0 else None)
    axes.set_xticks(range(len(groups)), list(groups), rotation=20 if len(groups) > 5 else 0)
    axes.set_ylabel("%")
    axes.set_ylim(0, 112)


def _markers(benchmark: str) -> tuple[str, str]:
    return f"<!-- prm-eval:{benchmark}:begin -->", f"<!-- prm-eval:{benchmark}:end -->"


def card_section(results: dict) -> str:
    """The delimited Markdown block of one benchmark's scores; `update_card` replaces it whole on the next run."""
    begin, end = _markers(results["benchmark"])
    body = TABLES[results["benchmark"]](results, markdown=True)
    note = f"Measured with `prm-eval` on {date.today().isoformat()}: {summary(results)}. Figures in %."
    if results["benchmark"] == "processbench":
        anchors = ", ".join(f"{name} {f1}" for name, f1 in ANCHORS.items())
        note += f" Published average F1 for scale: {anchors}."
    return f"{begin}\n## {TITLES[results['benchmark']]} scores\n\n{note}\n\n{body}\n{end}"


def update_card(model_dir: str | Path, results: dict) -> Path:
    """Write this benchmark's scores into `<model_dir>/README.md`, replacing its previous block, else appending.

    Nothing outside the block changes, so the trainer's sections (and anything the user wrote) stay as they are.
    """
    card = Path(model_dir, "README.md")
    if not Path(model_dir).is_dir():
        raise ValueError(f"--update-card writes README.md into the model's folder; {model_dir} is not a local folder")
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# {Path(model_dir).resolve().name}\n"
    begin, end = _markers(results["benchmark"])
    block = card_section(results)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    card.write_text(text, encoding="utf-8")
    return card
