"""Scoring throughput of `score_steps` (what prm-eval and PRMReward run): batches sorted by length against batches in
file order, same model, same rows, same run.

    python benchmarks/scoring.py                       # 800 shuffled synthetic rows, batch 16, 3 interleaved repeats
    python benchmarks/scoring.py --rows 2000 --batch-size 32 --repeats 5

The baseline scores the rows in consecutive batches of the file's order (what a plain DataLoader does); the measured
path sorts all rows by length first, so each batch pads little. The model is the tests' tiny Qwen2 with a 2-label head,
built here (no network); the rows come from the `synthetic` config over tests/data/gsm8k. Reported: the fastest of the
repeats for each, in wall time and in CPU time of the process (steadier on a shared machine), and the ratios. The
scores of both orders are checked equal, so only the speed differs.
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

TEST_GSM8K = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import datasets
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    import prm_builder  # noqa: F401  (registers the builder)
    from prm_builder.tiny_model import build_tiny_model
    from prm_trainer.evaluating.evaluation import score_steps
    from prm_trainer.common.tokenization import StepFormat

    with tempfile.TemporaryDirectory() as folder:
        build_tiny_model(Path(folder))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        torch.manual_seed(0)
        model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=2).eval()
        rows = datasets.load_dataset(
            "prm_builder", name="synthetic", problems=str(TEST_GSM8K), max_examples=args.rows,
            cache_dir=str(Path(folder, "cache")),
        )["train"]
        rows = list(rows)
        random.Random(0).shuffle(rows)

        def by_length():
            return score_steps(model, tokenizer, rows, StepFormat("\n"), batch_size=args.batch_size)

        def in_file_order():
            scores = []
            for start in range(0, len(rows), args.batch_size):
                chunk = rows[start : start + args.batch_size]
                scores += score_steps(model, tokenizer, chunk, StepFormat("\n"), batch_size=args.batch_size)
            return scores

        best, results = {}, {}
        for _ in range(args.repeats):
            for name, run in (("file order (baseline)", in_file_order), ("sorted by length", by_length)):
                wall, cpu = time.perf_counter(), time.process_time()
                results[name] = run()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                previous = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(previous[0], wall), min(previous[1], cpu))
        first, second = results.values()
        assert all(a == b or abs(a - b) < 1e-5 for x, y in zip(first, second) for a, b in zip(x, y))

    base_wall, base_cpu = best["file order (baseline)"]
    print(f"{len(rows)} rows, batch {args.batch_size}, best of {args.repeats}\n")
    print(f"{'batching':<24}{'wall s':>8}{'rows/s':>8}{'speed-up':>10}{'CPU s':>8}{'speed-up':>10}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<24}{wall:>8.2f}{len(rows) / wall:>8.1f}{base_wall / wall:>9.2f}x{cpu:>8.2f}{base_cpu / cpu:>9.2f}x")


if __name__ == "__main__":
    main()
