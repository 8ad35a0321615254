"""Cold build of all of GSM8K x 3 corrupted copies through load_dataset, against the naive recipe.

The naive recipe is what hand-rolled scripts do: read the jsonl, split steps, make 3 copies per
problem with one number bumped in a random step (no propagation), Dataset.from_list, save_to_disk.
Both run in this process, on the same files, each with an empty cache; before every cold build
the builder's memoized arithmetic is emptied too, as it is in the fresh process a user builds in.
CPU seconds (this process and its finished workers) are steadier than wall seconds on a shared machine.

    python benchmarks/synthetic.py [--gsm8k tests/data/gsm8k] [--repeats 3]
"""

import argparse
import json
import logging
import os
import random
import re
import tempfile
import time
from pathlib import Path

from datasets import Dataset, load_dataset
from datasets.utils.logging import disable_progress_bar, set_verbosity_error

import prm_builder  # noqa: F401 - registers the builder
from prm_builder import arithmetic, corruptions
from prm_builder.gsm8k import visible_text

DEFAULT_GSM8K = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k"


def naive_recipe(gsm8k: Path, output: str) -> int:
    rng = random.Random(0)
    rows = []
    for split in ("train", "test"):
        for line in (gsm8k / f"{split}.jsonl").read_text().splitlines():
            problem = json.loads(line)
            body, _, final = problem["answer"].partition("####")
            steps = [re.sub(r"<<[^>]*>>", "", s).strip() for s in body.split("\n") if s.strip()]
            steps.append(f"The answer is: {final.strip()}")
            rows.append({"prompt": problem["question"], "completions": steps, "labels": [True] * len(steps)})
            for _ in range(3):
                bad = rng.randrange(len(steps))
                copy = list(steps)
                copy[bad] = re.sub(r"\d+", lambda m: str(int(m.group()) + 1), copy[bad], count=1)
                rows.append({"prompt": problem["question"], "completions": copy, "labels": [i < bad for i in range(len(steps))]})
    Dataset.from_list(rows).save_to_disk(output)
    return len(rows)


def ours(gsm8k_dir: Path, cache: str, num_proc: int | None, mode=None) -> int:
    built = load_dataset(
        "prm_builder", "synthetic", problems=str(gsm8k_dir), cache_dir=cache, num_proc=num_proc, download_mode=mode
    )
    return sum(len(split) for split in built.values())


def cold(gsm8k_dir: Path, cache: str, num_proc: int | None) -> int:
    for memoized in (
        arithmetic.evaluate, arithmetic.parse_decimal, arithmetic.format_number, visible_text, corruptions._digit_variants_of
    ):
        memoized.cache_clear()
    return ours(gsm8k_dir, cache, num_proc)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed(function, *args, **kwargs) -> tuple[float, float, int]:
    start, start_cpu = time.perf_counter(), cpu_seconds()
    rows = function(*args, **kwargs)
    return time.perf_counter() - start, cpu_seconds() - start_cpu, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", type=Path, default=DEFAULT_GSM8K, help="a folder with GSM8K's train.jsonl and test.jsonl")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for every measurement")
    args = parser.parse_args()
    disable_progress_bar()
    set_verbosity_error()
    # The builder logs its drop totals as warnings; the table is what this script is for.
    logging.getLogger("prm_builder").setLevel(logging.ERROR)

    results: dict[str, list[tuple[float, float, int]]] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            results.setdefault("naive recipe (baseline)", []).append(timed(naive_recipe, args.gsm8k, f"{tmp}/naive"))
            results.setdefault("prm_builder cold, num_proc=1", []).append(timed(cold, args.gsm8k, f"{tmp}/c1", None))
            results.setdefault("prm_builder cached reload", []).append(timed(ours, args.gsm8k, f"{tmp}/c1", None))
            results.setdefault("prm_builder cold, num_proc=2", []).append(timed(cold, args.gsm8k, f"{tmp}/c2", 2))

    baseline = min(t for t, _, _ in results["naive recipe (baseline)"])
    baseline_cpu = min(c for _, c, _ in results["naive recipe (baseline)"])
    print(f"GSM8K from {args.gsm8k}, best of {args.repeats} (wall and CPU seconds each their own best)")
    print(f"{'run':<32} {'rows':>8} {'seconds':>9} {'rows/s':>10} {'x naive':>8} {'CPU s':>8} {'CPU x naive':>12}")
    for name, runs in results.items():
        seconds, rows = min(t for t, _, _ in runs), runs[0][2]
        cpu = min(c for _, c, _ in runs)
        print(
            f"{name:<32} {rows:>8,} {seconds:>9.3f} {rows / seconds:>10,.0f} {seconds / baseline:>8.2f} "
            f"{cpu:>8.3f} {cpu / baseline_cpu:>12.2f}"
        )


if __name__ == "__main__":
    main()
