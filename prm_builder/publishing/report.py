"""The report page: sampled solutions step by step, coloured by label, beside the Monte Carlo scores, the judge's
verdict and a PRM's scores, in one HTML file that opens from disk.

    prm-builder report out/synthetic --output report.html --per-source 5 --prm my-prm
    prm-eval --model my-prm --benchmark built --dataset out/synthetic --html report.html

The page needs no server and no network: CSS and JS are inline, plots are PNGs in data: URIs, and a
Content-Security-Policy allows nothing else (our one script is allowed by its hash, so even a row that slipped past
escaping could not run code). Every text from the data goes through jinja2's autoescape. Without JavaScript every row
is shown; with it, filters by source and by disagreement hide the others. The page holds sampled rows only (and cuts
any one text at MAX_TEXT_CHARS), so a large dataset still gives a page of a few MB.
"""

import argparse
import base64
import hashlib
import io
import math
from importlib import resources
from pathlib import Path

from ..command_line import UsageError, read_escapes

# One step or prompt longer than this is cut on the page (the rest is counted), so one huge row cannot bloat it.
MAX_TEXT_CHARS = 20_000
# prm-eval's page keeps this many rows, most confident PRM mistakes first.
EVAL_ROWS = 200
# mc_first_error where no Monte Carlo ran (-1: every step right), as sampling/judge_labels.py writes it; a copy, since
# importing that module would load datasets into `prm-builder --help` (tests/test_report.py checks the two agree).
NO_MC = -2


def sample_rows(dataset, per_source: int, seed: int) -> list[dict]:
    """Up to `per_source` rows of each source of each split of a DatasetDict, picked at random by `seed`, in their
    order in the split; each row gains `split`. The same seed gives the same rows."""
    import numpy as np

    if per_source < 1:
        raise ValueError(f"--per-source must be at least 1, got {per_source}")
    rng = np.random.default_rng(seed)
    picked = []
    for split, data in dataset.items():
        by_source: dict[str, list[int]] = {}
        for index, source in enumerate(data["source"] if "source" in data.column_names else [""] * len(data)):
            by_source.setdefault(str(source), []).append(index)
        chosen = []
        for source in sorted(by_source):
            indices = by_source[source]
            if len(indices) > per_source:
                indices = sorted(rng.choice(indices, size=per_source, replace=False).tolist())
            chosen.extend(indices)
        for index in sorted(chosen):
            picked.append({**data[index], "split": split})
    return picked


def _number(value) -> float | None:
    """A finite float, or None for a missing or NaN score (a step that was not estimated or was cut)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _text(value) -> dict:
    text = "" if value is None else str(value)
    if len(text) <= MAX_TEXT_CHARS:
        return {"text": text, "cut": 0}
    return {"text": text[:MAX_TEXT_CHARS], "cut": len(text) - MAX_TEXT_CHARS}


def _optional_int(row: dict, name: str) -> int | None:
    value = row.get(name)
    return None if value is None else int(value)


def row_view(row: dict, prm_scores: list[float] | None = None, threshold: float = 0.5) -> dict:
    """What the page shows of one row: its texts, per step the label, Monte Carlo score and PRM score, and whether
    the PRM (at `threshold`) or the judge and the Monte Carlo estimate disagree."""
    labels = [bool(label) for label in row.get("labels") or []]
    completions = list(row.get("completions") or [])
    mc_scores = row.get("step_scores")
    rollouts = row.get("step_rollouts")  # early-stopped Monte Carlo: a score is successes over these rollouts
    first_error = _optional_int(row, "first_error")
    if first_error is None and labels:
        first_error = next((i for i, label in enumerate(labels) if not label), -1)
    steps = []
    confidence = None
    for index, completion in enumerate(completions):
        label = labels[index] if index < len(labels) else None
        mc = _number(mc_scores[index]) if mc_scores is not None and index < len(mc_scores) else None
        prm = _number(prm_scores[index]) if prm_scores is not None and index < len(prm_scores) else None
        disagrees = prm is not None and label is not None and (prm >= threshold) != label
        if disagrees:
            # How sure the PRM was of its wrong call: its distance from the threshold, as a share of the room there
            # was on that side (so 1.0 means it gave a wrong step 1.0, or a right step 0.0).
            room = (1 - threshold) if prm >= threshold else threshold
            sureness = abs(prm - threshold) / room if room > 0 else 1.0
            confidence = sureness if confidence is None else max(confidence, sureness)
        steps.append({
            **_text(completion),
            "label": label,
            "is_first_error": index == first_error,
            "mc": mc,
            "mc_missing": mc_scores is not None and mc is None,
            "rollouts": int(rollouts[index]) if rollouts is not None and index < len(rollouts) else None,
            "prm": prm,
            "prm_missing": prm_scores is not None and prm is None,
            "prm_disagrees": disagrees,
        })
    judge, mc_first = _optional_int(row, "judge_first_error"), _optional_int(row, "mc_first_error")
    return {
        "id": str(row.get("id") or ""),
        "split": str(row.get("split") or ""),
        "source": str(row.get("source") or ""),
        "prompt": _text(row.get("prompt")),
        "final_answer": _text(row.get("final_answer")) if "final_answer" in row else None,
        "reference_answer": _text(row.get("reference_answer")) if "reference_answer" in row else None,
        "first_error": first_error,
        "judge_first_error": judge,
        "judge_model": str(row["judge_model"]) if row.get("judge_model") else None,
        "mc_first_error": mc_first,
        "steps": steps,
        "scored": prm_scores is not None,
        "prm_disagrees": any(step["prm_disagrees"] for step in steps),
        "judge_mc_disagree": judge is not None and mc_first is not None and mc_first != NO_MC and judge != mc_first,
        "confidence": confidence,
    }


def most_confident_mistakes_first(views: list[dict]) -> list[dict]:
    """Rows where the PRM is surest of a wrong call first; rows it gets right keep their order at the end."""
    return sorted(views, key=lambda view: -view["confidence"] if view["confidence"] is not None else 1.0)


def png_data_uri(figure) -> str:
    """A matplotlib figure as an inline PNG (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _page_assets() -> tuple[str, str]:
    folder = resources.files("prm_builder.data")
    return (folder / "report.html.j2").read_text(encoding="utf-8"), (folder / "report.js").read_text(encoding="utf-8")


def render_page(
    title: str,
    views: list[dict],
    *,
    summary: str = "",
    plots: list[tuple[str, str]] = (),
    threshold: float | None = None,
    note: str = "",
) -> str:
    """The HTML page: `title`, a `note` line, the `summary` text, `plots` as (caption, data URI) pairs, then the rows
    (row_view dicts, in the order given)."""
    import jinja2
    from markupsafe import Markup

    template_text, script = _page_assets()
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = environment.from_string(template_text)
    # The policy allows exactly this script (by hash), inline styles and data: images: nothing leaves the page.
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    for caption, uri in plots:
        if not uri.startswith("data:image/png;base64,"):
            raise ValueError(f"plot {caption!r} must be an inline PNG (data:image/png;base64,...), got {uri[:40]!r}")
    return template.render(
        title=title,
        note=note,
        summary=summary,
        plots=list(plots),
        rows=views,
        sources=sorted({view["source"] for view in views}),
        threshold=threshold,
        any_prm=any(view["scored"] for view in views),
        any_unlabelled=any(step["label"] is None for view in views for step in view["steps"]),
        # Only rows with both a verdict and a Monte Carlo first error can disagree: label_method="judge" rows (NO_MC)
        # cannot, and a filter that could only hide every row is not offered.
        any_judge_mc=any(view["judge_first_error"] is not None and view["mc_first_error"] not in (None, NO_MC) for view in views),
        script=Markup(script),  # our own file, not data: inserted as is
        script_hash=script_hash,
    )


def dataset_page(
    dataset,
    title: str,
    *,
    per_source: int = 5,
    seed: int = 0,
    drops: dict | None = None,
    scorer=None,
    threshold: float = 0.5,
) -> str:
    """`prm-builder report`: the summary and plots of `stats`, then `per_source` rows of each source of each split;
    with `scorer(rows) -> step scores`, the PRM's scores beside the labels."""
    from .stats import distribution_figure, format_summary, summarize_splits

    rows = sample_rows(dataset, per_source, seed)
    scores = scorer(rows) if scorer is not None and rows else None
    views = [row_view(row, scores[i] if scores is not None else None, threshold) for i, row in enumerate(rows)]
    # A dataset in TRL's plain stepwise format (prompt, completions, labels) has rows to show but not what the
    # summary counts; say so rather than fail.
    missing = sorted({"labels", "first_error", "source"} - {c for split in dataset.values() for c in split.column_names})
    if missing:
        summary = (f"No summary: the dataset has no {', '.join(missing)} column (rows built by prm-builder have them; "
                   "load this one through the stepwise config to get them).")
        plots = []
    else:
        summary = format_summary(summarize_splits(dataset, drops))
        plots = [("steps per solution and first-error positions", png_data_uri(distribution_figure(dataset, title)))]
    note = (f"{len(views)} rows shown: up to {per_source} per source and split, picked with seed {seed}"
            + (f"; PRM scores at threshold {threshold}" if scorer is not None else "") + ".")
    return render_page(title, views, summary=summary, plots=plots, threshold=threshold if scorer else None, note=note)


def evaluation_page(
    results: dict, scored: list[tuple[str, list[dict], list[list[float]]]], *, max_rows: int = EVAL_ROWS
) -> str:
    """`prm-eval --html`: the results table and chart, then the evaluated rows (`scored`: (name, rows, scores) per
    call of the scorer), the PRM's most confident mistakes first, at most `max_rows` of them."""
    from prm_trainer.evaluating.eval_report import figure, render_table, summary

    threshold = results["threshold"]
    views = []
    for name, rows, scores in scored:
        for row, row_scores in zip(rows, scores, strict=True):
            row = dict(row)
            if results["benchmark"] == "processbench":
                # ProcessBench labels a solution up to its first wrong step only: later steps show unlabelled, and
                # the PRM disagrees exactly where its predicted first error differs from the label.
                labels = list(row["labels"])
                first = labels.index(False) if False in labels else len(labels) - 1
                row["labels"] = labels[: first + 1]
                row["source"] = f"processbench/{name}"
            row["source"] = row.get("source") or name
            row.setdefault("split", name if results["benchmark"] == "built" else "")
            views.append(row_view(row, row_scores, threshold))
    ordered = most_confident_mistakes_first(views)
    kept = ordered[:max_rows]
    mistaken = sum(1 for view in views if view["prm_disagrees"])
    note = (f"{len(views)} rows evaluated, the PRM disagrees with the labels on {mistaken}; "
            f"{'all' if len(kept) == len(views) else f'the first {len(kept)}'} shown, most confident mistakes first "
            f"(threshold {threshold}).")
    plots = [("the results above, as a chart", png_data_uri(figure(results)))]
    return render_page(summary(results).split(";")[0], kept, summary=render_table(results), plots=plots,
                       threshold=threshold, note=note)


# -- the command: prm-builder report -------------------------------------------------------------------------------


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_report_arguments(report: argparse.ArgumentParser) -> None:
    """The flags of `prm-builder report` (both spellings of each)."""
    report.add_argument("path", help="folder written by `prm-builder build`, or a dataset as prm-train's "
                                     "--dataset_name takes it (prm_builder:CONFIG, a Hub id, a folder of data files)")
    report.add_argument("--output", required=True, help="HTML file to write")
    report.add_argument("--per-source", "--per_source", dest="per_source", type=_positive_int, default=5,
                        help="rows sampled per source and split (default: 5)")
    report.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    report.add_argument("--dataset-options", "--dataset_options", dest="dataset_options", nargs="*", default=None,
                        metavar="KEY=VALUE", help="builder options for PATH = prm_builder:CONFIG (as in prm-train)")
    report.add_argument("--prm", default=None, help="PRM folder or Hub id: show its score for every step")
    report.add_argument("--threshold", type=_fraction, default=None,
                        help="with --prm: a step is predicted correct when its score is at least this (default: 0.5)")
    report.add_argument("--step-separator", "--step_separator", dest="step_separator", default=None,
                        help="with --prm: the step separator; escapes like \\n are read (default: the one saved "
                             "with the PRM, else \\n)")
    report.add_argument("--batch-size", "--batch_size", dest="batch_size", type=_positive_int, default=None,
                        help="with --prm: rows per forward pass (default: 8)")
    report.add_argument("--device", default=None, help="with --prm: auto (CUDA when available), cpu, cuda, ...")


def report_command(args: argparse.Namespace, built_title: str | None = None) -> int:
    """Run `prm-builder report` as parsed into `args`; `built_title` names what a built folder was built with."""
    from prm_trainer.common.data import load_prm_dataset, parse_dataset_options

    from ..common.drops import load_drops, recorded_drops

    scoring = {"threshold": args.threshold, "step_separator": args.step_separator, "batch_size": args.batch_size,
               "device": args.device}
    stray = [name for name, value in scoring.items() if value is not None]
    if stray and not args.prm:
        # A usage error, reported as every other one (exit 2): the flag would silently do nothing.
        raise UsageError(f"--{stray[0].replace('_', '-')} applies to the PRM's scores; add --prm MODEL",
                         prog="prm-builder report")
    threshold = 0.5 if args.threshold is None else args.threshold

    # The same resolution as prm-train's --dataset_name: a built folder, prm_builder:CONFIG, or what load_dataset reads.
    options = parse_dataset_options(args.dataset_options)
    dataset = load_prm_dataset(args.path, None, options, flag="PATH")
    path = Path(args.path)
    shown = ", ".join(f"{key}={value}" for key, value in options.items())
    title = built_title or (f"{args.path} ({shown})" if shown else str(args.path))
    drops = load_drops(path) if (path / "dataset_dict.json").is_file() else recorded_drops(dataset)
    scorer = None
    if args.prm:
        from prm_trainer.evaluating.evaluation import score_steps
        from prm_trainer.evaluating.reward import load_prm
        from prm_trainer.common.tokenization import StepFormat, saved_step_format

        model, tokenizer = load_prm(args.prm, device=args.device or "auto")
        # The separator and truncation the PRM was trained with (prm_step_format.json), unless --step-separator.
        separator = read_escapes(args.step_separator) if args.step_separator else None
        step_format = (saved_step_format(args.prm) or StepFormat()).override(separator)
        title += f"; PRM {args.prm}"

        def scorer(rows):
            return score_steps(model, tokenizer, rows, step_format, batch_size=args.batch_size or 8)

    page = dataset_page(dataset, title, per_source=args.per_source, seed=args.seed, drops=drops, scorer=scorer,
                        threshold=threshold)
    Path(args.output).write_text(page, encoding="utf-8")
    print(f"report written to {args.output} ({len(page.encode('utf-8')) / 1e6:.1f} MB; open it in a browser)")
    return 0
