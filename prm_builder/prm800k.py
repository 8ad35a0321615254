"""The `prm800k` config: OpenAI's human step labels (PRM800K), converted faithfully.

Each line of PRM800K is one labelled solution: `label.steps` holds, per step, the rated
candidate `completions`, an optional `human_completion` (phase 1: written by the labeler when
every candidate was wrong) and `chosen_completion`, the candidate the solution went on with.

The trajectory of a line walks `label.steps` in order. At each step it continues with, in this
order of preference:
  1. the completion at `chosen_completion`;
  2. else the human completion, labelled positive (its rating in the data is null; its entry
     in the `ratings` column is 1);
  3. else, in phase 2 (where labelling stops at the first mistake and leaves no choice), the
     completion whose text equals the pre-generated step at that position (the first such).
It stops at a step whose fields are all null, at a step where none of the three exists, and
before a continuing completion whose rating is null (that step is not part of the trajectory).

Rows of a line:
  - the trajectory: its steps, `ratings` the raw ratings of those steps (-1/0/1, human = 1),
    `labels` the ratings under `neutral_as` (1 -> True, -1 -> False, 0 -> True for "positive",
    the PRM800K paper's reading, False for "negative"). A trajectory with no step gives no row.
  - with `alternatives=True`, one more row per other rated completion at every step the trajectory
    reached, the step it stopped at included: the trajectory's steps before that step plus
    that completion (so its last rating is the completion's). Completions with a null rating
    give no row, and alternatives of different steps are never combined. Rows are not
    deduplicated: two completions with the same text are two ratings, as in the data.
  - `final_answer`: for the trajectory of a phase 2 line, `pre_generated_answer` (the answer
    of the pre-generated solution the trajectory follows); otherwise the text after the last
    "# Answer" heading of the row's last step ("" when there is none). `reference_answer`:
    `ground_truth_answer` ("" when null).
  - `id`: "phase{1,2}/{labeler}/{timestamp}" for the trajectory, plus "/step{i}/completion{j}"
    for an alternative (indices into `label.steps` and that step's `completions`): stable
    across rebuilds and `num_proc`.
  - `phase` (1 or 2: a line is phase 2 when its `generation` or its question's
    `pre_generated_steps` is set, whatever file it comes from), `generation` (null in phase 1), `finish_reason`, and `source`
    "prm800k/phase1" or "prm800k/phase2".

Lines dropped, each counted under one reason (checked in this order): malformed lines with
on_bad_lines="skip" ("malformed:<what>"), lines of a phase not in `phases` ("other_phase"),
`bad_problem` lines ("bad_problem"), quality-control and screening lines unless
include_screening ("quality_control_question", "screening_question"; screening covers
`is_initial_screening_question` and generation -1). Lines whose trajectory has no step count
"empty_trajectory" (their alternatives, if any, are still rows). `give_up` lines keep what was
labelled. As for every config, the builder then drops the rows of problems in
`exclude_problems` ("contaminated:<set>", one count per row) and leaves out a split with no row.

Files are streamed line by line in byte-range shards aligned to line starts, so a single
456 MB file is converted in constant memory and split across `num_proc` processes.
"""

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import datasets
from datasets import List, Value
from datasets.utils import logging

from . import prm800k_download
from .citations import citation
from .contract import ConfigSpec
from .drops import Dropped
from .features import first_error, with_extra_columns
from .jsonl import byte_range_shards, lone_surrogate
from .options import PRMBuilderConfig, as_list, check_choice

logger = logging.get_logger(__name__)

PHASES = (1, 2)
SPLITS = ("train", "test")
NEUTRAL_POLICIES = ("positive", "negative")
BAD_LINE_POLICIES = ("error", "skip")
RATINGS = (-1, 0, 1)
ANSWER_HEADING = "# Answer"
# Shards are byte ranges of about this size: enough of them for num_proc, few enough to be cheap.
SHARD_BYTES = 32 << 20
# Where a data_dir may hold the label files: flat, or the repository's own layout.
LOCAL_LAYOUTS = (".", "data", "prm800k/data")

DESCRIPTION = (
    "PRM800K: human step-level ratings of MATH solutions (phases 1 and 2), one row per labelled "
    "trajectory (and optionally per rated alternative step), neutral ratings mapped by policy."
)
HOMEPAGE = "https://github.com/openai/prm800k"
LICENSE = "MIT (PRM800K)"
CITATION = citation("lightman2023lets")
FEATURES = with_extra_columns(
    # The raw rating of each step of the row (-1, 0, 1; a human completion counts as 1), so any
    # neutral policy can be applied afterwards.
    ratings=List(Value("int8")),
    phase=Value("int32"),
    # The active-learning round of a phase 2 line (-1: screening); null in phase 1.
    generation=Value("int32"),
    finish_reason=Value("string"),
)


@dataclasses.dataclass
class PRM800KConfig(PRMBuilderConfig):
    """Options of the `prm800k` config.

    Parameters:
        data_dir: a local folder with the upstream files (phase1_train.jsonl, phase1_test.jsonl,
            phase2_train.jsonl, phase2_test.jsonl), flat or in the repository's layout
            (prm800k/data/...). Default (no data_dir/data_files): download and verify them.
        data_files: explicit PRM800K-format files per split ({"train": [...], "test": [...]}).
        phases: which phases to read (list or comma-separated string of 1 and 2).
        neutral_as: the label of a neutral (0) rating: "positive" (the paper's) or "negative".
        alternatives: also yield one row per other rated completion at each step reached.
        include_screening: keep quality-control and initial screening lines (dropped by default).
        exclude_problems: benchmark problems left out (every config's option; see
            prm_builder/decontamination.py): by default MATH500 and GSM8K test problems from the
            train split; "math500" leaves PRM800K's 500 held-out problems out of every split.
        on_bad_lines: "error" (stop, naming file and line) or "skip" (skip and count).
    """

    ACCEPTS_DATA_FILES = True

    phases: list[int] = dataclasses.field(
        default_factory=lambda: list(PHASES), metadata={"help": "phases to read: 1, 2"}
    )
    neutral_as: str = dataclasses.field(
        default="positive", metadata={"help": "label of a neutral (0) rating: 'positive' (the paper's) or 'negative'"}
    )
    alternatives: bool = dataclasses.field(
        default=False, metadata={"help": "one more row per other rated completion at each step reached"}
    )
    include_screening: bool = dataclasses.field(
        default=False, metadata={"help": "keep quality-control and screening lines"}
    )
    on_bad_lines: str = dataclasses.field(
        default="error", metadata={"help": "'error' (stop, naming file and line) or 'skip' (skip and count)"}
    )

    def validate(self) -> None:
        super().validate()
        if self.data_dir is not None and self.data_files is not None:
            raise ValueError(
                f"pass data_dir or data_files, not both; got data_dir={self.data_dir!r} and data_files"
            )
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ValueError(
                f"data_dir must be a folder with PRM800K's label files, got {self.data_dir!r}: no such folder"
            )
        self.phases = _phases(self.phases)
        check_choice("neutral_as", self.neutral_as, list(NEUTRAL_POLICIES))
        check_choice("on_bad_lines", self.on_bad_lines, list(BAD_LINE_POLICIES))
        for option in ("alternatives", "include_screening"):
            if not isinstance(getattr(self, option), bool):
                raise ValueError(f"{option} must be True or False, got {getattr(self, option)!r}")



def _phases(value) -> list[int]:
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else as_list("phases", value)
    try:
        phases = sorted({int(item) for item in items if not isinstance(item, bool)})
    except (TypeError, ValueError):
        phases = None
    if not phases or len(phases) != len(set(map(str, items))) or not set(phases) <= set(PHASES):
        raise ValueError(f"phases must be a non-empty list of {list(PHASES)} (e.g. [1, 2] or '2'), got {value!r}")
    return phases


# -- files ---------------------------------------------------------------------------------------


def split_generators(config: PRM800KConfig, dl_manager) -> list[datasets.SplitGenerator]:
    return [
        datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "shards": byte_range_shards(paths, SHARD_BYTES)})
        for split, paths in _label_files(config, dl_manager).items()
    ]


def _label_files(config: PRM800KConfig, dl_manager) -> dict[str, list[str]]:
    """split -> local files."""
    if config.data_files is not None:
        files = dl_manager.download({split: list(map(str, paths)) for split, paths in config.data_files.items()})
        for paths in files.values():
            for path in paths:
                if not os.path.isfile(path):  # a remote file under streaming=True
                    raise ValueError(
                        f"prm800k reads local files; {path} is not one (download it, or drop streaming=True)"
                    )
                prm800k_download.check_not_lfs_pointer(
                    path, "fetch the real file (e.g. `git lfs pull` in a clone of openai/prm800k)"
                )
        return files
    upstream = {(phase, split): prm800k_download.label_file(phase, split) for phase in config.phases for split in SPLITS}
    if config.data_dir is None:
        return _by_split(prm800k_download.download_verified(dl_manager, upstream))
    names = {key: Path(relative).name for key, relative in upstream.items()}
    folder = _find_label_folder(Path(config.data_dir), names.values())
    local = {key: str(folder / name) for key, name in names.items()}
    for path in local.values():
        prm800k_download.check_not_lfs_pointer(
            path, "this folder comes from a clone without git-lfs: run `git lfs install && git lfs pull` in the clone"
        )
    return _by_split(local)


def _by_split(files: dict[tuple[int, str], str]) -> dict[str, list[str]]:
    return {split: [files[phase, s] for phase, s in sorted(files) if s == split] for split in SPLITS}


def _find_label_folder(data_dir: Path, names) -> Path:
    names = list(names)
    for layout in LOCAL_LAYOUTS:
        folder = data_dir / layout
        if all((folder / name).is_file() for name in names):
            return folder.resolve()
    found = sorted(p.name for layout in LOCAL_LAYOUTS for p in (data_dir / layout).glob("*.jsonl"))
    raise FileNotFoundError(
        f"data_dir {str(data_dir)!r}: expected {', '.join(names)} in it, in data/ or in prm800k/data/ "
        f"(the repository's layout); found {found or 'no .jsonl files'}. Pass phases= to read fewer "
        f"phases, or data_files={{'train': [...], 'test': [...]}} for files with other names"
    )


# -- rows ------------------------------------------------------------------------------------------


def generate_rows(config: PRM800KConfig, drops: Counter, split: str, shards: list) -> Iterator[dict]:
    rows_per_kind = Counter()
    for rows in _rows_per_line(config, shards, drops):
        for row in rows:
            rows_per_kind[row["source"], row["finish_reason"]] += 1
            yield row
    if rows_per_kind:
        logger.info(
            f"prm800k {split}: "
            + ", ".join(f"{n} rows {source} {reason}" for (source, reason), n in sorted(rows_per_kind.items()))
        )


def _rows_per_line(config: PRM800KConfig, shards: list, drops: Counter) -> Iterator[list]:
    """The rows of each line in order: all of them, or none when the line turns out malformed.

    A malformed line stops the build naming file and line, or with on_bad_lines="skip" is counted.
    """
    for path, start, end in shards:
        for offset, line in _lines(path, start, end):
            try:
                rows = list(line_rows(config, _parse(line), drops))
            except Dropped as error:
                if config.on_bad_lines == "skip":
                    drops[f"malformed:{error.reason}"] += 1
                    if logger.isEnabledFor(logging.DEBUG):  # the line number costs a read up to the line
                        logger.debug(f"{path}, line {_line_number(path, offset)}: skipped (malformed:{error.reason}): {error.detail}")
                    continue
                raise _bad_line_error(path, offset, line, error) from None
            yield rows


def _lines(path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of every non-blank line starting in [start, end)."""
    with open(path, "rb") as file:
        file.seek(start)
        offset = start
        while offset < end:
            line = file.readline()
            if not line:
                return
            if line.strip():
                yield offset, line
            offset += len(line)


def _parse(line: bytes) -> dict:
    try:
        # (json.loads of the bytes decoded them too, and took a byte-order mark)
        text = (line[3:] if line.startswith(b"\xef\xbb\xbf") else line).decode("utf-8")
    except UnicodeDecodeError as error:
        raise Dropped("not_utf8", f"expected UTF-8 text, got byte 0x{line[error.start]:02x} at column {error.start + 1}") from None
    try:
        record = json.loads(text)
    except ValueError as error:
        raise Dropped("not_json", f"not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise Dropped("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    lone = lone_surrogate(line, record)
    if lone is not None:  # json.loads takes it; Arrow could not store the text
        raise Dropped("not_utf8", f"expected UTF-8 text, got the escape {lone}, half of a surrogate pair (no character)")
    return record


def _line_number(path: str, offset: int) -> int:
    number = 1  # counted only when needed: keeping line numbers would cost every line
    with open(path, "rb") as file:
        while offset > 0:
            chunk = file.read(min(offset, 1 << 24))
            number += chunk.count(b"\n")
            offset -= len(chunk)
    return number


def _bad_line_error(path: str, offset: int, line: bytes, error: Dropped) -> ValueError:
    number = _line_number(path, offset)
    hint = ""
    if error.reason == "not_json" and not line.endswith(b"\n"):
        hint = " The file ends in the middle of this line: it looks truncated (an interrupted copy or download?)."
    return ValueError(
        f"{path}, line {number}: not a PRM800K record: {error.detail}.{hint} Fix or remove the line, or pass "
        f"on_bad_lines='skip' to skip such lines (they are counted). The line starts: {line[:120]!r}"
    )


def line_rows(config: PRM800KConfig, record: dict, drops: Counter) -> Iterator[dict]:
    """The rows of one PRM800K line (see the module docstring); drops are counted in `drops`."""
    question = record.get("question")
    label = record.get("label")
    if not isinstance(question, dict) or not isinstance(question.get("problem"), str):
        raise Dropped("no_question", "missing 'question' with a 'problem' text")
    if not isinstance(label, dict):
        raise Dropped("no_label", "missing 'label' object")
    labeler, timestamp = record.get("labeler"), record.get("timestamp")
    if not isinstance(labeler, str) or not isinstance(timestamp, str):
        raise Dropped("no_id", "missing 'labeler'/'timestamp' strings (they make the row ids)")
    generation = record.get("generation")
    if generation is not None and (isinstance(generation, bool) or not isinstance(generation, int)):
        raise Dropped("bad_generation", f"'generation' must be an integer or null, got {generation!r}")
    # Upstream: generation "should always be null" in phase 1; pre-generated steps are phase 2's.
    phase = 2 if generation is not None or question.get("pre_generated_steps") is not None else 1
    finish_reason = label.get("finish_reason") or ""

    if phase not in config.phases:
        drops["other_phase"] += 1
        return
    if finish_reason == "bad_problem":
        drops["bad_problem"] += 1
        return
    if not config.include_screening:
        if record.get("is_quality_control_question"):
            drops["quality_control_question"] += 1
            return
        if record.get("is_initial_screening_question") or generation == -1:
            drops["screening_question"] += 1
            return

    steps = label.get("steps") or []
    if not isinstance(steps, list):
        raise Dropped("bad_steps", f"'label.steps' must be a list, got {type(steps).__name__}")
    pre_generated = question.get("pre_generated_steps") if phase == 2 else None
    taken, alternatives = trajectory_and_alternatives(
        steps, pre_generated if isinstance(pre_generated, list) else None, config.alternatives
    )

    row_id = f"phase{phase}/{labeler}/{timestamp}"
    positive_neutral = config.neutral_as == "positive"
    common = {
        "prompt": question["problem"],
        "reference_answer": _text(question.get("ground_truth_answer")),
        "source": f"prm800k/phase{phase}",
        "phase": phase,
        "generation": generation,
        "finish_reason": finish_reason,
    }
    texts = [text for text, _ in taken]
    ratings = [rating for _, rating in taken]
    if taken:
        pre_generated_answer = question.get("pre_generated_answer") if phase == 2 else None
        final = _text(pre_generated_answer) if pre_generated_answer is not None else answer_section(texts[-1])
        yield _row(row_id, common, texts, ratings, final, positive_neutral)
    else:
        drops["empty_trajectory"] += 1
    for step_index, completion_index, text, rating in alternatives:
        yield _row(
            f"{row_id}/step{step_index}/completion{completion_index}",
            common,
            texts[:step_index] + [text],
            ratings[:step_index] + [rating],
            answer_section(text),
            positive_neutral,
        )


def trajectory_and_alternatives(steps: list, pre_generated: list | None, with_alternatives: bool):
    """The trajectory [(text, rating)] and the alternatives [(step, completion, text, rating)]."""
    taken, alternatives = [], []
    for index, step in enumerate(steps):
        if step is None:
            break
        if not isinstance(step, dict):
            raise Dropped("bad_step", f"step {index} must be an object or null, got {type(step).__name__}")
        completions = step.get("completions") or []
        chosen, human = step.get("chosen_completion"), step.get("human_completion")
        continuing = None  # (completion index or None for the human one, text, rating)
        if chosen is not None:
            if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                raise Dropped(
                    "bad_chosen_completion",
                    f"step {index}: chosen_completion {chosen!r} is not an index into its "
                    f"{len(completions)} completions",
                )
            continuing = (chosen, *_completion(completions[chosen], index))
        elif human is not None:
            if not isinstance(human, dict) or not isinstance(human.get("text"), str):
                raise Dropped("bad_human_completion", f"step {index}: human_completion must be an object with a 'text'")
            continuing = (None, human["text"], 1)
        elif pre_generated is not None and index < len(pre_generated):
            for position, completion in enumerate(completions):
                text, rating = _completion(completion, index)
                if text == pre_generated[index]:
                    continuing = (position, text, rating)
                    break
        if with_alternatives:
            for position, completion in enumerate(completions):
                if continuing is None or position != continuing[0]:
                    text, rating = _completion(completion, index)
                    if rating is not None:
                        alternatives.append((index, position, text, rating))
        if continuing is None or continuing[2] is None:
            break
        taken.append(continuing[1:])
    return taken, alternatives


def _completion(completion, step_index: int) -> tuple[str, int | None]:
    if not isinstance(completion, dict) or not isinstance(completion.get("text"), str):
        raise Dropped("bad_completion", f"step {step_index}: a completion must be an object with a 'text'")
    rating = completion.get("rating")
    if rating is not None and (isinstance(rating, bool) or rating not in RATINGS):
        raise Dropped("bad_rating", f"step {step_index}: rating must be -1, 0, 1 or null, got {rating!r}")
    return completion["text"], rating


def _row(row_id: str, common: dict, texts: list[str], ratings: list[int], final: str, positive_neutral: bool) -> dict:
    labels = [rating > 0 or (rating == 0 and positive_neutral) for rating in ratings]
    return {
        "id": row_id,
        "prompt": common["prompt"],
        "completions": texts,
        "labels": labels,
        "first_error": first_error(labels),
        "final_answer": final,
        "reference_answer": common["reference_answer"],
        "source": common["source"],
        "ratings": ratings,
        "phase": common["phase"],
        "generation": common["generation"],
        "finish_reason": common["finish_reason"],
    }


def answer_section(text: str) -> str:
    """The text after the last "# Answer" heading of a step, stripped; "" when there is none."""
    head, heading, answer = text.rpartition(ANSWER_HEADING)
    return answer.strip() if heading else ""


def _text(value) -> str:
    return "" if value is None else str(value)


SPEC = ConfigSpec(
    config_class=PRM800KConfig,
    features=FEATURES,
    description=DESCRIPTION,
    homepage=HOMEPAGE,
    license=LICENSE,
    citation=CITATION,
    split_generators=split_generators,
    generate_rows=generate_rows,
)
