"""Training on a mixture of datasets: TRL's mixture format, with builder options per entry.

A `--config` YAML with a `datasets:` list trains on a mixture, as TRL's scripts read it
(`trl.scripts.utils.DatasetMixtureConfig`), each entry taking `options:` for our builder:

    datasets:
      - {path: prm_builder, name: synthetic, fraction: 0.5, options: {problems: gsm8k}}
      - {path: prm_builder, name: prm800k, fraction: 0.25}
      - {path: peiyi9979/Math-Shepherd, fraction: 0.25}    # any load_dataset path works too
    test_split_size: 0.05

`streaming: false` is accepted, as TRL's format has it; `streaming: true` is refused (the test split is scored as a
whole and the fraction rule needs each entry's size). An entry given twice is refused: the second copy's rows would all
be dropped as duplicates of the first. Fractions are numbers >= 0 (not NaN, not infinite, not quoted strings).

In order:
  1. each entry is loaded (`load_dataset(path, name, data_dir=, data_files=, split=, **options)`)
     and keeps its `columns`, or else the columns every entry has (less `step_scores` when only
     some entries' scores are early-stopped, i.e. have `step_rollouts`: they are no estimates);
  2. rows whose (prompt, completions) an earlier entry already has are dropped and counted
     (dedup across sources; repeats inside one source stay, e.g. two ratings of one solution);
  3. fractions as TRL defines them: normalised to sum to one, the mixture size N is the largest
     with no entry oversampled, and each entry keeps its first round(weight * N) rows;
  4. the entries are concatenated and, with `test_split_size`, split into train and test
     (`train_test_split`, seeded with the training seed so a rerun gets the same split).
What each entry contributed is printed before training and written into the model card.
"""

import functools
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from trl.scripts.utils import DatasetConfig

logger = logging.getLogger(__name__)


@dataclass
class PRMDatasetConfig(DatasetConfig):
    """One entry of a mixture: TRL's `DatasetConfig` plus `options`, keyword arguments of `load_dataset`
    (for `path: prm_builder`, the builder's options, e.g. `{problems: gsm8k, max_examples: 2000}`)."""

    options: dict | None = None


@dataclass
class MixtureArguments:
    """
    The mixture fields of `prm-train` (TRL's `DatasetMixtureConfig`; `streaming` must stay false).

    Parameters:
        datasets (`list[PRMDatasetConfig]`):
            Datasets to mix (`path`, `name`, `data_dir`, `data_files`, `split`, `columns`, `fraction`, `options`);
            when set, `--dataset_name` is not used.
        streaming (`bool`, *optional*, defaults to `False`):
            TRL's option to stream the datasets; `true` is refused: the fraction rule needs each entry's size and the
            test split is scored as a whole.
        test_split_size (`float`, *optional*):
            Share (or number) of the mixture's rows held out as its test split; `None`: no test split.
    """

    datasets: list[PRMDatasetConfig] = field(
        default_factory=list,
        metadata={"help": "Datasets to mix, each {path, name, split, fraction, options, ...} (set it in --config)."},
    )
    streaming: bool = field(
        default=False, metadata={"help": "Not supported (TRL's mixture option): the mixture needs each entry's size."}
    )
    test_split_size: float | None = field(
        default=None, metadata={"help": "Share (or number) of the mixture's rows held out as its test split."}
    )


def entries(datasets: list) -> list[PRMDatasetConfig]:
    """The mixture's entries as PRMDatasetConfig, whether read from YAML (dicts) or built in Python."""
    result = []
    for index, entry in enumerate(datasets):
        if isinstance(entry, PRMDatasetConfig):
            result.append(entry)
            continue
        if not isinstance(entry, dict) or "path" not in entry:
            raise ValueError(f"datasets[{index}] must be a mapping with at least a 'path', got {entry!r}")
        unknown = sorted(set(entry) - set(PRMDatasetConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"datasets[{index}] has unknown key(s) {unknown}; valid: {sorted(PRMDatasetConfig.__dataclass_fields__)}"
            )
        result.append(PRMDatasetConfig(**entry))
    for index, entry in enumerate(result):
        _check_fraction(index, entry.fraction)
    fractions = [entry.fraction for entry in result]
    if any(f is not None for f in fractions) and any(f is None for f in fractions):
        raise ValueError(f"set fraction for every dataset of the mixture or for none, got {fractions}")
    if fractions and fractions[0] is not None and sum(fractions) <= 0:
        raise ValueError(f"fractions must be >= 0 with a positive sum, got {fractions}")
    seen = {}
    for index, entry in enumerate(result):
        key = _identity(entry)
        if key in seen:
            raise ValueError(
                f"datasets[{index}] repeats datasets[{seen[key]}] ({label(entry)}): every row of the repeat would be "
                "dropped as a duplicate of the first, leaving it no rows; list it once"
                + ("" if fractions[index] is None
                   else f", with fraction {fractions[seen[key]] + fractions[index]:g} for both")
            )
        seen[key] = index
    return result


def _check_fraction(index: int, fraction) -> None:
    if fraction is None:
        return
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        quoted = " (a quoted string in YAML: write it without quotes)" if isinstance(fraction, str) else ""
        raise ValueError(f"datasets[{index}].fraction must be a number, got {fraction!r}{quoted}")
    if not math.isfinite(fraction) or fraction < 0:
        raise ValueError(f"datasets[{index}].fraction must be a finite number >= 0, got {fraction!r}")


def _identity(entry: PRMDatasetConfig) -> str:
    """What an entry loads: two entries alike in all of it give the same rows."""
    import json

    fields = {"path": entry.path, "name": entry.name, "data_dir": entry.data_dir, "data_files": entry.data_files,
              "split": entry.split, "columns": entry.columns, "options": entry.options or {}}
    return json.dumps(fields, sort_keys=True, default=str)


# datasets' packaged builders: `path: json` says only how to read; the files say what is read.
_PACKAGED = ("json", "parquet", "csv", "arrow", "text", "pandas")


def label(entry: PRMDatasetConfig) -> str:
    """How the report and errors name an entry: its files for a packaged builder (`a.jsonl`, not `json`), else its
    path and config, with its files when it has any (`prm_builder:stepwise (b.jsonl)`)."""
    named = f"{entry.path}:{entry.name}" if entry.name else entry.path
    options = entry.options or {}
    files = next((value for value in (entry.data_files, options.get("data_files"), entry.data_dir,
                                      options.get("data_dir")) if value), None)
    if files is None:
        return named
    shown = _file_names(files)
    return shown if entry.path in _PACKAGED else f"{named} ({shown})"


def _file_names(files) -> str:
    """Files as short names (the last part of each path: a card must not show local folders)."""
    if isinstance(files, dict):
        return ", ".join(f"{split}={_file_names(paths)}" for split, paths in files.items())
    if isinstance(files, (list, tuple)):
        return ", ".join(Path(str(path)).name for path in files)
    return Path(str(files)).name


def load_entry(entry: PRMDatasetConfig):
    """One entry's split: built through `load_dataset`, or read from a folder saved by `prm-builder build`."""
    import datasets

    from ..common.data import check_dataset_folder, is_saved_dataset

    if entry.path == "prm_builder":
        import prm_builder  # noqa: F401  (registers the builder with datasets)
    else:  # the same checks as --dataset_name: a mistyped folder fails at once, naming it
        check_dataset_folder(entry.path, "datasets: path")
    given = {"name": entry.name, "data_dir": entry.data_dir, "data_files": entry.data_files, "split": entry.split}
    options = dict(entry.options or {})
    twice = sorted(key for key, value in given.items() if value is not None and key in options)
    if twice:
        raise ValueError(f"{label(entry)}: {', '.join(twice)} set both in the entry and in its options; set each once")
    if entry.path != "prm_builder" and is_saved_dataset(entry.path):
        extra = sorted(key for key, value in {**given, **options}.items() if value is not None and key != "split")
        if extra:
            raise ValueError(f"{entry.path} is a saved dataset: {', '.join(extra)} apply to builders, not to it")
        saved = datasets.load_from_disk(entry.path)
        if isinstance(saved, datasets.Dataset):
            return saved
        if entry.split not in saved:
            raise ValueError(f"{entry.path}: split {entry.split!r} is not one of {list(saved)}")
        return saved[entry.split]
    return datasets.load_dataset(entry.path, **{**given, **options})


def realised_counts(sizes: list[int], fractions: list[float | None]) -> list[int]:
    """Rows kept per entry under TRL's rule (all rows when no fraction is set)."""
    if fractions[0] is None:
        return list(sizes)
    weights = [fraction / sum(fractions) for fraction in fractions]
    # The largest mixture in which no entry has to give more rows than it has.
    size = min(available / weight for available, weight in zip(sizes, weights) if weight > 0)
    return [round(weight * size) for weight in weights]


def load_mixture(arguments: MixtureArguments, seed: int = 0):
    """(DatasetDict with "train" and, with test_split_size, "test"; the report, one dict per entry)."""
    import datasets

    mixture = entries(arguments.datasets)
    if not mixture:
        raise ValueError("datasets: the mixture has no entries")
    if getattr(arguments, "streaming", False):
        raise ValueError(
            "streaming: true is not supported for a mixture: TRL's fraction rule needs the size of every entry, and "
            "the test split is scored as a whole; set streaming: false (or leave it out)"
        )
    if getattr(arguments, "dataset_name", None):  # prm-train's arguments: TRL's scripts say the same
        logger.warning(f"both `datasets` and --dataset_name {arguments.dataset_name!r} are set: the mixture is used")
    loaded = [load_entry(entry) for entry in mixture]
    shared = [name for name in loaded[0].column_names if all(name in d.column_names for d in loaded[1:])]
    for name in ("prompt", "completions"):
        if name not in shared:
            raise ValueError(
                f"every dataset of the mixture needs a {name!r} column (stepwise supervision); columns: "
                + "; ".join(f"{label(e)}: {d.column_names}" for e, d in zip(mixture, loaded))
            )
    early = [label(e) for e, d in zip(mixture, loaded) if "step_rollouts" in d.column_names]
    if early and "step_scores" in shared and "step_rollouts" not in shared:
        # Early-stopped Monte Carlo scores (model_sampled's mc_early_stop) are successes over the rollouts made,
        # not estimates: under one column with estimates, and without the step_rollouts that marks them, soft
        # training could not refuse them. The hard labels are the same kind everywhere and stay.
        shared.remove("step_scores")
        logger.warning(
            f"step_scores left out of the mixture: {', '.join(early)} built with mc_early_stop (successes over the "
            f"rollouts made, see step_rollouts), the other entries not; train on labels, or build every entry with "
            f"mc_early_stop=False for soft labels"
        )
    loaded = [d.select_columns(e.columns if e.columns is not None else shared) for e, d in zip(mixture, loaded)]
    seen: set[bytes] = set()
    deduplicated, duplicates = [], []
    for dataset in loaded:
        keep = _new_rows(dataset, seen)
        duplicates.append(len(dataset) - len(keep))
        deduplicated.append(dataset if len(keep) == len(dataset) else dataset.select(keep))
    # TRL's rule sizes the mixture by its scarcest entry: one with a fraction and no rows would empty all of it
    # (without fractions such an entry only adds nothing, as the report shows).
    for index, (entry, raw, dataset) in enumerate(zip(mixture, loaded, deduplicated)):
        if len(dataset) == 0 and entry.fraction:
            why = f"all {len(raw)} of its rows are in earlier entries" if len(raw) else "it has no rows"
            raise ValueError(
                f"datasets[{index}] ({label(entry)}) adds no rows to the mixture: {why}; with fraction "
                f"{entry.fraction:g} the whole mixture would be empty; remove it or set its fraction to 0"
            )
    counts = realised_counts([len(d) for d in deduplicated], [e.fraction for e in mixture])
    parts = [dataset.select(range(count)) for dataset, count in zip(deduplicated, counts)]
    total = sum(counts)
    report = [
        {"dataset": label(entry), "split": entry.split, "loaded": len(raw), "duplicates": dup,
         "fraction": entry.fraction, "rows": count, "share": count / total if total else 0.0}
        for entry, raw, dup, count in zip(mixture, loaded, duplicates, counts)
    ]  # fmt: skip
    combined = datasets.concatenate_datasets(parts)
    if arguments.test_split_size is not None:
        return combined.train_test_split(test_size=arguments.test_split_size, seed=seed), report
    return datasets.DatasetDict({"train": combined}), report


def _new_rows(dataset, seen: set) -> list[int]:
    """Indices of rows whose (prompt, completions) no earlier dataset had (`seen`); then adds this one's."""
    keep, keys = [], set()
    for start in range(0, len(dataset), 10_000):
        batch = dataset.select_columns(["prompt", "completions"])[start : start + 10_000]
        for offset, (prompt, completions) in enumerate(zip(batch["prompt"], batch["completions"])):
            key = hashlib.sha1("\x1e".join([str(prompt), *map(str, completions)]).encode()).digest()
            keys.add(key)
            if key not in seen:
                keep.append(start + offset)
    seen |= keys
    return keep


def describe_mixture(report: list[dict]) -> str:
    """The report as a Markdown table (printed before training and put in the model card)."""
    lines = [
        "| dataset | split | loaded | duplicates dropped | fraction | rows | share |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report:
        fraction = "-" if r["fraction"] is None else f"{r['fraction']:g}"
        lines.append(
            f"| {r['dataset']} | {r['split']} | {r['loaded']} | {r['duplicates']} | {fraction} | {r['rows']} | {r['share']:.4f} |"
        )
    lines.append(f"| total | | {sum(r['loaded'] for r in report)} | {sum(r['duplicates'] for r in report)} | | "
                 f"{sum(r['rows'] for r in report)} | 1.0000 |")  # fmt: skip
    return "\n".join(lines)


def with_mixture_in_card(create_model_card, report: list[dict]):
    """Wrap a trainer's `create_model_card` so every card it writes (checkpoints, final, push) lists the mixture."""

    @functools.wraps(create_model_card)
    def create(*args, **kwargs):
        create_model_card(*args, **kwargs)
        trainer = create_model_card.__self__
        if not trainer.is_world_process_zero():
            return
        import os

        path = os.path.join(trainer.args.output_dir, "README.md")
        with open(path, "a", encoding="utf-8") as card:
            card.write("\n## Training data mixture\n\nRows per dataset, as realised (TRL's fraction rule, "
                       "duplicates across datasets dropped first):\n\n" + describe_mixture(report) + "\n")  # fmt: skip

    return create
