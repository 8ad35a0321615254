"""Reading JSON Lines input files, with errors that name the file and the line."""

import json
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
