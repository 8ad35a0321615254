"""Reading JSON Lines input files, with errors that name the file and the line."""

import json
from collections.abc import Iterator
from pathlib import Path


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
            yield number, row
