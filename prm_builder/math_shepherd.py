"""The `math_shepherd` config: Math-Shepherd's Monte Carlo step labels in our row format.

Each line of Math-Shepherd (peiyi9979/Math-Shepherd, one 793 MB `math-shepherd.jsonl`, 445K
lines) holds:
  input  the problem, then the solution's steps "Step 1: ...", "Step 2: ...", each ending in
         the tag "ки" (steps separated by newlines);
  label  the same text with "+" (a rollout from this step reached the reference answer) or "-"
         in place of each tag;
  task   "GSM8K" or "MATH" (where the problem comes from; both from their train sets).

Rows: `prompt` is the text before the last "Step 1:" of the first step; `completions` the steps
(stripped; "Step k: " removed unless strip_step_prefix=False; GSM8K's `<<a*b=c>>` calculator
annotations removed unless keep_calculator_annotations=True); `labels` the marks ("+" -> True);
`final_answer` the text after "The answer is:" in the last step ("" when absent);
`reference_answer` "" (Math-Shepherd ships none); `source` "math_shepherd/gsm8k" or
"math_shepherd/math"; `id` "<split>/<file index>/<byte offset of the line in the file>",
stable across rebuilds and num_proc (a line number would need a pass over the whole file first).

Lines skipped, each counted under one reason: "not_json" (a line that is not a JSON object with
string fields), "missing_field" (no input, label or task), "other_task" (a task not in `tasks`),
"no_tag" (no "ки" in input), "tag_label_count_mismatch" (label has another number of "+"/"-"
marks at step ends than input has tags), "label_text_differs" (as many marks, but label is not
input with each tag replaced by "+" or "-"), "text_after_last_tag" (an unlabelled step at the end),
"no_first_step" (no "Step 1:" to split problem from solution), "empty_step", "not_utf8" (bytes
that are not UTF-8 text; the file and line are in the debug log).

Files are read in byte ranges with pyarrow's JSON reader, a few ranges at once in threads, and
converted column-wise (math_shepherd_convert.py), which keeps the build's wall time near that of
`load_dataset("json")` on the same file: benchmarks/math_shepherd.py measures both, and
docs/math_shepherd.md gives the figures and where the time goes.
"""

import dataclasses
import itertools
import os
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from datasets.utils import logging

from .citations import citation
from .contract import ConfigSpec
from .features import CORE_FEATURES
from .jsonl import byte_range_shards, split_files
from .math_shepherd_convert import FIELDS, convert
from .options import PRMBuilderConfig, as_list, check_int

logger = logging.get_logger(__name__)

TASKS = ("gsm8k", "math")
HUB_FILES = {"train": "https://huggingface.co/datasets/peiyi9979/Math-Shepherd/resolve/main/math-shepherd.jsonl"}
# Byte ranges read at once: one pyarrow parse each, and the unit num_proc spreads.
SHARD_BYTES = 8 << 20
THREADS = min(4, os.cpu_count() or 1)
WINDOW = 2 * THREADS
SCHEMA = pa.schema([(name, pa.string()) for name in FIELDS])

DESCRIPTION = (
    "Math-Shepherd: GSM8K and MATH solutions whose steps are labelled by Monte Carlo rollouts "
    "(+ when a rollout from the step reaches the reference answer), converted to step lists."
)
HOMEPAGE = "https://huggingface.co/datasets/peiyi9979/Math-Shepherd"
LICENSE = "Math-Shepherd's terms (see its dataset card)"
CITATION = citation("wang2024math")
FEATURES = CORE_FEATURES


@dataclasses.dataclass
class MathShepherdConfig(PRMBuilderConfig):
    """Options of the `math_shepherd` config.

    Parameters:
        data_files: Math-Shepherd-format .jsonl files per split ({"train": [...]}); default
            (no data_files/data_dir): the Hub's math-shepherd.jsonl, as the train split.
        data_dir: a folder with train.jsonl/validation.jsonl/test.jsonl, or other .jsonl files
            (read as the train split).
        tasks: which tasks to keep (list or comma-separated string of "gsm8k", "math").
        max_examples: cap on the rows of each split (None: all).
        strip_step_prefix: remove "Step k: " from the start of each step.
        keep_calculator_annotations: keep GSM8K's `<<48/2=24>>` in the step text.
    """

    ACCEPTS_DATA_FILES = True

    tasks: list[str] = dataclasses.field(default_factory=lambda: list(TASKS), metadata={"help": "tasks to keep"})
    max_examples: int | None = dataclasses.field(default=None, metadata={"help": "cap on the rows of each split"})
    strip_step_prefix: bool = dataclasses.field(default=True, metadata={"help": "remove 'Step k: ' from each step"})
    keep_calculator_annotations: bool = dataclasses.field(
        default=False, metadata={"help": "keep GSM8K's <<a*b=c>> annotations in the step text"}
    )

    def validate(self) -> None:
        super().validate()
        if self.data_dir is not None and self.data_files is not None:
            raise ValueError(f"pass data_dir or data_files, not both; got data_dir={self.data_dir!r} and data_files")
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ValueError(f"data_dir must be a folder of Math-Shepherd .jsonl files, got {self.data_dir!r}: no such folder")
        tasks = [str(task).lower() for task in as_list("tasks", self.tasks)]
        if not tasks or not set(tasks) <= set(TASKS):
            raise ValueError(f"tasks must be a non-empty list of {list(TASKS)}, got {self.tasks!r}")
        self.tasks = [task for task in TASKS if task in tasks]
        check_int("max_examples", self.max_examples, minimum=1, allow_none=True)
        for option in ("strip_step_prefix", "keep_calculator_annotations"):
            if not isinstance(getattr(self, option), bool):
                raise ValueError(f"{option} must be True or False, got {getattr(self, option)!r}")



# -- splits ----------------------------------------------------------------------------------------


def split_generators(config: MathShepherdConfig, dl_manager) -> list[datasets.SplitGenerator]:
    generators = []
    for split, paths in _files(config, dl_manager).items():
        groups = []
        for file_index, path in enumerate(paths):
            if not os.path.isfile(path):  # a remote file under streaming=True
                raise ValueError(f"math_shepherd reads local files; {path} is not one (drop streaming=True)")
            groups += [[(split, file_index, *shard)] for shard in byte_range_shards([path], SHARD_BYTES)]
        if config.max_examples is not None:
            groups = [[shard for group in groups for shard in group]]  # a row cap sees the rows in order
        generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "groups": groups}))
    return generators


def _files(config: MathShepherdConfig, dl_manager) -> dict[str, list[str]]:
    if config.data_files is not None:
        return dl_manager.download({split: list(map(str, paths)) for split, paths in config.data_files.items()})
    if config.data_dir is None:
        try:
            downloaded = dl_manager.download(HUB_FILES)
        except Exception as error:  # offline mode, no network, the Hub refusing: one message for all
            raise ConnectionError(
                f"math_shepherd downloads {HUB_FILES['train']} (793 MB) into the datasets cache and could not: "
                f"{str(error).rstrip('.')}. Build once with network access, or pass data_files= with a local copy"
            ) from error
        return {split: [path] for split, path in downloaded.items()}
    folder = Path(config.data_dir)
    named = {split: [path] for split, path in split_files(folder).items()}
    if named:
        return named
    found = sorted(str(path) for path in folder.glob("*.jsonl"))
    if not found:
        raise FileNotFoundError(f"data_dir {config.data_dir!r}: expected Math-Shepherd .jsonl files in it, found none")
    return {"train": found}


# -- rows ------------------------------------------------------------------------------------------


def generate_tables(config: MathShepherdConfig, drops: Counter, split: str, groups: list) -> Iterator[pa.Table]:
    """The rows as Arrow tables, one per byte range, in order.

    Ranges are converted in a few threads at once (Arrow's kernels and numpy release the GIL),
    at most WINDOW ahead of what was yielded. Under max_examples, the drops of the last range
    read count all its lines.
    """
    remaining = config.max_examples
    shards = iter([shard for group in groups for shard in group])
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        pending = deque(pool.submit(_shard_table, config, shard) for shard in itertools.islice(shards, WINDOW))
        while pending:
            table, shard_drops = pending.popleft().result()
            following = next(shards, None)
            if following is not None:
                pending.append(pool.submit(_shard_table, config, following))
            drops.update(shard_drops)
            if remaining is not None:
                table = table.slice(0, remaining)
                remaining -= table.num_rows
            if table.num_rows:
                yield table
            if remaining == 0:
                for future in pending:
                    future.cancel()
                return


def _shard_table(config: MathShepherdConfig, shard: tuple) -> tuple[pa.Table, Counter]:
    split, file_index, path, start, end = shard
    drops = Counter()
    records, line_offsets = _records(path, start, end, drops)
    tasks = pc.utf8_lower(records.column("task"))
    keep = pc.is_in(tasks, pa.array(config.tasks))
    drops["other_task"] += records.num_rows - pc.sum(keep).as_py() if records.num_rows else 0
    records, line_offsets = _kept_lines(records, line_offsets, keep)
    ids = pc.binary_join_element_wise(f"{split}/{file_index}/", pc.cast(line_offsets, pa.string()), "")
    return convert(config, records, ids, drops), +drops


def _records(path: str, start: int, end: int, drops: Counter) -> tuple[pa.Table, pa.Array]:
    """The {input, label, task} of each line in [start, end) and the byte offset of the line in its file."""
    with pa.memory_map(os.fspath(path)) as file:  # the range as it sits in the page cache, not copied out
        file.seek(start)
        block = file.read_buffer(end - start)
    newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
    line_starts = np.concatenate([[0], newlines + 1])
    line_starts = line_starts[line_starts < block.size]
    table = _parse_block(block)
    if table is not None and table.num_rows == len(line_starts) and _valid_utf8(table):
        offsets = pa.array(start + line_starts, pa.int64())
    else:
        # A blank, broken or non-UTF-8 line somewhere in the range: parse it line by line to count
        # and skip it. (Arrow's JSON reader takes any bytes in a string; Arrow files must not hold them.)
        parsed, kept = [], []
        for line_start, line in zip(line_starts, block.to_pybytes().split(b"\n")):
            one = _parse_block(line) if line.strip() else None
            if one is not None and one.num_rows == 1 and not _valid_utf8(one):
                drops["not_utf8"] += 1
                if logger.isEnabledFor(logging.DEBUG):  # the line number costs a pass up to the line
                    logger.debug(f"{path}, line {_line_number(path, start + line_start)}: skipped (not_utf8): not UTF-8 text")
                continue
            if one is not None and one.num_rows == 1:
                parsed.append(one)
                kept.append(start + line_start)
            elif line.strip():
                drops["not_json"] += 1
        table = pa.concat_tables(parsed) if parsed else SCHEMA.empty_table()
        offsets = pa.array(kept, pa.int64())
    complete = pc.and_(pc.and_(pc.is_valid(table.column("input")), pc.is_valid(table.column("label"))), pc.is_valid(table.column("task")))
    drops["missing_field"] += table.num_rows - pc.sum(complete).as_py() if table.num_rows else 0
    return _kept_lines(table, offsets, complete)


def _valid_utf8(table: pa.Table) -> bool:
    try:
        table.validate(full=True)  # checks the UTF-8 of every string, at memory speed
    except pa.ArrowInvalid:
        return False
    return True


def _line_number(path: str, offset: int) -> int:
    """The 1-based number of the line starting at byte `offset` (counted only for a line reported)."""
    with pa.memory_map(os.fspath(path)) as file:
        head = file.read_buffer(offset)
    return int(np.count_nonzero(np.frombuffer(head, dtype=np.uint8) == ord("\n"))) + 1


def _kept_lines(table: pa.Table, offsets: pa.Array, keep: pa.Array) -> tuple[pa.Table, pa.Array]:
    """The lines where keep is true; no copy when it is true everywhere (the usual case)."""
    if pc.all(keep).as_py() is not False:
        return table, offsets
    return table.filter(keep), offsets.filter(keep)


def _parse_block(block: pa.Buffer | bytes) -> pa.Table | None:
    # One block, in this thread: byte ranges are already parsed side by side (generate_tables), and
    # Arrow's own threads on top of those cost a fifth to a half more CPU time, and no wall time.
    try:
        return pa_json.read_json(
            pa.BufferReader(block),
            read_options=pa_json.ReadOptions(block_size=len(block) + 1, use_threads=False),
            parse_options=pa_json.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


SPEC = ConfigSpec(
    config_class=MathShepherdConfig,
    features=FEATURES,
    description=DESCRIPTION,
    homepage=HOMEPAGE,
    license=LICENSE,
    citation=CITATION,
    split_generators=split_generators,
    generate_tables=generate_tables,
)
