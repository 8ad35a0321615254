"""Every item a builder drops is counted by reason, logged, and kept beside the Arrow files.

Generation may run in several processes (`num_proc`), each writing its own small JSON file;
`load_drops` adds them up, so the builder logs one total per split, and the CLI and the dataset
card can report them after the fact, including on a cache hit where nothing is generated again.
Configs raise `Dropped(reason)` for an item they leave out, and count it where they catch it.
"""

import json
import os
import uuid
from collections import Counter
from pathlib import Path

from datasets.utils import logging

logger = logging.get_logger(__name__)

DROPS_DIRNAME = "prm_builder_drops"


class Dropped(ValueError):
    """An item left out of the rows (a line, a row, a solution, a corrupted copy); `reason` is what
    the drop counts call it, `detail` what a message naming the file and line adds."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail or reason


def describe_drops(counts: Counter, what: str = "items") -> str:
    """'dropped 12 items: 9 bad_problem, 3 malformed' (largest first), or '' when none."""
    total = sum(counts.values())
    if not total:
        return ""
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"dropped {total} {what}: {parts}"


def record(output_dir: str, split: str, counts: Counter) -> None:
    """Persist one generation job's drop counts for `split` (no-op when nothing was dropped).

    Not logged here: a split built by several jobs is reported once, summed (see load_drops).
    """
    if not sum(counts.values()):
        return
    folder = Path(output_dir) / DROPS_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    # One file per job: concurrent jobs never write the same file, and a rename makes each write atomic.
    target = folder / f"{split}-{uuid.uuid4().hex}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"split": split, "counts": dict(counts)}))
    os.replace(tmp, target)


def load_drops(dataset_dir: str | os.PathLike) -> dict[str, Counter]:
    """Drop counts per split recorded in a built (or saved) dataset folder; {} when none."""
    folder = Path(dataset_dir) / DROPS_DIRNAME
    totals: dict[str, Counter] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        entry = json.loads(path.read_text())
        totals.setdefault(entry["split"], Counter()).update(entry["counts"])
    return totals


def recorded_drops(dataset_dict) -> dict[str, Counter]:
    """Drop counts recorded beside the Arrow files a DatasetDict was loaded from ({} for in-memory data)."""
    for split in dataset_dict.values():
        if split.cache_files:
            return load_drops(Path(split.cache_files[0]["filename"]).parent)
    return {}


def save_drops(counts_per_split: dict[str, Counter], dataset_dir: str | os.PathLike) -> None:
    """Write merged drop counts into a saved dataset folder (one file per split)."""
    folder = Path(dataset_dir) / DROPS_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    for split, counts in counts_per_split.items():
        (folder / f"{split}-merged.json").write_text(json.dumps({"split": split, "counts": dict(counts)}))
