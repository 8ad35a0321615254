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
"no_first_step" (no "Step 1:" to split problem from solution), "empty_step".

Files are read in byte ranges with pyarrow's JSON reader (multi-threaded C++), then each line's
strings are split in Python: the build takes about the time `load_dataset("json")` takes on the
same file (benchmarks/math_shepherd.py).
"""

import dataclasses
import io
import os
import re
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from . import gsm8k
from .features import CORE_FEATURES
from .options import PRMBuilderConfig, as_list, check_int
from .prm800k import byte_range_shards

TASKS = ("gsm8k", "math")
TAG = "ки"
MARKS = {"+": True, "-": False}
FIRST_STEP = "Step 1:"
ANSWER_PHRASE = "The answer is:"
STEP_PREFIX = re.compile(r"Step \d+:\s*")
# A label mark at the end of a step: what a tag becomes in `label` (only looked for on bad lines).
LABEL_MARK = re.compile(r"[+-](?=\n|$)")
HUB_FILES = {"train": "https://huggingface.co/datasets/peiyi9979/Math-Shepherd/resolve/main/math-shepherd.jsonl"}
LOCAL_SPLITS = ("train", "validation", "test")
# Byte ranges read at once: one pyarrow parse each, and the unit num_proc spreads.
SHARD_BYTES = 8 << 20
THREADS = min(4, os.cpu_count() or 1)
WINDOW = 2 * THREADS
FIELDS = ("input", "label", "task")
SCHEMA = pa.schema([(name, pa.string()) for name in FIELDS])

DESCRIPTION = (
    "Math-Shepherd: GSM8K and MATH solutions whose steps are labelled by Monte Carlo rollouts "
    "(+ when a rollout from the step reaches the reference answer), converted to step lists."
)
HOMEPAGE = "https://huggingface.co/datasets/peiyi9979/Math-Shepherd"
LICENSE = "Math-Shepherd's terms (see its dataset card)"
CITATION = """@article{wang2023mathshepherd,
  title={Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations},
  author={Wang, Peiyi and Li, Lei and Shao, Zhihong and Xu, R. X. and Dai, Damai and Li, Yifei and Chen, Deli and Wu, Y. and Sui, Zhifang},
  journal={arXiv preprint arXiv:2312.08935},
  year={2023}
}"""
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


CONFIG_CLASS = MathShepherdConfig


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
    named = {split: [str(folder / f"{split}.jsonl")] for split in LOCAL_SPLITS if (folder / f"{split}.jsonl").is_file()}
    if named:
        return named
    found = sorted(str(path) for path in folder.glob("*.jsonl"))
    if not found:
        raise FileNotFoundError(f"data_dir {config.data_dir!r}: expected Math-Shepherd .jsonl files in it, found none")
    return {"train": found}


# -- rows ------------------------------------------------------------------------------------------


class BadLine(ValueError):
    """A line that does not parse; `reason` names it in the drop counts."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def generate_tables(config: MathShepherdConfig, drops: Counter, split: str, groups: list) -> Iterator[pa.Table]:
    """The rows as Arrow tables, one per byte range, in order.

    Ranges are converted in a few threads at once (Arrow's kernels release the GIL, as its JSON
    reader does for `load_dataset("json")`), at most WINDOW ahead of what was yielded.
    """
    emitted = 0
    shards = [shard for group in groups for shard in group]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        pending = deque()
        for shard in shards:
            pending.append(pool.submit(_shard_table, config, shard))
            if len(pending) < WINDOW:
                continue
            for table in _ready(pending.popleft(), drops, config.max_examples, emitted):
                emitted += table.num_rows
                yield table
        while pending:
            for table in _ready(pending.popleft(), drops, config.max_examples, emitted):
                emitted += table.num_rows
                yield table
            if config.max_examples is not None and emitted >= config.max_examples:
                for future in pending:
                    future.cancel()
                return


def _ready(future, drops: Counter, max_examples: int | None, emitted: int) -> list[pa.Table]:
    table, shard_drops = future.result()
    if max_examples is not None and emitted >= max_examples:
        return []
    drops.update(shard_drops)
    if max_examples is not None:
        table = table.slice(0, max_examples - emitted)
    return [table] if table.num_rows else []


def _shard_table(config: MathShepherdConfig, shard: tuple) -> tuple[pa.Table, Counter]:
    split, file_index, path, start, end = shard
    drops = Counter()
    records, line_offsets = _records(path, start, end, drops)
    tasks = pc.utf8_lower(records.column("task"))
    keep = pc.is_in(tasks, pa.array(config.tasks))
    drops["other_task"] += records.num_rows - pc.sum(keep).as_py() if records.num_rows else 0
    records, line_offsets = records.filter(keep), line_offsets.filter(keep)
    ids = pc.binary_join_element_wise(f"{split}/{file_index}/", pc.cast(line_offsets, pa.string()), "")
    return convert(config, records, ids, drops), +drops


def _records(path: str, start: int, end: int, drops: Counter) -> tuple[pa.Table, pa.Array]:
    """The {input, label, task} of each line in [start, end) and the byte offset of the line in its file."""
    with open(path, "rb") as file:
        file.seek(start)
        block = file.read(end - start)
    newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
    line_starts = np.concatenate([[0], newlines + 1])
    line_starts = line_starts[line_starts < len(block)]
    table = _parse_block(block)
    if table is not None and table.num_rows == len(line_starts):
        offsets = pa.array(start + line_starts, pa.int64())
    else:
        # A blank or broken line somewhere in the range: parse it line by line to count and skip it.
        parsed, kept = [], []
        for line_start, line in zip(line_starts, block.split(b"\n")):
            one = _parse_block(line, max(len(line) + 1, 1 << 20)) if line.strip() else None
            if one is not None and one.num_rows == 1:
                parsed.append(one)
                kept.append(start + line_start)
            elif line.strip():
                drops["not_json"] += 1
        table = pa.concat_tables(parsed) if parsed else SCHEMA.empty_table()
        offsets = pa.array(kept, pa.int64())
    complete = pc.and_(pc.and_(pc.is_valid(table.column("input")), pc.is_valid(table.column("label"))), pc.is_valid(table.column("task")))
    drops["missing_field"] += table.num_rows - pc.sum(complete).as_py() if table.num_rows else 0
    return table.filter(complete), offsets.filter(complete)


def _parse_block(block: bytes, block_size: int = 1 << 20) -> pa.Table | None:
    # Parsed in 1 MB blocks, in parallel: twice as fast as one block (a longer line falls back to its own).
    try:
        return pa_json.read_json(
            io.BytesIO(block),
            read_options=pa_json.ReadOptions(block_size=block_size),
            parse_options=pa_json.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def convert(config: MathShepherdConfig, records: pa.Table, ids: pa.Array, drops: Counter) -> pa.Table:
    """The rows of many lines at once, column-wise in Arrow (a Python loop over 445K lines is 10x slower).

    `rows` holds the indices of the lines still passing every check; the lines that fail one go
    through `line_row` at the end, which names the reason each is dropped.
    """
    inputs = records.column("input").combine_chunks()
    labels = records.column("label").combine_chunks()
    pieces = pc.split_pattern(inputs, TAG)
    tags = np.asarray(pc.list_value_length(pieces)) - 1
    # A tag is 4 UTF-8 bytes and its mark 1: a well-formed label is 3 bytes per tag shorter.
    lengths_fit = np.asarray(pc.binary_length(labels)) == np.asarray(pc.binary_length(inputs)) - 3 * tags
    candidates = (tags > 0) & lengths_fit
    if (_buffer(inputs)[1] == 0).any():  # a NUL byte in the text would pass for a tag in _marks
        candidates &= ~np.asarray(pc.match_substring(inputs, "\0"))
    rows = np.flatnonzero(candidates)
    pieces = _taken(pieces, rows)
    marks, ok = _marks(_taken(inputs, rows), _taken(labels, rows), tags[rows])
    # The problem ends where the first piece's last "Step 1:" starts; nothing may follow the last tag.
    around_first_step = pc.split_pattern(pc.list_element(pieces, 0), FIRST_STEP, max_splits=1, reverse=True)
    last_piece = pc.take(pieces.flatten(), np.asarray(pieces.offsets)[1:] - 1)
    ok &= np.asarray(pc.list_value_length(around_first_step)) == 2
    ok &= np.asarray(pc.utf8_length(pc.utf8_trim_whitespace(last_piece))) == 0
    rows, pieces, marks, around_first_step = rows[ok], *(_kept(a, ok) for a in (pieces, marks, around_first_step))
    completions = _completions(config, pieces, pc.list_element(around_first_step, 1))
    ok = ~_any_empty(completions)
    rows = rows[ok]
    prompts = _kept(pc.utf8_trim_whitespace(pc.list_element(around_first_step, 0)), ok)
    table = _table(_taken(records, rows), _taken(ids, rows), prompts, _kept(completions, ok), _kept(marks, ok))
    failed = np.setdiff1d(np.arange(records.num_rows), rows)
    return _with_failed_lines(config, records, ids, failed, table, drops)


def _taken(data, rows: np.ndarray):
    """data.take(rows), without the copy when rows are all of them (the usual case)."""
    return data if len(rows) == len(data) else data.take(rows)


def _kept(data, mask: np.ndarray):
    return data if mask.all() else data.filter(mask)


def _marks(inputs: pa.StringArray, labels: pa.StringArray, tags: np.ndarray) -> tuple[pa.ListArray, np.ndarray]:
    """Per line, the label's marks as bools, and whether the label is the input with each tag marked.

    Every line here has a label exactly 3 bytes per tag shorter than its input: with each tag
    replaced by one NUL byte, the input lines up byte for byte with its label, which may differ
    from it only where the NULs are, and there only by "+" or "-".
    """
    placeholder_offsets, placeholders = _buffer(pc.replace_substring(inputs, TAG, "\0"))
    label_offsets, label_bytes = _buffer(labels)
    at_tag = placeholders == 0
    mark_at = np.flatnonzero(at_tag)
    marks = label_bytes[mark_at]
    rows = len(inputs)
    bad = np.zeros(rows, dtype=bool)
    wrong = (label_bytes != placeholders) & ~at_tag
    wrong[mark_at] = (marks != ord("+")) & (marks != ord("-"))
    if wrong.any():
        row_of_byte = np.repeat(np.arange(rows), np.diff(label_offsets))
        bad |= np.bincount(row_of_byte[wrong], minlength=rows) > 0
    mark_offsets = pa.array(np.concatenate([[0], np.cumsum(tags)]), pa.int32())
    return pa.ListArray.from_arrays(mark_offsets, pa.array(marks == ord("+"))), ~bad


def _buffer(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, bytes) of a string array, without copying the bytes."""
    raw = np.frombuffer(strings.buffers()[1], dtype=np.int32)
    offsets = raw[strings.offset : strings.offset + len(strings) + 1].astype(np.int64)
    data_buffer = strings.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]] if data_buffer else np.zeros(0, np.uint8)
    return offsets - offsets[0], data


def _completions(config: MathShepherdConfig, pieces: pa.ListArray, first_step: pa.Array) -> pa.ListArray:
    """The steps: the first piece's text from "Step 1:" on, then the other pieces but the last (empty) one."""
    offsets = np.asarray(pieces.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    parent = np.repeat(np.arange(len(pieces)), np.diff(offsets))
    index_in_row = np.arange(offsets[-1]) - offsets[parent]
    is_first = pa.array(index_in_row == 0)
    first_steps = pc.binary_join_element_wise(FIRST_STEP, first_step, "").take(parent)
    steps = pc.if_else(is_first, first_steps, pieces.flatten())
    steps = steps.filter(index_in_row < np.diff(offsets)[parent] - 1)
    steps = pc.utf8_trim_whitespace(steps)
    if config.strip_step_prefix:
        steps = pc.utf8_trim_whitespace(pc.replace_substring_regex(steps, r"^Step \d+:", ""))
    if not config.keep_calculator_annotations:
        annotated = pc.match_substring(steps, "<<")  # a plain search, much cheaper than the regex
        if pc.any(annotated).as_py():
            stripped = pc.replace_substring_regex(steps.filter(annotated), gsm8k.ANNOTATION.pattern, "")
            steps = pc.replace_with_mask(steps, annotated, stripped)
    step_offsets = pa.array(offsets - np.arange(len(pieces) + 1), pa.int32())
    return pa.ListArray.from_arrays(step_offsets, steps)


def _any_empty(completions: pa.ListArray) -> np.ndarray:
    offsets = np.asarray(completions.offsets, dtype=np.int64)
    empty = np.asarray(pc.utf8_length(completions.flatten())) == 0
    parent = np.repeat(np.arange(len(completions)), np.diff(offsets))
    return np.bincount(parent, weights=empty, minlength=len(completions)) > 0


def _table(records: pa.Table, ids: pa.Array, prompts, completions: pa.ListArray, labels: pa.ListArray) -> pa.Table:
    offsets = np.asarray(labels.offsets, dtype=np.int64)
    flat = np.asarray(labels.flatten())
    parent = np.repeat(np.arange(len(labels)), np.diff(offsets))
    index_in_row = np.arange(len(flat)) - (offsets[parent] - offsets[0])
    # First False per line: the smallest index among its False labels, -1 when there is none.
    first_false = np.full(len(labels), np.iinfo(np.int32).max, dtype=np.int64)
    np.minimum.at(first_false, parent[~flat], index_in_row[~flat])
    first_false[first_false == np.iinfo(np.int32).max] = -1
    last_steps = pc.take(completions.flatten(), offsets[1:] - offsets[0] - 1)
    # The phrase put in front of every last step: a split in two always, the head empty when it had none.
    guarded = pc.binary_join_element_wise(ANSWER_PHRASE, last_steps, "")
    around_answer = pc.split_pattern(guarded, ANSWER_PHRASE, max_splits=1, reverse=True)
    has_answer = pc.greater(pc.utf8_length(pc.list_element(around_answer, 0)), 0)
    final_answers = pc.if_else(has_answer, pc.utf8_trim_whitespace(pc.list_element(around_answer, 1)), "")
    return pa.Table.from_arrays(
        [
            ids,
            prompts,
            completions,
            labels,
            pa.array(first_false, pa.int32()),
            final_answers,
            pa.array([""] * len(labels), pa.string()),
            pc.binary_join_element_wise("math_shepherd/", pc.utf8_lower(records.column("task")), ""),
        ],
        schema=FEATURES.arrow_schema,
    )


def _with_failed_lines(config, records: pa.Table, ids: pa.Array, failed: np.ndarray, table: pa.Table, drops: Counter) -> pa.Table:
    """Count why each failed line fails; a line only Arrow's rules failed (whitespace) still gives its row."""
    rescued = []
    for index in failed:
        record = {name: records.column(name)[index].as_py() for name in FIELDS}
        try:
            row = line_row(config, record["input"], record["label"], record["task"].lower())
        except BadLine as error:
            drops[error.reason] += 1
            continue
        rescued.append({**row, "id": ids[index].as_py()})
    if not rescued:
        return table
    return pa.concat_tables([table, pa.Table.from_pylist(rescued, schema=FEATURES.arrow_schema)])


def line_row(config: MathShepherdConfig, text: str, label: str, task: str) -> dict:
    """The row of one line (without its id); BadLine when the line does not parse."""
    pieces = text.split(TAG)
    if len(pieces) == 1:
        raise BadLine("no_tag")
    marks = _label_marks(pieces, label)
    if pieces[-1].strip():
        raise BadLine("text_after_last_tag")
    first = pieces[0]
    boundary = first.rfind(FIRST_STEP)
    if boundary < 0:
        raise BadLine("no_first_step")
    steps = [first[boundary:], *pieces[1:-1]]
    completions = []
    for step in steps:
        step = step.strip()
        if config.strip_step_prefix and step.startswith("Step "):
            step = STEP_PREFIX.sub("", step, count=1)
        if not config.keep_calculator_annotations and "<<" in step:
            step = gsm8k.strip_annotations(step)
        if not step:
            raise BadLine("empty_step")
        completions.append(step)
    labels = [MARKS[mark] for mark in marks]
    _, phrase, answer = completions[-1].rpartition(ANSWER_PHRASE)
    return {
        "prompt": first[:boundary].strip(),
        "completions": completions,
        "labels": labels,
        "first_error": labels.index(False) if False in labels else -1,
        "final_answer": answer.strip() if phrase else "",
        "reference_answer": "",
        "source": f"math_shepherd/{task}",
    }


def _label_marks(pieces: list[str], label: str) -> list[str]:
    """The label's mark at each tag of the input; BadLine when label is not input with tags marked."""
    marks, position = [], 0
    fits = len(label) == sum(map(len, pieces)) + len(pieces) - 1  # one character per tag
    if fits:
        for piece in pieces[:-1]:
            if not label.startswith(piece, position):
                break
            mark = label[position + len(piece)]
            if mark not in MARKS:
                break
            marks.append(mark)
            position += len(piece) + 1
        else:
            if label.endswith(pieces[-1]):
                return marks
    tags = len(pieces) - 1
    same_count = fits or len(LABEL_MARK.findall(label)) == tags
    raise BadLine("label_text_differs" if same_count else "tag_label_count_mismatch")

