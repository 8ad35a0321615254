"""Math-Shepherd lines to rows, column-wise: the conversion behind the `math_shepherd` config.

`convert` turns a table of lines (input, label, task) into rows with Arrow kernels and numpy
over whole columns; `line_row` does the same for one line in plain Python, and names the
reason a line does not parse. A line failing any column-wise check goes through `line_row`,
so both agree on every row and every drop (tests/test_math_shepherd.py checks the reasons).
"""

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .features import CORE_FEATURES
from .options import PRMBuilderConfig

TAG = "ки"
MARKS = {"+": True, "-": False}
FIRST_STEP = "Step 1:"
ANSWER_PHRASE = "The answer is:"
STEP_PREFIX = re.compile(r"Step \d+:\s*")
# A label mark at the end of a step: what a tag becomes in `label` (only looked for on bad lines).
LABEL_MARK = re.compile(r"[+-](?=\n|$)")
FIELDS = ("input", "label", "task")
# GSM8K's calculator annotation, `<<48/2=24>>`, as Math-Shepherd's GSM8K solutions carry it: one `=`
# inside, so text like `<<not an annotation>>` is left alone.
CALCULATOR_ANNOTATION = re.compile(r"<<[^<>=]*=[^<>=]*>>")
# Between steps joined into one string for one regex run (_strip_annotations); its NUL marks it out.
STEP_SEPARATOR = "\0=="


class BadLine(ValueError):
    """A line that does not parse; `reason` names it in the drop counts."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def convert(config: PRMBuilderConfig, records: pa.Table, ids: pa.Array, drops: Counter) -> pa.Table:
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
    text_bytes = _buffer(inputs)[1]
    if len(text_bytes) and text_bytes.min() == 0:  # a NUL byte in the text would pass for a tag in _marks
        candidates &= ~np.asarray(pc.match_substring(inputs, "\0"))
    rows = np.flatnonzero(candidates)
    pieces = _taken(pieces, rows)
    marks, ok = _marks(pieces, _taken(labels, rows), tags[rows])
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
    tasks = _taken(records.column("task"), rows)
    table = _table(tasks, _taken(ids, rows), prompts, _kept(completions, ok), _kept(marks, ok))
    failed = np.ones(records.num_rows, dtype=bool)
    failed[rows] = False
    return _with_failed_lines(config, records, ids, np.flatnonzero(failed), table, drops)


def _taken(data, rows: np.ndarray):
    """data.take(rows), without the copy when rows are all of them (the usual case)."""
    return data if len(rows) == len(data) else data.take(rows)


def _kept(data, mask: np.ndarray):
    return data if mask.all() else data.filter(mask)


def _marks(pieces: pa.ListArray, labels: pa.StringArray, tags: np.ndarray) -> tuple[pa.ListArray, np.ndarray]:
    """Per line, the label's marks as bools, and whether the label is the input with each tag marked.

    Every line here (its input given split at the tags) has a label exactly 3 bytes per tag
    shorter than its input: with each tag replaced by one NUL byte, the input lines up byte for
    byte with its label, which may differ from it only where the NULs are, and there only by
    "+" or "-".
    """
    _, placeholders = _buffer(pc.binary_join(pieces, "\0"))  # the input, each tag a NUL: 4x faster than a replace
    label_offsets, label_bytes = _buffer(labels)
    at_tag = placeholders == 0
    mark_at = np.flatnonzero(at_tag)
    marks = label_bytes[mark_at]
    rows = len(pieces)
    bad = np.zeros(rows, dtype=bool)
    differs = label_bytes != placeholders
    valid_marks = (marks == ord("+")) | (marks == ord("-"))
    # A valid mark always differs from its NUL: all lines are right when nothing else differs.
    if not valid_marks.all() or np.count_nonzero(differs) != len(mark_at):
        wrong = differs & ~at_tag
        wrong[mark_at] = ~valid_marks
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


def _completions(config: PRMBuilderConfig, pieces: pa.ListArray, first_step: pa.Array) -> pa.ListArray:
    """The steps: the first piece's text from "Step 1:" on, then the other pieces but the last (empty) one."""
    offsets = np.asarray(pieces.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    flat = pieces.flatten()
    # One gather: the line's own first step (placed after all pieces), then its pieces 1..n-1.
    order = np.arange(offsets[-1])
    order[offsets[:-1]] = len(flat) + np.arange(len(pieces))
    order = np.delete(order, offsets[1:] - 1)
    first_steps = pc.binary_join_element_wise(FIRST_STEP, first_step, "")
    steps = pc.utf8_trim_whitespace(pa.concat_arrays([flat, first_steps]).take(order))
    if config.strip_step_prefix:
        steps = pc.utf8_trim_whitespace(pc.replace_substring_regex(steps, r"^Step \d+:", ""))
    if not config.keep_calculator_annotations:
        steps = _strip_annotations(steps)
    step_offsets = pa.array(offsets - np.arange(len(pieces) + 1), pa.int32())
    return pa.ListArray.from_arrays(step_offsets, steps)


def _strip_annotations(steps: pa.StringArray) -> pa.StringArray:
    """The steps without GSM8K's <<a*b=c>>, from one regex run over all of them joined (twice as
    fast as a run per step, which pays RE2's set-up for each of them).

    No match can span STEP_SEPARATOR, put before every step: an annotation holds one "=", the
    separator two, and its NUL never occurs in a step (convert leaves lines with a NUL byte to
    line_row). So the steps split back are those of a run on each step alone.
    """
    if not len(steps):
        return steps
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(steps)], pa.int32()), steps), STEP_SEPARATOR)
    joined = pc.binary_join_element_wise(STEP_SEPARATOR, joined, "")  # the first step's separator
    replaced = pc.replace_substring_regex(joined, CALCULATOR_ANNOTATION.pattern, "")
    return pc.split_pattern(replaced, STEP_SEPARATOR).flatten()[1:]


def _any_empty(completions: pa.ListArray) -> np.ndarray:
    offsets = np.asarray(completions.offsets, dtype=np.int64)
    empty = np.asarray(pc.utf8_length(completions.flatten())) == 0
    parent = np.repeat(np.arange(len(completions)), np.diff(offsets))
    return np.bincount(parent, weights=empty, minlength=len(completions)) > 0


def _table(tasks: pa.ChunkedArray, ids: pa.Array, prompts, completions: pa.ListArray, labels: pa.ListArray) -> pa.Table:
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
            pc.binary_join_element_wise("math_shepherd/", pc.utf8_lower(tasks), ""),
        ],
        schema=CORE_FEATURES.arrow_schema,
    )


def _with_failed_lines(config: PRMBuilderConfig, records: pa.Table, ids: pa.Array, failed: np.ndarray, table: pa.Table, drops: Counter) -> pa.Table:
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
    return pa.concat_tables([table, pa.Table.from_pylist(rescued, schema=CORE_FEATURES.arrow_schema)])


def line_row(config: PRMBuilderConfig, text: str, label: str, task: str) -> dict:
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
        prefix = STEP_PREFIX.match(step) if config.strip_step_prefix else None
        if prefix:
            step = step[prefix.end() :]
        if not config.keep_calculator_annotations and "<<" in step:
            step = CALCULATOR_ANNOTATION.sub("", step)
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

