"""Math-Shepherd lines to rows, column-wise: the conversion behind the `math_shepherd` config.

`convert` turns a table of lines (input, label, task) into rows with Arrow kernels and numpy
over whole columns; `line_row` does the same for one line in plain Python, and names the
reason a line does not parse. A line failing any column-wise check goes through `line_row`,
so both agree on every row and every drop (tests/test_math_shepherd.py checks the reasons).

Most of the column-wise work is arithmetic on byte offsets: a text is cut into parts (prompt,
steps) by listing where each part starts and ends in the one buffer holding all the texts,
and Arrow's kernels then trim or copy all parts at once. Regular expressions, which pay a
set-up per string in Arrow, are left to `line_row`: the step prefix and the calculator
annotations are found with numpy instead (`_step_prefix_lengths`, `_annotations`).
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
ROW_SCHEMA = CORE_FEATURES.arrow_schema
LT, EQ, GT = b"<=>"


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
    inputs = _one_chunk(records.column("input"))
    labels = _one_chunk(records.column("label"))
    pieces = pc.split_pattern(inputs, TAG)
    tags = np.diff(_list_offsets(pieces)) - 1
    input_offsets, text_bytes = _buffer(inputs)
    # A tag is 4 UTF-8 bytes and its mark 1: a well-formed label is 3 bytes per tag shorter.
    candidates = (tags > 0) & (np.diff(_buffer(labels)[0]) == np.diff(input_offsets) - 3 * tags)
    if len(text_bytes) and text_bytes.min() == 0:  # a NUL byte in the text would pass for a tag in _marks
        candidates &= ~np.asarray(pc.match_substring(inputs, "\0"))
    rows = np.flatnonzero(candidates)
    pieces = _taken(pieces, rows)
    marks, ok = _marks(pieces, _taken(labels, rows), tags[rows])
    # The problem ends where the first piece's last "Step 1:" starts.
    boundaries = _last_occurrence(pc.list_element(pieces, 0), FIRST_STEP)
    ok &= boundaries >= 0
    prompts, steps, after_last_tag = _parts(pieces, np.maximum(boundaries, 0))
    ok &= after_last_tag == 0  # nothing but whitespace may follow the last tag
    if config.strip_step_prefix:
        steps = _tails(steps, _step_prefix_lengths(steps))
    if not config.keep_calculator_annotations:
        steps = _without_annotations(steps)
    step_offsets = _list_offsets(pieces) - np.arange(len(pieces) + 1)  # one step per tag
    completions = pa.ListArray.from_arrays(pa.array(step_offsets, pa.int32()), steps)
    ok &= ~_any_empty(step_offsets, _buffer(steps)[0])
    rows = rows[ok]
    tasks = _taken(records.column("task"), rows)
    table = _table(tasks, _taken(ids, rows), _kept(prompts, ok), _kept(completions, ok), _kept(marks, ok))
    failed = np.ones(records.num_rows, dtype=bool)
    failed[rows] = False
    return _with_failed_lines(config, records, ids, np.flatnonzero(failed), table, drops)


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


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


# -- strings as byte ranges --------------------------------------------------------------------------


def _buffer(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, bytes) of a string array, without copying the bytes."""
    offsets, data = _spans(strings)
    return offsets - offsets[0], np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]] if data else np.zeros(0, np.uint8)


def _spans(strings: pa.Array) -> tuple[np.ndarray, pa.Buffer | None]:
    """(offsets, data buffer) of a string array: string i is data[offsets[i]:offsets[i + 1]]."""
    raw = np.frombuffer(strings.buffers()[1], dtype=np.int32)
    return raw[strings.offset : strings.offset + len(strings) + 1].astype(np.int64), strings.buffers()[2]


def _list_offsets(lists: pa.ListArray) -> np.ndarray:
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    return offsets - offsets[0]


def _ranges(data: pa.Buffer | None, cuts: np.ndarray) -> pa.StringArray:
    """The strings data[cuts[i]:cuts[i + 1]], without copying data (cuts ascending, at character starts)."""
    return pa.Array.from_buffers(pa.string(), len(cuts) - 1, [None, pa.py_buffer(cuts.astype(np.int32)), data])


def _tails(strings: pa.StringArray, skip: np.ndarray) -> pa.StringArray:
    """Each string without its first skip[i] bytes, trimmed of whitespace."""
    if not len(strings):
        return strings
    offsets, data = _spans(strings)
    cuts = np.empty(2 * len(strings), dtype=np.int64)
    cuts[0::2], cuts[1::2] = offsets[:-1] + skip, offsets[1:]  # each tail, then the next string's head
    return pc.utf8_trim_whitespace(_ranges(data, cuts)).take(np.arange(0, len(cuts) - 1, 2))


def _last_occurrence(strings: pa.StringArray, pattern: str) -> np.ndarray:
    """The byte index of the last `pattern` in each string, -1 where there is none.

    (A split at the last occurrence: Arrow's find_substring and count_substring are slower.)"""
    around = pc.split_pattern(strings, pattern, max_splits=1, reverse=True)
    heads = _list_offsets(around)[:-1]
    found = np.diff(_buffer(around.flatten())[0])[heads]  # the byte length of the text before it
    found[np.diff(_list_offsets(around)) == 1] = -1  # not split: no occurrence
    return found


# -- steps ---------------------------------------------------------------------------------------------


def _parts(pieces: pa.ListArray, boundaries: np.ndarray) -> tuple[pa.StringArray, pa.StringArray, np.ndarray]:
    """(prompts, steps, byte length of what follows the last tag), each trimmed of whitespace.

    A line's pieces (its input split at the tags) are its parts once the first piece is cut in
    two where "Step 1:" starts (boundaries): the prompt, the steps, and what follows the last tag.
    """
    lines = len(pieces)
    list_offsets = _list_offsets(pieces)
    piece_offsets, data = _spans(pieces.flatten())
    firsts = list_offsets[:-1]
    cuts = np.insert(piece_offsets, firsts + 1, piece_offsets[firsts] + boundaries)
    parts = pc.utf8_trim_whitespace(_ranges(data, cuts))
    prompt_at = firsts + np.arange(lines)  # each line has one part more than pieces
    last_at = list_offsets[1:] + np.arange(lines)
    is_step = np.ones(len(parts), dtype=bool)
    is_step[prompt_at] = is_step[last_at] = False
    lengths = np.diff(_buffer(parts)[0])
    return parts.take(prompt_at), parts.filter(is_step), lengths[last_at]


def _step_prefix_lengths(steps: pa.StringArray) -> np.ndarray:
    """Per step, the byte length of the "Step k:" it starts with (the regex ^Step \\d+:), else 0."""
    offsets, data = _buffer(steps)
    starts, ends = offsets[:-1], offsets[1:]
    padded = np.concatenate([data, np.zeros(1, np.uint8)])  # a 0 read past the end never matches

    def byte_at(column, rows):
        at = starts[rows] + column
        return np.where(at < ends[rows], padded[np.minimum(at, len(data))], 0)

    rows = np.arange(len(starts))
    for column, expected in enumerate(b"Step "):
        rows = rows[byte_at(column, rows) == expected]
    digits = np.zeros(len(rows), dtype=np.int64)
    reading = np.arange(len(rows))
    while len(reading):  # one pass per digit of the longest number
        found = byte_at(5 + digits[reading], rows[reading])
        reading = reading[(found >= ord("0")) & (found <= ord("9"))]
        digits[reading] += 1
    prefixed = (digits > 0) & (byte_at(5 + digits, rows) == ord(":"))
    lengths = np.zeros(len(starts), dtype=np.int64)
    lengths[rows[prefixed]] = 6 + digits[prefixed]
    return lengths


def _annotations(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the matches of CALCULATOR_ANNOTATION in data, as `re.finditer` finds them.

    A match is "<<", then bytes other than "<>=" up to an "=", then such bytes up to ">>": so it
    is five consecutive occurrences of the bytes "<", "=" or ">" (of UTF-8 characters, only
    these bytes are these characters): "<" and "<" adjacent, "=", ">" and ">" adjacent. Two
    matches never overlap (a "<<" inside one would need a "<" after its first two bytes).
    """
    special = np.flatnonzero((data - np.uint8(LT)) <= GT - LT)  # "<", "=" or ">"
    found = np.concatenate([data[special], np.zeros(4, np.uint8)])
    at = np.concatenate([special, np.full(4, -2)])
    count = len(special)
    first = np.flatnonzero((found[:count] == LT) & (found[1 : count + 1] == LT) & (at[1 : count + 1] == at[:count] + 1))
    matched = (found[first + 2] == EQ) & (found[first + 3] == GT) & (found[first + 4] == GT) & (at[first + 4] == at[first + 3] + 1)
    first = first[matched]
    return at[first], at[first + 4] + 1


def _without_annotations(steps: pa.StringArray) -> pa.StringArray:
    """The steps without GSM8K's <<a*b=c>>, as CALCULATOR_ANNOTATION.sub("", step) gives them.

    Each step is cut at the ends of its annotations into the segments kept (one more than its
    annotations), and the segments of each step are joined back.
    """
    offsets, data = _buffer(steps)
    starts, ends = _annotations(data)
    step_of = np.searchsorted(offsets[1:], starts, side="right")
    inside = ends <= offsets[1:][step_of]  # a match of the step alone, not one running into the next
    starts, ends, step_of = starts[inside], ends[inside], step_of[inside]
    if not len(starts):
        return steps
    before = np.concatenate([[0], np.cumsum(np.bincount(step_of, minlength=len(steps)))])  # annotations before each step
    # Step i: its start, the start and end of each of its annotations, its end; then step i + 1.
    cuts = np.empty(2 * len(steps) + 2 * len(starts), dtype=np.int64)
    step_range = np.arange(len(steps))
    cuts[2 * step_range + 2 * before[:-1]] = offsets[:-1]
    cuts[2 * step_range + 2 * before[1:] + 1] = offsets[1:]
    match_range = np.arange(len(starts))
    cuts[2 * step_of + 2 * match_range + 1] = starts
    cuts[2 * step_of + 2 * match_range + 2] = ends
    spans, buffer = _spans(steps)
    segments = _ranges(buffer, cuts + spans[0]).take(np.arange(0, len(cuts) - 1, 2))  # every other range is kept
    per_step = pa.ListArray.from_arrays(pa.array(np.arange(len(steps) + 1) + before, pa.int32()), segments)
    return pc.binary_join(per_step, "")


def _any_empty(step_offsets: np.ndarray, text_offsets: np.ndarray) -> np.ndarray:
    """Per line, whether any of its steps is empty."""
    empty = np.concatenate([[0], np.cumsum(np.diff(text_offsets) == 0)])
    return empty[step_offsets[1:]] > empty[step_offsets[:-1]]


# -- rows ----------------------------------------------------------------------------------------------


def _table(tasks: pa.ChunkedArray, ids: pa.Array, prompts, completions: pa.ListArray, labels: pa.ListArray) -> pa.Table:
    offsets = _list_offsets(labels)
    flat = np.asarray(labels.flatten())
    parent = np.repeat(np.arange(len(labels)), np.diff(offsets))
    index_in_row = np.arange(len(flat)) - offsets[parent]
    # First False per line: the smallest index among its False labels, -1 when there is none.
    first_false = np.full(len(labels), np.iinfo(np.int32).max, dtype=np.int64)
    np.minimum.at(first_false, parent[~flat], index_in_row[~flat])
    first_false[first_false == np.iinfo(np.int32).max] = -1
    last_steps = pc.take(completions.flatten(), _list_offsets(completions)[1:] - 1)
    # The final answer follows the last step's last ANSWER_PHRASE; a step without one has none.
    phrase_at = _last_occurrence(last_steps, ANSWER_PHRASE)
    lengths = np.diff(_buffer(last_steps)[0])
    final_answers = _tails(last_steps, np.where(phrase_at >= 0, phrase_at + len(ANSWER_PHRASE.encode()), lengths))
    return pa.Table.from_arrays(
        [
            ids,
            prompts,
            completions,
            labels,
            pa.array(first_false, pa.int32()),
            final_answers,
            pa.repeat("", len(labels)),
            pc.binary_join_element_wise("math_shepherd/", pc.utf8_lower(tasks), ""),
        ],
        schema=ROW_SCHEMA,
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
    return pa.concat_tables([table, pa.Table.from_pylist(rescued, schema=ROW_SCHEMA)])


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

