"""Reading JSON Lines input files, with errors that name the file and the line; which split a local
file holds; byte ranges of large files, for configs that stream them in shards."""

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

# A \uD800-\uDFFF escape: JSON lets a line spell half of a surrogate pair, which json.loads turns
# into a str that is no text (Arrow cannot store it). Looked for only when such an escape is there.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def read_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line; anything but a JSON object is an error."""
    with open(path, "rb") as handle:
        for number, data in enumerate(handle, start=1):
            try:
                raw = data.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark is no content
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: expected UTF-8 text, got byte 0x{data[error.start]:02x} at column "
                    f"{error.start + 1}; save the file as UTF-8"
                ) from None
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: expected a JSON object, got invalid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            lone = lone_surrogate(data, row)
            if lone is not None:
                raise ValueError(
                    f"{path}, line {number}: expected UTF-8 text, got the escape {lone}, half of a surrogate pair "
                    f"(no character); fix the line or remove it"
                )
            yield number, row


def lone_surrogate(line: bytes, parsed) -> str | None:
    """The first surrogate escape of `line` that is not half of a pair, e.g. '\\ud800', when
    json.loads left one in `parsed`; else None.

    Paired escapes (an emoji written as two) are text; the check costs a byte search per line
    and parses nothing again unless the line has such an escape.
    """
    if b"\\u" not in line or not _SURROGATE_ESCAPE.search(line):
        return None
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    matches = list(_SURROGATE_ESCAPE.finditer(line))
    index = 0
    while index < len(matches):
        high = matches[index].group()[3:4].lower() in b"89ab"
        following = matches[index + 1] if index + 1 < len(matches) else None
        low_next = following is not None and following.start() == matches[index].end()
        if high and low_next and following.group()[3:4].lower() in b"cdef":
            index += 2
            continue
        return matches[index].group().decode("ascii").lower()
    return matches[0].group().decode("ascii").lower()


# A local file's split is its name when that is a split name (test.jsonl -> "test"), else "train".
LOCAL_SPLITS = ("train", "validation", "test")


def split_of(path: str | Path) -> str:
    stem = Path(path).stem
    return stem if stem in LOCAL_SPLITS else "train"


def split_files(folder: str | Path) -> dict[str, str]:
    """{split: path} of the `<split>.jsonl` files a folder holds, in LOCAL_SPLITS order."""
    folder = Path(folder)
    return {split: str(folder / f"{split}.jsonl") for split in LOCAL_SPLITS if (folder / f"{split}.jsonl").is_file()}


def byte_range_shards(paths: list[str], shard_bytes: int) -> list[tuple[str, int, int]]:
    """(path, start, end) byte ranges of about `shard_bytes`, each starting at a line start."""
    shards = []
    for path in paths:
        size = os.path.getsize(path)
        starts = [0]
        with open(path, "rb") as file:
            while starts[-1] + shard_bytes < size:
                file.seek(starts[-1] + shard_bytes)
                file.readline()  # move to the start of the next line
                if file.tell() >= size:
                    break
                starts.append(file.tell())
        shards += [(path, start, end) for start, end in zip(starts, starts[1:] + [size])]
    return shards
