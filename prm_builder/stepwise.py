"""The `stepwise` config: any dataset in TRL's stepwise supervision format, with provenance added.

TRL's format is one row per solution: `prompt` (text), `completions` (the steps), `labels` (one
bool per step). Near variants are read too: other column names (`question`/`problem` for the
prompt, `steps` for the completions, `step_labels` for the labels, found automatically or named
with `column_map`) and labels written as integers (1 / 0, or 1 / -1: positive is True) or strings
("+"/"-", "true"/"false", "correct"/"incorrect", "1"/"0"/"-1").

The data comes from the Hub (`dataset="trl-lib/math_shepherd"`, loaded with
`datasets.load_dataset`, so it is downloaded once into the datasets cache) or from local files
(`data_files`/`data_dir`: .jsonl, .json, .parquet or .csv, read by datasets' own builders).

Rows keep the dataset's prompt, completions and labels (as bools) and add: `first_error`,
`final_answer` (the answer the last step states: a `\\boxed{}`, "#### N", "The answer is ...";
"" when none), `reference_answer` (the dataset's `reference_answer` column, or the one
`column_map` names; "" when none), `source` "stepwise/<dataset name>" (the Hub id, or the
name of the first local file or folder) and `id` (the dataset's `id` column, else
"<split>/<row index>").

Rows skipped, each counted: "bad_prompt" (not a non-empty string), "bad_completions" (not a
non-empty list of strings), "empty_step" (a step that is empty or only whitespace),
"missing_label" (a label that is None or NaN), "bad_labels" (a label that is none of the above),
"label_count_mismatch" (not one label per step), "not_utf8" (bytes that are not UTF-8 text, which
the json and parquet readers let through; the split and row are in the debug log).
"""

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import datasets
from datasets.utils import logging

from .contract import ConfigSpec
from .drops import Dropped
from .features import CORE_FEATURES, first_error
from .grading import extract_final_answer
from .options import PRMBuilderConfig, check_int

logger = logging.get_logger(__name__)

# Our column -> the names it goes by in the datasets we have seen, in order of preference.
KNOWN_COLUMNS = {
    "prompt": ("prompt", "question", "problem"),
    "completions": ("completions", "steps"),
    "labels": ("labels", "step_labels"),
    "reference_answer": ("reference_answer",),
    "id": ("id",),
}
REQUIRED = ("prompt", "completions", "labels")
TRUE_STRINGS = {"+", "1", "true", "correct", "positive", "good"}
FALSE_STRINGS = {"-", "0", "-1", "false", "incorrect", "negative", "bad"}
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ROWS_PER_SHARD = 10_000

DESCRIPTION = "Any dataset in TRL's stepwise supervision format (prompt, completions, labels), with provenance columns."
HOMEPAGE = "https://huggingface.co/docs/trl/dataset_formats#stepwise-supervision"
LICENSE = "the source dataset's"
CITATION = ""
FEATURES = CORE_FEATURES


@dataclasses.dataclass
class StepwiseConfig(PRMBuilderConfig):
    """Options of the `stepwise` config.

    Parameters:
        dataset: a Hub dataset id (e.g. "trl-lib/math_shepherd"); or pass data_files/data_dir.
        dataset_config: the Hub dataset's configuration name, if it has several.
        data_files: local files per split ({"train": [...], "test": [...]}) or one file/list (train).
        data_dir: a local folder of data files, read by `datasets.load_dataset`.
        column_map: {our column: the dataset's column} for prompt, completions, labels,
            reference_answer, id; columns not named are looked up under their known names.
        max_examples: cap on the rows of each split (None: all).
    """

    ACCEPTS_DATA_FILES = True

    dataset: str | None = dataclasses.field(default=None, metadata={"help": "Hub dataset id, e.g. trl-lib/math_shepherd"})
    dataset_config: str | None = dataclasses.field(default=None, metadata={"help": "the Hub dataset's configuration name"})
    column_map: dict | None = dataclasses.field(
        default=None, metadata={"help": "{our column: dataset column} for prompt, completions, labels, reference_answer, id"}
    )
    max_examples: int | None = dataclasses.field(default=None, metadata={"help": "cap on the rows of each split"})

    def validate(self) -> None:
        super().validate()
        if self.dataset is not None and (not isinstance(self.dataset, str) or not self.dataset):
            raise ValueError(f"dataset must be a Hub dataset id such as 'trl-lib/math_shepherd', got {self.dataset!r}")
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ValueError(f"data_dir must be a folder of data files, got {self.data_dir!r}: no such folder")
        if isinstance(self.column_map, str):  # from the command line: "prompt=question,labels=step_labels"
            pairs = [item.partition("=") for item in self.column_map.split(",") if item.strip()]
            if not pairs or not all(sep and ours.strip() and theirs.strip() for ours, sep, theirs in pairs):
                raise ValueError(f"column_map as text must be 'ours=theirs,...' (e.g. 'prompt=question'), got {self.column_map!r}")
            self.column_map = {ours.strip(): theirs.strip() for ours, _, theirs in pairs}
        if self.column_map is not None:
            if not isinstance(self.column_map, dict) or not all(isinstance(v, str) for v in self.column_map.values()):
                raise ValueError(f"column_map must map our column names to the dataset's, got {self.column_map!r}")
            unknown = sorted(set(self.column_map) - set(KNOWN_COLUMNS))
            if unknown:
                raise ValueError(f"column_map keys must be among {list(KNOWN_COLUMNS)}, got {unknown}")
            self.column_map = dict(sorted(self.column_map.items()))
        check_int("max_examples", self.max_examples, minimum=1, allow_none=True)

    def create_config_id(self, config_kwargs: dict, custom_features=None) -> str:
        # Checked here, not in validate: the config registered with the builder has no source yet.
        given = [name for name in ("dataset", "data_files", "data_dir") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "stepwise needs exactly one of dataset (a Hub id), data_files or data_dir; "
                f"got {', '.join(given) or 'none'}"
            )
        return super().create_config_id(config_kwargs, custom_features)

    def dataset_name(self) -> str:
        """What `source` says after "stepwise/": the Hub id, or the first local file's or folder's name."""
        if self.dataset is not None:  # a Hub id, or a local folder load_dataset reads (named by itself)
            return Path(self.dataset).name if os.path.isdir(self.dataset) else self.dataset
        if self.data_dir is not None:
            return Path(self.data_dir).name
        first = next(iter(file for files in self.data_files.values() for file in files))
        return Path(str(first)).stem



# -- splits ----------------------------------------------------------------------------------------


def split_generators(config: StepwiseConfig, dl_manager) -> list[datasets.SplitGenerator]:
    try:
        loaded = _load(config)
    except datasets.exceptions.DatasetGenerationError as error:
        clear = _not_utf8(config, error)
        if clear is None:
            raise
        raise clear from None
    generators = []
    for split, dataset in loaded.items():
        columns = _columns(config, dataset.column_names, split)
        size = len(dataset) if config.max_examples is None else min(len(dataset), config.max_examples)
        ranges = [(start, min(start + ROWS_PER_SHARD, size)) for start in range(0, size, ROWS_PER_SHARD)]
        generators.append(
            datasets.SplitGenerator(
                name=split, gen_kwargs={"split": split, "dataset": dataset, "columns": columns, "ranges": ranges}
            )
        )
    return generators


def _load(config: StepwiseConfig) -> datasets.DatasetDict:
    if config.dataset is not None:
        return datasets.load_dataset(config.dataset, name=config.dataset_config)
    files = config.data_files
    if files is None:
        return datasets.load_dataset(config.data_dir)
    every = [str(file) for paths in files.values() for file in paths]
    suffixes = {Path(file).suffix.lower() for file in every}
    builders = {LOCAL_BUILDERS.get(suffix) for suffix in suffixes}
    if len(builders) != 1 or None in builders:
        raise ValueError(
            f"stepwise reads local files of one format ({', '.join(LOCAL_BUILDERS)}), got {sorted(suffixes)} in {every}"
        )
    return datasets.load_dataset(builders.pop(), data_files={split: list(map(str, paths)) for split, paths in files.items()})


def _not_utf8(config: StepwiseConfig, error: Exception) -> ValueError | None:
    """The error to raise when datasets' csv reader met bytes that are not UTF-8 (it names no file;
    the json and parquet readers pass such bytes through, and generate_rows counts them)."""
    cause = error.__cause__
    if not isinstance(cause, UnicodeDecodeError):
        return None
    if config.data_files is not None:
        where = ", ".join(str(file) for files in config.data_files.values() for file in files)
    else:
        where = config.data_dir if config.data_dir is not None else config.dataset
    return ValueError(
        f"stepwise: expected UTF-8 text in {where}, got {cause.reason} (byte 0x{cause.object[cause.start]:02x}); "
        "save the file as UTF-8"
    )


def _columns(config: StepwiseConfig, names: list[str], split: str) -> dict[str, str]:
    """Our column -> the dataset's, for the columns it has; an error when a required one is missing."""
    given = config.column_map or {}
    columns = {}
    for ours, candidates in KNOWN_COLUMNS.items():
        if ours in given:
            if given[ours] not in names:
                raise ValueError(f"column_map names {given[ours]!r} for {ours}, but split {split!r} has columns {names}")
            columns[ours] = given[ours]
            continue
        found = next((name for name in candidates if name in names), None)
        if found is not None:
            columns[ours] = found
        elif ours in REQUIRED:
            raise ValueError(
                f"split {split!r} has no {ours} column: expected one of {list(candidates)} (or name it with "
                f"column_map={{'{ours}': 'COLUMN'}}), found columns {names}"
            )
    return columns


# -- rows ------------------------------------------------------------------------------------------


def generate_rows(
    config: StepwiseConfig, drops: Counter, split: str, dataset: datasets.Dataset, columns: dict, ranges: list
) -> Iterator[dict]:
    source = f"stepwise/{config.dataset_name()}"
    selected = dataset.select_columns(sorted(set(columns.values())))
    for start, end in ranges:
        try:
            batch = selected[start:end]
        except UnicodeDecodeError:
            batch = None  # a row of bytes that are not UTF-8 in this range: read it row by row
        for offset in range(end - start):
            if batch is not None:
                values = {ours: batch[theirs][offset] for ours, theirs in columns.items()}
            else:
                try:
                    one = selected[start + offset]
                except UnicodeDecodeError as error:
                    drops["not_utf8"] += 1
                    logger.debug(f"{_where(config, split)}, row {start + offset + 1}: skipped (not_utf8): {error}")
                    continue
                values = {ours: one[theirs] for ours, theirs in columns.items()}
            try:
                row = stepwise_row(values)
            except Dropped as error:
                drops[error.reason] += 1
                continue
            row["id"] = str(values["id"]) if values.get("id") is not None else f"{split}/{start + offset}"
            row["source"] = source
            yield row


def _where(config: StepwiseConfig, split: str) -> str:
    """The files of `split` as a debug line names them (a row of a .jsonl file is its line, blank lines aside)."""
    if config.data_files is not None and split in config.data_files:
        return ", ".join(map(str, config.data_files[split]))
    return f"stepwise/{config.dataset_name()} split {split!r}"


def stepwise_row(values: dict) -> dict:
    """Our row (without id and source) from one dataset row under our column names."""
    prompt, completions = values["prompt"], values["completions"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise Dropped("bad_prompt")
    if not isinstance(completions, list) or not completions or not all(isinstance(c, str) for c in completions):
        raise Dropped("bad_completions")
    if not all(step.strip() for step in completions):  # a step with nothing to score would still train
        raise Dropped("empty_step")
    raw_labels = values["labels"]
    if not isinstance(raw_labels, list):
        raise Dropped("bad_labels")
    if any(label is None or (isinstance(label, float) and math.isnan(label)) for label in raw_labels):
        raise Dropped("missing_label")  # a NaN is no verdict: `nan > 0` would make it False
    labels = [as_label(label) for label in raw_labels]
    if len(labels) != len(completions):
        raise Dropped("label_count_mismatch")
    reference = values.get("reference_answer")
    return {
        "prompt": prompt,
        "completions": completions,
        "labels": labels,
        "first_error": first_error(labels),
        "final_answer": extract_final_answer(completions[-1]) or "",
        "reference_answer": "" if reference is None else str(reference),
    }


def as_label(value) -> bool:
    """A step label as a bool: True, 1 or a positive number, "+"/"true"/"correct"/"1"; else False."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value > 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE_STRINGS:
            return True
        if text in FALSE_STRINGS:
            return False
    raise Dropped("bad_labels")


SPEC = ConfigSpec(
    config_class=StepwiseConfig,
    features=FEATURES,
    description=DESCRIPTION,
    homepage=HOMEPAGE,
    license=LICENSE,
    citation=CITATION,
    split_generators=split_generators,
    generate_rows=generate_rows,
)
