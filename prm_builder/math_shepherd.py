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
"math_shepherd/math"; `id` "<split>/<file index>/<line number>", stable across rebuilds and
num_proc.

Lines skipped, each counted under one reason: "not_json" (a line that is not a JSON object with
string fields), "missing_field" (no input, label or task), "other_task" (a task not in `tasks`),
"no_tag" (no "ки" in input), "tag_label_count_mismatch" (as many "ки" tags in input as "+"/"-"
marks at step ends in label, or not), "label_text_differs" (same count, but label differs from
input elsewhere than at the tags), "text_after_last_tag" (an unlabelled step at the end),
"no_first_step" (no "Step 1:" to split problem from solution), "empty_step".

Files are read in byte ranges with pyarrow's JSON reader (multi-threaded C++), then each line's
strings are split in Python: the build takes about the time `load_dataset("json")` takes on the
same file (benchmarks/math_shepherd.py).
"""

import dataclasses
import io
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow as pa
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
            groups += [[(split, file_index, *shard)] for shard in _numbered_shards(path)]
        if config.max_examples is not None:
            groups = [[shard for group in groups for shard in group]]  # a row cap sees the rows in order
        generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "groups": groups}))
    return generators


def _files(config: MathShepherdConfig, dl_manager) -> dict[str, list[str]]:
    if config.data_files is not None:
        return dl_manager.download({split: list(map(str, paths)) for split, paths in config.data_files.items()})
    if config.data_dir is None:
        return {split: [path] for split, path in dl_manager.download(HUB_FILES).items()}
    folder = Path(config.data_dir)
    named = {split: [str(folder / f"{split}.jsonl")] for split in LOCAL_SPLITS if (folder / f"{split}.jsonl").is_file()}
    if named:
        return named
    found = sorted(str(path) for path in folder.glob("*.jsonl"))
    if not found:
        raise FileNotFoundError(f"data_dir {config.data_dir!r}: expected Math-Shepherd .jsonl files in it, found none")
    return {"train": found}


def _numbered_shards(path: str) -> list[tuple[str, int, int, int]]:
    """(path, start, end, number of the first line) byte ranges of about SHARD_BYTES."""
    shards, line, offset = [], 1, 0
    with open(path, "rb") as file:
        for _, start, end in byte_range_shards([path], SHARD_BYTES):
            while offset < start:  # count the lines before this range, in bounded chunks
                chunk = file.read(min(start - offset, 1 << 24))
                line += chunk.count(b"\n")
                offset += len(chunk)
            shards.append((path, start, end, line))
    return shards


# -- rows ------------------------------------------------------------------------------------------


class BadLine(ValueError):
    """A line that does not parse; `reason` names it in the drop counts."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def generate_rows(config: MathShepherdConfig, drops: Counter, split: str, groups: list) -> Iterator[dict]:
    emitted = 0
    for group in groups:
        for split_name, file_index, path, start, end, first_line in group:
            for line_number, record in _records(path, start, end, first_line, drops):
                task = record["task"].lower()
                if task not in config.tasks:
                    drops["other_task"] += 1
                    continue
                try:
                    row = line_row(config, record["input"], record["label"], task)
                except BadLine as error:
                    drops[error.reason] += 1
                    continue
                if config.max_examples is not None and emitted >= config.max_examples:
                    return
                emitted += 1
                row["id"] = f"{split_name}/{file_index}/{line_number}"
                yield row


def _records(path: str, start: int, end: int, first_line: int, drops: Counter) -> Iterator[tuple[int, dict]]:
    """(line number, {input, label, task}) of each line in [start, end); bad lines counted."""
    with open(path, "rb") as file:
        file.seek(start)
        block = file.read(end - start)
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    table = _parse_block(block) if all(line.strip() for line in lines) else None
    if table is not None and table.num_rows == len(lines):
        columns = [table.column(name).to_pylist() for name in FIELDS]
        for offset, values in enumerate(zip(*columns)):
            if None in values:
                drops["missing_field"] += 1
                continue
            yield first_line + offset, dict(zip(FIELDS, values))
        return
    # A blank or broken line somewhere in the range: parse it line by line to count and skip it.
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        parsed = _parse_block(line)
        if parsed is None or parsed.num_rows != 1:
            drops["not_json"] += 1
            continue
        values = [parsed.column(name)[0].as_py() for name in FIELDS]
        if None in values:
            drops["missing_field"] += 1
            continue
        yield first_line + offset, dict(zip(FIELDS, values))


def _parse_block(block: bytes) -> pa.Table | None:
    try:
        return pa_json.read_json(
            io.BytesIO(block),
            read_options=pa_json.ReadOptions(block_size=max(len(block) + 1, 1 << 20)),
            parse_options=pa_json.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def line_row(config: MathShepherdConfig, text: str, label: str, task: str) -> dict:
    """The row of one line (without its id); BadLine when the line does not parse."""
    pieces = text.split(TAG)
    if len(pieces) == 1:
        raise BadLine("no_tag")
    marks = _marks(pieces, label)
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


def _marks(pieces: list[str], label: str) -> list[str]:
    """The label's mark at each tag of the input; BadLine when label is not input with tags marked."""
    marks, position = [], 0
    if len(label) == sum(map(len, pieces)) + len(pieces) - 1:
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
    raise BadLine("label_text_differs" if len(LABEL_MARK.findall(label)) == tags else "tag_label_count_mismatch")

