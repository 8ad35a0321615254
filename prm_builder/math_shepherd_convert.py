"""Math-Shepherd lines to rows, column-wise: the conversion behind the `math_shepherd` config.

`convert` turns a table of lines (input, label, task) into rows with Arrow kernels and numpy
over whole columns; `line_row` does the same for one line in plain Python, and names the
reason a line does not parse. A line failing any column-wise check goes through `line_row`,
so both agree on every row and every drop (tests/test_math_shepherd.py checks the reasons).

Most of the column-wise work is arithmetic on byte offsets: a text is cut into parts (prompt,
steps) by listing where each part starts and ends in the one buffer holding all the texts,
and Arrow's kernels then trim or copy all parts at once. Arrow's regex kernels, which pay a
set-up per string, are not used: the step prefixes and the calculator annotations are found
with numpy from byte values and positions (`_step_prefix_lengths`, `_annotations`), and
`line_row`'s regexes define what they must find (the tests compare both on generated lines).
"""

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .drops import Dropped
from .features import CORE_FEATURES
from .options import PRMBuilderConfig

TAG = "ки"
MARKS = {"+": True, "-": False}
FIRST_STEP = "Step 1:"
ANSWER_PHRASE = "The answer is:"
# A label mark at the end of a step: what a tag becomes in `label` (only looked for on bad lines).
LABEL_MARK = re.compile(r"[+-](?=\n|$)")
FIELDS = ("input", "label", "task")
# GSM8K's calculator annotation, `<<48/2=24>>`, as Math-Shepherd's GSM8K solutions carry it: one `=`
# inside, so text like `<<not an annotation>>` is left alone.
CALCULATOR_ANNOTATION = re.compile(r"<<[^<>=]*=[^<>=]*>>")
# What strip_step_prefix removes from a step, with the space after it. ASCII digits only, as
# the column-wise reading of the prefix (_step_prefix_lengths) reads them.
STEP_PREFIX_AT_START = re.compile(r"Step [0-9]+:")
STEP_PREFIX = re.compile(rf"{STEP_PREFIX_AT_START.pattern}\s*")
ROW_SCHEMA = CORE_FEATURES.arrow_schema
LT, EQ, GT = b"<=>"


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
    # Lines with a NUL byte go through line_row, after the other rows of their range, as they did
    # when the label check used NUL as a tag's placeholder: the rows keep their order across versions.
    if len(text_bytes) and text_bytes.min() == 0:
        candidates &= ~np.asarray(pc.match_substring(inputs, "\0"))
    rows = np.flatnonzero(candidates)
    pieces = _taken(pieces, rows)
    marks, ok = _marks(pieces, _taken(labels, rows), tags[rows])
    # The problem ends where the first piece's last "Step 1:" starts.
    boundaries = _last_occurrence(pc.list_element(pieces, 0), FIRST_STEP)
    ok &= boundaries >= 0
    prompts, parts, step_rows, after_last_tag = _parts(pieces, np.maximum(boundaries, 0))
    ok &= after_last_tag == 0  # nothing but whitespace may follow the last tag
    if config.strip_step_prefix:
        steps = _tails(parts, step_rows, _step_prefix_lengths(parts, step_rows))
    else:
        steps = parts.take(step_rows)
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

    Every line here has a label exactly 3 bytes per tag shorter than its input (a tag is 4 UTF-8
    bytes, a mark 1). If the label is the input with its tags marked, its k-th mark follows the
    input's first k + 1 pieces and k marks; and the labels with those bytes cut out are the
    pieces, byte for byte (one comparison of two buffers for all lines).
    """
    list_offsets = _list_offsets(pieces)
    piece_offsets, piece_data = _spans(pieces.flatten())
    label_offsets, label_data = _spans(labels)
    tagged = np.ones(len(piece_offsets) - 1, dtype=bool)
    tagged[list_offsets[1:] - 1] = False  # a line's last piece has no tag after it
    piece = np.flatnonzero(tagged)
    first = list_offsets[np.repeat(np.arange(len(pieces)), tags)]  # the first piece of each mark's line
    mark_at = label_offsets[:-1].repeat(tags) + piece_offsets[piece + 1] - piece_offsets[first] + piece - first
    marks = np.frombuffer(label_data, dtype=np.uint8)[mark_at] if len(mark_at) else np.zeros(0, np.uint8)
    cuts = np.empty(2 * len(mark_at) + 2, dtype=np.int64)
    cuts[0], cuts[-1], cuts[1:-1:2], cuts[2:-1:2] = label_offsets[0], label_offsets[-1], mark_at, mark_at + 1
    unmarked_offsets, unmarked = _spans(_ranges(label_data, cuts).take(np.arange(0, len(cuts) - 1, 2)))
    text_bytes = piece_offsets[-1] - piece_offsets[0]
    same = text_bytes == 0 or unmarked.slice(unmarked_offsets[0], text_bytes).equals(piece_data.slice(piece_offsets[0], text_bytes))
    valid = (marks == ord("+")) | (marks == ord("-"))
    bad = np.zeros(len(pieces), dtype=bool)
    if not valid.all():
        bad[np.repeat(np.arange(len(pieces)), tags)[~valid]] = True
    if not same:  # which lines differ: count the differing bytes of each
        differs = _buffer(pieces.flatten())[1] != np.frombuffer(unmarked, np.uint8)[unmarked_offsets[0] : unmarked_offsets[-1]]
        before = np.concatenate([[0], np.cumsum(differs)])[piece_offsets[list_offsets] - piece_offsets[0]]
        bad |= np.diff(before) > 0
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


def _tails(strings: pa.StringArray, rows: np.ndarray, skip: np.ndarray) -> pa.StringArray:
    """strings[rows] (rows ascending), each without its first skip[i] bytes and trimmed of whitespace."""
    if not len(rows):
        return pa.array([], pa.string())
    offsets, data = _spans(strings)
    cuts = np.empty(2 * len(rows), dtype=np.int64)
    cuts[0::2], cuts[1::2] = offsets[rows] + skip, offsets[rows + 1]  # each tail, then what lies before the next
    return pc.utf8_trim_whitespace(_ranges(data, cuts).take(np.arange(0, len(cuts) - 1, 2)))


def _last_occurrence(strings: pa.StringArray, pattern: str) -> np.ndarray:
    """The byte index of the last `pattern` in each string, -1 where there is none.

    (A split at the last occurrence: Arrow's find_substring and count_substring are slower.)"""
    around = pc.split_pattern(strings, pattern, max_splits=1, reverse=True)
    heads = _list_offsets(around)[:-1]
    found = np.diff(_buffer(around.flatten())[0])[heads]  # the byte length of the text before it
    found[np.diff(_list_offsets(around)) == 1] = -1  # not split: no occurrence
    return found


# -- steps ---------------------------------------------------------------------------------------------


def _parts(pieces: pa.ListArray, boundaries: np.ndarray) -> tuple[pa.StringArray, pa.StringArray, np.ndarray, np.ndarray]:
    """(prompts, parts, which parts are steps, byte length of what follows the last tag), trimmed.

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
    return parts.take(prompt_at), parts, np.flatnonzero(is_step), lengths[last_at]


def _step_prefix_lengths(strings: pa.StringArray, rows: np.ndarray) -> np.ndarray:
    """Per string of rows, the byte length of the "Step k:" it starts with (STEP_PREFIX_AT_START), else 0.

    Read off each string's first 8 bytes as one integer: "Step k:" and "Step kk:" fit in them; the
    rare step with a longer number is left to the regex.
    """
    offsets, data = _buffer(strings)
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    padded = np.concatenate([data, np.zeros(8, np.uint8)])
    # The 8 bytes from each byte on (an empty step may start at the end), little-endian: an unaligned view.
    words = np.ndarray((len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))[starts]
    kept_bits = np.left_shift(np.uint64(1), 8 * np.minimum(lengths, 7).astype(np.uint64)) - np.uint64(1)
    words &= np.where(lengths >= 8, np.uint64(2**64 - 1), kept_bits)  # the bytes after a step are not its own
    byte = [(words >> np.uint64(8 * index)) & np.uint64(255) for index in (5, 6, 7)]
    digit = [(value - np.uint64(ord("0"))) < 10 for value in byte]  # below "0" wraps around to large
    colon = [value == ord(":") for value in byte]
    step_word = (words & np.uint64(2**40 - 1)) == int.from_bytes(b"Step ", "little")
    prefixes = np.where(step_word & digit[0] & colon[1], 7, np.where(step_word & digit[0] & digit[1] & colon[2], 8, 0))
    for index in np.flatnonzero(step_word & digit[0] & digit[1] & digit[2]):
        text = data[starts[index] : starts[index] + lengths[index]].tobytes().decode()
        prefix = STEP_PREFIX_AT_START.match(text)
        prefixes[index] = len(prefix.group()) if prefix else 0  # ASCII: as many bytes as characters
    return prefixes


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

    The steps lie end to end in one buffer: the bytes between the annotations are copied out
    in one `take`, and each step ends as many bytes earlier as annotations were cut before it.
    """
    offsets, data = _buffer(steps)
    starts, ends = _annotations(data)
    step_ends = offsets[1:][np.searchsorted(offsets[1:], starts, side="right")]
    inside = ends <= step_ends  # a match of the step alone, not one running into the next
    starts, ends = starts[inside], ends[inside]
    if not len(starts):
        return steps
    cuts = np.empty(2 * len(starts) + 2, dtype=np.int64)
    cuts[0], cuts[-1], cuts[1:-1:2], cuts[2:-1:2] = 0, offsets[-1], starts, ends
    base, buffer = _spans(steps)
    kept_offsets, kept = _spans(_ranges(buffer, cuts + base[0]).take(np.arange(0, len(cuts) - 1, 2)))
    cut_before = np.concatenate([[0], np.cumsum(ends - starts)])[np.searchsorted(ends, offsets, side="right")]
    return _ranges(kept, offsets - cut_before + kept_offsets[0])


def _any_empty(step_offsets: np.ndarray, text_offsets: np.ndarray) -> np.ndarray:
    """Per line, whether any of its steps is empty."""
    empty = np.concatenate([[0], np.cumsum(np.diff(text_offsets) == 0)])
    return empty[step_offsets[1:]] > empty[step_offsets[:-1]]


# -- rows ----------------------------------------------------------------------------------------------


def _table(tasks: pa.ChunkedArray, ids: pa.Array, prompts, completions: pa.ListArray, labels: pa.ListArray) -> pa.Table:
    offsets = _list_offsets(labels)
    flat = np.asarray(labels.flatten())
    # First False per line: the first False label at or after the line's first label, if in the line.
    false_at = np.concatenate([np.flatnonzero(~flat), [len(flat)]])
    first_false = false_at[np.searchsorted(false_at, offsets[:-1])]
    first_false = np.where(first_false < offsets[1:], first_false - offsets[:-1], -1)
    last_steps = pc.take(completions.flatten(), _list_offsets(completions)[1:] - 1)
    # The final answer follows the last step's last ANSWER_PHRASE; a step without one has none.
    phrase_at = _last_occurrence(last_steps, ANSWER_PHRASE)
    lengths = np.diff(_buffer(last_steps)[0])
    final_answers = _tails(last_steps, np.arange(len(last_steps)), np.where(phrase_at >= 0, phrase_at + len(ANSWER_PHRASE.encode()), lengths))
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
        except Dropped as error:
            drops[error.reason] += 1
            continue
        rescued.append({**row, "id": ids[index].as_py()})
    if not rescued:
        return table
    return pa.concat_tables([table, pa.Table.from_pylist(rescued, schema=ROW_SCHEMA)])


def line_row(config: PRMBuilderConfig, text: str, label: str, task: str) -> dict:
    """The row of one line (without its id); Dropped when the line does not parse."""
    pieces = text.split(TAG)
    if len(pieces) == 1:
        raise Dropped("no_tag")
    marks = _label_marks(pieces, label)
    if pieces[-1].strip():
        raise Dropped("text_after_last_tag")
    first = pieces[0]
    boundary = first.rfind(FIRST_STEP)
    if boundary < 0:
        raise Dropped("no_first_step")
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
            raise Dropped("empty_step")
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
    """The label's mark at each tag of the input; Dropped when label is not input with tags marked."""
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
    raise Dropped("label_text_differs" if same_count else "tag_label_count_mismatch")

