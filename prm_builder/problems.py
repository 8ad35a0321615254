"""The problems the configs that start from problems (`synthetic`, `model_sampled`) read.

One option value names them, the same way for both configs (`problem_files`): "gsm8k" (the Hub's
`openai/gsm8k` Parquet files, through the datasets download manager, so cached and resumable like
any Hub download), "sample" (the set bundled with the package, split into train and test),
"math500" (PRM800K's copy, verified), or a local path: a .jsonl file (its split is its name when
that is a split name, test.jsonl -> "test", else "train") or a folder of train/validation/test.jsonl.
Each config then reads the files as it needs them: `synthetic` GSM8K rows with their worked
solutions (`read_gsm8k_problems`), `model_sampled` `Problem`s (`load_problems`): text, reference
answer, grading style and the generation cache key.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from . import grading, prm800k_download
from .jsonl import LOCAL_SPLITS, read_objects, split_files, split_of

SAMPLE_PROBLEMS = Path(__file__).resolve().parent / "data" / "sample_problems.jsonl"
# The Hub's openai/gsm8k ("main" config), read as Parquet through the datasets download manager.
GSM8K_FILES = {
    split: f"https://huggingface.co/datasets/openai/gsm8k/resolve/main/main/{split}-00000-of-00001.parquet"
    for split in ("train", "test")
}
# One in SAMPLE_TEST_EVERY bundled sample problems is held out as its test split.
SAMPLE_TEST_EVERY = 6


def read_gsm8k_problems(path: str | Path, selection: str = "all") -> list[dict]:
    """GSM8K-layout problems (`index`, `question`, `answer`) of a jsonl or Parquet file.

    `selection` picks the bundled sample's train ("sample_train") or test ("sample_test") part.
    """
    path = str(path)
    if path.endswith(".parquet"):
        table = pq.read_table(path, columns=["question", "answer"])
        try:
            rows = table.to_pylist()
        except UnicodeDecodeError:  # Parquet strings are not checked when written or read
            raise ValueError(f"{path}, row {_first_row_not_utf8(table)}: expected UTF-8 text in 'question' and 'answer'") from None
        problems = [{"index": i, **row} for i, row in enumerate(rows)]
    else:
        problems = read_gsm8k_jsonl(path)
    _require_problems(path, problems, "'question' and 'answer'")
    if selection == "sample_test":
        return [p for p in problems if p["index"] % SAMPLE_TEST_EVERY == SAMPLE_TEST_EVERY - 1]
    if selection == "sample_train":
        return [p for p in problems if p["index"] % SAMPLE_TEST_EVERY != SAMPLE_TEST_EVERY - 1]
    return problems


def _first_row_not_utf8(table) -> int:
    """The 1-based number of the first row of `table` whose text is not UTF-8."""
    for number in range(1, table.num_rows + 1):
        try:
            table.slice(number - 1, 1).to_pylist()
        except UnicodeDecodeError:
            return number
    return 0


def read_gsm8k_jsonl(path: str | Path) -> list[dict]:
    """GSM8K-layout rows (`question`, `answer`) of a jsonl file, each with its 0-based `index`.

    A line that is not a JSON object or lacks a key raises an error naming the file and line.
    """
    problems = []
    for number, row in read_objects(path):
        missing = [key for key in ("question", "answer") if not isinstance(row.get(key), str)]
        if missing:
            raise ValueError(
                f"{path}, line {number}: expected string fields 'question' and 'answer', "
                f"missing or not a string: {', '.join(missing)}"
            )
        problems.append({"index": len(problems), "question": row["question"], "answer": row["answer"]})
    return problems


# -- which files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemFile:
    path: str
    selection: str = "all"  # "sample_train" or "sample_test": that part of the bundled sample


def problem_files(problems: str, dl_manager) -> dict[str, ProblemFile]:
    """split -> the file of `problems` ("gsm8k", "sample", "math500" or a local path; see above)."""
    if problems == "gsm8k":
        return {split: ProblemFile(path) for split, path in dl_manager.download(GSM8K_FILES).items()}
    if problems == "sample":
        return {split: ProblemFile(str(SAMPLE_PROBLEMS), f"sample_{split}") for split in ("train", "test")}
    if problems == "math500":
        files = prm800k_download.download_verified(dl_manager, {"math500": prm800k_download.MATH500_FILE})
        return {"test": ProblemFile(files["math500"])}
    path = Path(problems)
    if path.is_file():
        return {split_of(path): ProblemFile(str(path))}
    found = {split: ProblemFile(file) for split, file in split_files(path).items()}
    if not found:
        expected = ", ".join(f"{split}.jsonl" for split in LOCAL_SPLITS)
        raise FileNotFoundError(f"problems={problems!r}: expected {expected} in this folder, found none")
    return found


# -- problems for sampling (model_sampled) ---------------------------------------------------------

# Problem keys have a fixed length, so the generation cache can filter its lines without parsing them.
PROBLEM_KEY_LENGTH = 16


@dataclass(frozen=True)
class Problem:
    id: str  # stable row id prefix: "test-00012", or the source's own id ("test/precalculus/807.json")
    text: str
    reference: str
    style: str  # grading.NUMERIC for GSM8K-style references, grading.MATH otherwise
    key: str  # generation cache key: a hash of the text


def problem_key(text: str) -> str:
    """A problem's key: a hash of its text, so reordering or extending a problem file keeps its cache."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:PROBLEM_KEY_LENGTH]


def make_problem(problem_id: str, text: str, answer: str) -> Problem:
    """A problem from its text and answer; a GSM8K solution (`... #### 72`) is graded numerically."""
    if "####" in answer:
        reference, style = answer.rsplit("####", 1)[1].strip().replace(",", ""), grading.NUMERIC
    else:
        reference, style = answer.strip(), grading.MATH
    return Problem(problem_id, text, reference, style, problem_key(text))


def load_problems(problems: str, dl_manager) -> dict[str, list[Problem]]:
    """split -> the `Problem`s of `problems` (see `problem_files`)."""
    loaded = {}
    for split, file in problem_files(problems, dl_manager).items():
        if problems in ("gsm8k", "sample"):  # GSM8K's own rows: ids from their position in the whole set
            loaded[split] = _gsm8k_problems(split, read_gsm8k_problems(file.path, file.selection))
        else:
            loaded[split] = read_problem_file(file.path, split)
    return loaded


def _gsm8k_problems(split: str, rows: list[dict]) -> list[Problem]:
    return [make_problem(f"{split}-{row['index']:05d}", row["question"], row["answer"]) for row in rows]


def read_problem_file(path: str | Path, split: str) -> list[Problem]:
    """Problems of a .jsonl file: `question` or `problem`, `answer`, and optionally `unique_id`."""
    problems, seen = [], {}
    for number, row in read_objects(path):
        text = row.get("question", row.get("problem"))
        answer = row.get("answer")
        if not isinstance(text, str) or not isinstance(answer, str):
            raise ValueError(
                f"{path}, line {number}: expected a JSON object with a string 'question' (or 'problem') "
                f"and a string 'answer', got keys {sorted(row)}"
            )
        problem_id = str(row.get("unique_id") or f"{split}-{len(problems):05d}")
        if problem_id in seen:
            raise ValueError(f"{path}, line {number}: unique_id {problem_id!r} already used on line {seen[problem_id]}")
        seen[problem_id] = number
        problems.append(make_problem(problem_id, text, answer))
    _require_problems(path, problems, "'question' (or 'problem') and 'answer'")
    return problems


def _require_problems(path, problems: list, fields: str) -> None:
    # Else datasets would fail later with "Instruction 'train' corresponds to no data", naming no file.
    if not problems:
        raise ValueError(f"{path}: no problems in this file; expected one JSON object per line with {fields}")
