"""Problem sources shared by the configs that start from problems (`synthetic`, `model_sampled`).

GSM8K comes from the Hub's `openai/gsm8k` Parquet files (through the datasets download manager,
so it is cached and resumable like any Hub download), the bundled sample from the package, and
local copies in the GSM8K layout (`train.jsonl` / `test.jsonl` with `question` and `answer`).
"""

from pathlib import Path

import pyarrow.parquet as pq

from .jsonl import read_objects

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
        table = pq.read_table(path, columns=["question", "answer"]).to_pylist()
        problems = [{"index": i, **row} for i, row in enumerate(table)]
    else:
        problems = read_gsm8k_jsonl(path)
    if selection == "sample_test":
        return [p for p in problems if p["index"] % SAMPLE_TEST_EVERY == SAMPLE_TEST_EVERY - 1]
    if selection == "sample_train":
        return [p for p in problems if p["index"] % SAMPLE_TEST_EVERY != SAMPLE_TEST_EVERY - 1]
    return problems


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
