"""The `exclude_problems` option of every config: its values, checked and made canonical, and
which sets each split excludes. Applying it is decontamination.py's, which the builder alone calls.

The option value says which splits are checked:
  - "default" (the default): math500 and gsm8k_test, on the train split only, so training data
    never holds an evaluation problem while a config's own test split (e.g. GSM8K's) stays whole;
  - a set ("math500", "gsm8k_test", "processbench", or a .jsonl/.json file), or a list of sets
    (other list items are problem texts): on every split;
  - a mapping {split: set or list of sets}: on those splits only;
  - "none" or [] (or None in Python; `load_dataset` drops options set to None, so pass "none"
    or [] there): nothing is excluded.
"""

import re
from pathlib import Path

BUILTIN_SETS = ("math500", "gsm8k_test", "processbench")
DEFAULT = "default"
DEFAULT_SETS = {"train": ["gsm8k_test", "math500"]}

_HELP = (
    "exclude_problems must be 'default', 'none' (or []), a built-in set ('math500', 'gsm8k_test', 'processbench'), "
    "a path to a .jsonl/.json file with a 'problem' field, a list of those (other list items are problem "
    "texts), or a mapping {split: any of those}"
)


def normalize_option(value):
    """The option value checked and made canonical (sorted lists), so equal choices share a cache."""
    if value is None or value == DEFAULT:
        return value
    if isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, dict):
        if not value or not all(isinstance(split, str) and split for split in value):
            raise ValueError(f"{_HELP}; a mapping needs split names as keys, got {value!r}")
        return {split: _normalize_items(items) for split, items in sorted(value.items())}
    items = _normalize_items(value)
    return items or None


def _normalize_items(value) -> list[str]:
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if value in BUILTIN_SETS or value.lower().endswith((".json", ".jsonl")):
            items = [value]
        else:  # "math500,gsm8k_test" from a command line
            items = [item.strip() for item in value.split(",") if item.strip()]
            if not items or not all(item in BUILTIN_SETS for item in items):
                raise ValueError(f"{_HELP}, got {value!r}: not a built-in set nor a .jsonl/.json path")
    elif isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, (str, Path)) for v in value):
        items = [str(v) for v in value]
    else:
        raise ValueError(f"{_HELP}, got {value!r}")
    for item in items:
        if item.lower().endswith((".json", ".jsonl")) and not Path(item).is_file():
            raise ValueError(f"{_HELP}, got {item!r}: no such file")
        if re.fullmatch(r"[a-z0-9_]+", item) and item not in BUILTIN_SETS:
            # A single lower-case word is a mistyped set name, not a problem text.
            raise ValueError(f"{_HELP}, got {item!r}: not a built-in set (valid: {', '.join(BUILTIN_SETS)})")
    return sorted(set(items))


def local_paths(value) -> list[str]:
    """The files an option value reads: their size and mtime join the cache key."""
    return [item for items in sets_per_split(value).values() for item in items if is_path(item)]


def sets_per_split(value) -> dict[str, list[str]]:
    """{split or "*": items}."""
    if value is None:
        return {}
    if value == DEFAULT:
        return DEFAULT_SETS
    if isinstance(value, dict):
        return value
    return {"*": value}


def is_path(item: str) -> bool:
    return item not in BUILTIN_SETS and item.lower().endswith((".json", ".jsonl")) and Path(item).is_file()
