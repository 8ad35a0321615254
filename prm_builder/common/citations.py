"""BibTeX of the sources the configs convert, kept as data in data/citations.bib (one entry per paper)."""

import functools
import re
from pathlib import Path

BIB = Path(__file__).resolve().parents[1] / "data" / "citations.bib"
ENTRY = re.compile(r"^@\w+\{(?P<key>[^,]+),.*?^\}", re.MULTILINE | re.DOTALL)


@functools.cache
def _entries() -> dict[str, str]:
    return {match["key"]: match[0] for match in ENTRY.finditer(BIB.read_text(encoding="utf-8"))}


def citation(*keys: str) -> str:
    """The BibTeX entries of `keys`, one after the other."""
    return "\n".join(_entries()[key] for key in keys)
