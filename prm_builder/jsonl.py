"""Reading JSON Lines input files, with errors that name the file and the line."""

import json
from collections.abc import Iterator
from pathlib import Path


def read_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line; anything but a JSON object is an error."""
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: expected a JSON object, got invalid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            yield number, row
