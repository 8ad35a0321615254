"""Keeping benchmark problems out of the rows: what the builder applies for every config's `exclude_problems`.

A row is dropped when its prompt, normalised (`normalize_problem`), is a problem of an excluded
set; the drop is counted as "contaminated:<set>". Sets are:
  - built in: "math500" (PRM800K's 500 held-out MATH test problems) and "gsm8k_test" (GSM8K's
    1,319 test problems), shipped inside the package as hashes of their normalised texts, so they
    work offline; "processbench" (Qwen/ProcessBench's 3,400 problems), downloaded from the Hub
    when asked for (its problems are not all in the other two sets: OlympiadBench and Omni-MATH);
  - a path to a .jsonl file, or a .json file holding a list, of objects with a "problem"
    (or "question", or "prompt") field;
  - for a list value, any other item is a problem text itself.
Which splits each set applies to, and the option's values, are exclude_option.py's. Only the
builder imports this module (tests/test_layout.py): a config never filters problems itself.
"""

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from .exclude_option import BUILTIN_SETS, is_path, sets_per_split
from .jsonl import read_objects

# Hashes of the normalised problems of the offline built-in sets (see `builtin_set_hashes`).
BUILTIN_HASHES_FILE = Path(__file__).resolve().parent / "data" / "benchmark_problems.jsonl"
PROCESSBENCH_FILES = {
    subset: f"https://huggingface.co/datasets/Qwen/ProcessBench/resolve/main/{subset}.json"
    for subset in ("gsm8k", "math", "olympiadbench", "omnimath")
}
PROBLEM_FIELDS = ("problem", "question", "prompt")
TEXTS_SET = "given_problems"
# Distinct prompts remembered per split: Math-Shepherd repeats each problem ~30 times.
MEMO_SIZE = 200_000


# -- normalisation ---------------------------------------------------------------------------------

# LaTeX that changes nothing of a problem: spacing commands, \left/\right, \dfrac/\tfrac for \frac.
_LATEX = re.compile(r"\\[,;:! ]|\\q?quad(?![a-zA-Z])|~|\\(?:left|right)(?![a-zA-Z])|\\[dt]frac(?![a-zA-Z])")
_THOUSANDS = re.compile(r"(?<=\d)(?:,|\{,\})(?=\d{3}(?!\d))")
_TRAILING_ZEROS = re.compile(r"(\d)\.(\d*?)0+(?!\d)")


# Characters that show nothing: every format character (Unicode category Cf: zero-width space
# U+200B, soft hyphen U+00AD, joiners, bidi controls, U+FEFF, tags; the ranges of Unicode 15), and
# invisible ones of other categories (combining grapheme joiner, Hangul fillers, braille blank,
# variation selectors). Visible whitespace of every kind (NBSP, thin and ideographic spaces) is
# removed with the rest of the whitespace in `normalize_problem`.
_INVISIBLE_BMP = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0\ufe00-\ufe0f"
)
_INVISIBLE_ASTRAL = (
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f\U000e0100-\U000e01ef"
)
_INVISIBLE = re.compile(f"[{_INVISIBLE_BMP}{_INVISIBLE_ASTRAL}]")
# Cyrillic and Greek letters drawn like Latin ones ("х" for "x"), as the Latin letter: a problem
# retyped with them is the same problem. Other scripts' look-alikes are not mapped (docs/mixtures.md).
_LOOKALIKE_LETTERS = "АВЕЅІЈКМНОРСТХУаеіјѕорсухһԁԛԝҮΑΒΕΖΗΙΚΜΝΟΡΤΥΧον"
_LOOKALIKES = str.maketrans(_LOOKALIKE_LETTERS, "ABESIJKMHOPCTXYaeijsopcyxhdqwYABEZHIKMNOPTYXov")
# The texts that may need either, found first in 1 µs per GSM8K problem: searching the class of
# _INVISIBLE takes 10 µs (its many ranges beyond U+FFFF), translate() 50 µs, max(text) 8 µs.
_SUSPECT = re.compile(f"[{_INVISIBLE_BMP}{_LOOKALIKE_LETTERS}\U00010000-\U0010ffff]")
_LOOKALIKE = re.compile(f"[{_LOOKALIKE_LETTERS}]")


def _latex_replacement(match: re.Match) -> str:
    return "\\frac" if match.group().endswith("frac") else " "


def normalize_problem(text: str) -> str:
    """The text with spacing, LaTeX spacing and number formatting made canonical.

    Invisible characters go, compatibility forms are unified (NFKC: fullwidth and mathematical
    letters, ligatures) and Cyrillic/Greek letters drawn like Latin ones read as Latin.

    "What is $1{,}000 \\cdot 2.50$?" and "What is $1000\\cdot 2.5$ ?" normalise alike. Whitespace
    is removed rather than collapsed, so "x + 1" and "x+1" match; two different problems would
    need the same characters in the same order to collide. Each step runs only when its
    characters occur: this is called once per distinct prompt of every build.
    """
    if not text.isascii():
        if _SUSPECT.search(text):
            text = _INVISIBLE.sub("", text)
            if _LOOKALIKE.search(text):
                text = text.translate(_LOOKALIKES)
        text = unicodedata.normalize("NFKC", text)
    if "\\" in text or "~" in text:
        text = _LATEX.sub(_latex_replacement, text)
    if "," in text:
        text = _THOUSANDS.sub("", text)
    if "." in text:
        text = _TRAILING_ZEROS.sub(lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), text)
    return "".join(text.split()).casefold()


def problem_hash(text: str) -> str:
    # surrogatepass: a lone surrogate from a JSON escape is hashed, not an error; valid text hashes as UTF-8
    return hashlib.sha1(normalize_problem(text).encode("utf-8", "surrogatepass")).hexdigest()[:16]


# -- loading the sets ------------------------------------------------------------------------------


class Excluder:
    """Which set, if any, a prompt belongs to; one per split."""

    def __init__(self, sets: dict[str, frozenset]):
        self.sets = sets
        self._memo: dict[str, str | None] = {}

    def __bool__(self) -> bool:
        return bool(self.sets)

    def match(self, prompt: str) -> str | None:
        """The name of the first set (in sorted order) holding the prompt's problem, or None."""
        if prompt in self._memo:
            return self._memo[prompt]
        digest = problem_hash(prompt)
        found = next((name for name, hashes in self.sets.items() if digest in hashes), None)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[prompt] = found
        return found

    def filter(self, rows: Iterable[dict], drops: Counter) -> Iterator[dict]:
        for row in rows:
            found = self.match(row["prompt"])
            if found is None:
                yield row
            else:
                drops[f"contaminated:{found}"] += 1

    def filter_table(self, table, drops: Counter):
        """The table without its contaminated rows, each prompt looked up once."""
        import pyarrow as pa
        import pyarrow.compute as pc

        prompts = table.column("prompt")
        distinct = pc.unique(prompts).to_pylist()
        found = [self.match(prompt) for prompt in distinct]
        if not any(found):
            return table
        names = pc.take(pa.array(found, pa.string()), pc.index_in(prompts, pa.array(distinct, pa.string())))
        for name, count in Counter(names.drop_null().to_pylist()).items():
            drops[f"contaminated:{name}"] += count
        return table.filter(pc.is_null(names))

    def __getstate__(self):  # the memo stays behind when a worker process gets a copy
        return {"sets": self.sets, "_memo": {}}


def excluders(value, splits: Iterable[str], dl_manager) -> dict[str, Excluder | None]:
    """{split: Excluder, or None when nothing is excluded from it}, loading each set once."""
    per_split = sets_per_split(value)
    loaded: dict[str, dict[str, frozenset]] = {}
    result = {}
    for split in splits:
        items = per_split.get(split, per_split.get("*", []))
        sets: dict[str, frozenset] = {}
        for item in items:
            for name, hashes in _load_item(item, items, dl_manager, loaded).items():
                sets[name] = sets.get(name, frozenset()) | hashes
        result[split] = Excluder(dict(sorted(sets.items()))) if sets else None
    return result


def _load_item(item: str, items: list[str], dl_manager, loaded: dict) -> dict[str, frozenset]:
    if item in loaded:
        return loaded[item]
    if item in ("math500", "gsm8k_test"):
        sets = {item: builtin_set_hashes()[item]}
    elif item == "processbench":
        sets = {item: _processbench_hashes(dl_manager)}
    elif is_path(item):
        sets = {Path(item).name: frozenset(problem_hash(p) for p in read_problems(item))}
    else:  # every problem text of the list counts under one name
        texts = [i for i in items if i not in BUILTIN_SETS and not is_path(i)]
        sets = {TEXTS_SET: frozenset(problem_hash(text) for text in texts)}
        for text in texts:
            loaded[text] = sets
    loaded[item] = sets
    return sets


def builtin_set_hashes() -> dict[str, frozenset]:
    sets = {}
    for _, row in read_objects(BUILTIN_HASHES_FILE):
        sets[row["set"]] = frozenset(row["hashes"])
    return sets


def read_problems(path: str) -> list[str]:
    """The problem texts of a .jsonl file, or of a .json file holding a list of objects."""
    numbered = list(read_objects(path)) if str(path).lower().endswith(".jsonl") else _json_list(path)
    problems = []
    for number, row in numbered:
        field = next((f for f in PROBLEM_FIELDS if isinstance(row, dict) and isinstance(row.get(f), str)), None)
        if field is None:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(
                f"exclude_problems file {path}, item {number}: expected an object with a string 'problem' "
                f"(or 'question', 'prompt') field, got {keys}"
            )
        problems.append(row[field])
    return problems


def _json_list(path: str) -> list[tuple[int, object]]:
    """(1-based position, item) of a .json file holding a list (as ProcessBench's files do)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        found = type(data).__name__
    except json.JSONDecodeError as error:
        data, found = None, f"invalid JSON ({error.msg})"
    except UnicodeDecodeError as error:
        data, found = None, f"bytes that are not UTF-8 text (0x{error.object[error.start]:02x} at byte {error.start})"
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of objects, got {found}")
    return list(enumerate(data, start=1))


def _processbench_hashes(dl_manager) -> frozenset:
    try:
        paths = dl_manager.download(PROCESSBENCH_FILES)
    except Exception as error:  # offline mode, no network, or the Hub refusing: all say the same to the user
        raise ConnectionError(
            "exclude_problems 'processbench' downloads Qwen/ProcessBench's problems from the Hub "
            f"({', '.join(PROCESSBENCH_FILES.values())}) and could not: {str(error).rstrip('.')}. Build once with "
            "network access (the files are then cached), or download the four .json files and pass their paths instead"
        ) from error
    return frozenset(problem_hash(problem) for path in paths.values() for problem in read_problems(path))


def write_builtin_hashes(math500_path: str, gsm8k_test_path: str, target: Path = BUILTIN_HASHES_FILE) -> None:
    """Regenerate the shipped hashes (after a change to `normalize_problem`) from MATH500 and GSM8K test.

    python -c "from prm_builder import decontamination as d; d.write_builtin_hashes('tests/data/math500/test.jsonl', 'tests/data/gsm8k/test.jsonl')"
    """
    with open(target, "w", encoding="utf-8") as handle:
        for name, path in (("math500", math500_path), ("gsm8k_test", gsm8k_test_path)):
            hashes = sorted({problem_hash(problem) for problem in read_problems(path)})
            handle.write(json.dumps({"set": name, "hashes": hashes}) + "\n")
