"""Converting a Math-Shepherd-size file with the `math_shepherd` config, against `load_dataset("json")`.

The file has as many lines as Math-Shepherd (445K by default), made from the 7 real lines of
tests/data/math_shepherd/samples.jsonl: line i puts the solution of one sample under problem
i // 30 (a sample's problem, numbered), so each problem has about 30 solutions as in
Math-Shepherd (which matters to exclude_problems, checked once per distinct problem); every
third line is marked task "MATH". Both runs
build the whole file into Arrow: `load_dataset("json")` its three string columns, the config
its rows. Every measurement runs in a fresh Python process with an empty datasets cache (the
file sits in the OS page cache for all alike); runs are interleaved and the best of --repeats
is kept (the measuring code is shared with benchmarks/prm800k.py).

    python benchmarks/math_shepherd.py [--lines 445000] [--repeats 3]

--stages instead prints the CPU time of each stage of both builds, run one after the other in
this process on one core: where the config's time goes beyond parsing the JSON.
"""

import argparse
import functools
import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prm800k import measure  # noqa: E402  (benchmarks/prm800k.py: one fresh process per run)

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "math_shepherd" / "samples.jsonl"
SOLUTIONS_PER_PROBLEM = 30
RUNS = {
    "json (baseline)": ("json", {}, None),
    "math_shepherd": ("math_shepherd", {}, None),
    "math_shepherd, num_proc=2": ("math_shepherd", {}, 2),
}


def write_large_file(path: Path, lines: int) -> int:
    """`lines` lines made of the samples; returns the file's size in bytes.

    Line i pairs problem i // 30 (a sample's problem text, numbered) with the solution of
    sample i % 7, so that, as in Math-Shepherd, each problem has about 30 solutions.
    """
    samples = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    split = [
        {key: sample[key].partition(" Step 1:") for key in ("input", "label")} for sample in samples
    ]  # (problem, " Step 1:", solution) of input and of label
    with path.open("w", encoding="utf-8") as file:
        for index in range(lines):
            number = index // SOLUTIONS_PER_PROBLEM
            problem = split[number % len(samples)]["input"][0]
            solution = split[index % len(samples)]
            row = {key: f"({number}) {problem} Step 1:{solution[key][2]}" for key in ("input", "label")}
            row["task"] = "MATH" if index % 3 == 2 else "GSM8K"
            file.write(json.dumps(row) + "\n")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=445_000, help="lines of the generated file")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for every run")
    parser.add_argument("--stages", action="store_true", help="CPU time per stage, in this process, instead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "math-shepherd-large.jsonl"
        size = write_large_file(path, args.lines)
        if args.stages:
            return print_stages(path, tmp)
        # Interleaved (json, math_shepherd, ... then again), so a busy machine slows all alike.
        timings = [(name, fresh_run(RUNS[name], path, tmp)) for _, name in itertools.product(range(args.repeats), RUNS)]
    best = {name: min((t for n, t in timings if n == name), key=lambda t: t["seconds"]) for name in RUNS}
    # CPU time of the call (all threads and workers) moves less with the machine's load than
    # wall time: its best of the repeats is shown beside it.
    cpu = {name: min(t["cpu_seconds"] for n, t in timings if n == name) for name in RUNS}
    baseline, baseline_cpu = best["json (baseline)"]["seconds"], cpu["json (baseline)"]
    header = f"{size / 1e6:,.0f} MB, {args.lines:,} lines, {os.cpu_count()} CPUs, best of {args.repeats}"
    rows = [f"{name:<28} {t['rows']:>9,} {t['seconds']:>8.2f} {t['seconds'] / baseline:>7.2f} "
            f"{cpu[name]:>8.2f} {cpu[name] / baseline_cpu:>7.2f} {t['peak_mb']:>8,.0f}"
            for name, t in best.items()]  # fmt: skip
    columns = f"{'run':<28} {'rows':>9} {'seconds':>8} {'x json':>7} {'CPU s':>8} {'x json':>7} {'peak MB':>8}"
    print("\n".join([header, columns, *rows]))


def print_stages(path: Path, tmp: str) -> None:
    """Each stage of both builds over the whole file, one after the other on one core."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json
    from datasets.arrow_writer import ArrowWriter

    from prm_builder import decontamination, exclude_option, math_shepherd, math_shepherd_convert
    from prm_builder.features import CORE_FEATURES
    from prm_builder.jsonl import byte_range_shards

    pa.set_cpu_count(1)
    spent = Counter()

    def timed(stage, work):
        start = time.process_time()
        result = work()
        spent[stage] += time.process_time() - start
        return result

    config = math_shepherd.MathShepherdConfig(name="math_shepherd")
    excluder = decontamination.excluders(exclude_option.DEFAULT, ["train"], None)["train"]
    writer = ArrowWriter(features=CORE_FEATURES, path=f"{tmp}/config.arrow")
    for _, start, end in byte_range_shards([str(path)], math_shepherd.SHARD_BYTES):
        drops = Counter()
        read = functools.partial(math_shepherd._records, path, start, end, drops)
        records, offsets = timed("config: read, parse, line offsets", read)
        ids = pc.binary_join_element_wise("train/0/", pc.cast(offsets, pa.string()), "")
        rows = timed("config: conversion", lambda: math_shepherd_convert.convert(config, records, ids, drops))
        rows = timed("config: exclude_problems", lambda: excluder.filter_table(rows, drops))
        timed("config: write", lambda: writer.write_table(rows))
        with open(path, "rb") as file:
            file.seek(start)
            block = file.read(end - start)
        timed("  of which the JSON parse alone", lambda: math_shepherd._parse_block(block))
    timed("config: write", writer.finalize)
    writer = ArrowWriter(path=f"{tmp}/json.arrow")
    with open(path, "rb") as file:  # as datasets' json builder reads: 10 MB chunks, 320 KB blocks
        while batch := timed("json: read", lambda: file.read(10 << 20)):
            batch += file.readline()
            blocks = pa_json.ReadOptions(block_size=320 << 10)
            table = timed("json: parse", lambda: pa_json.read_json(io.BytesIO(batch), read_options=blocks))
            timed("json: write", lambda: writer.write_table(table))
    timed("json: write", writer.finalize)
    print("\n".join(f"{stage:<36} {seconds:>6.2f} s" for stage, seconds in spent.items()))


def fresh_run(run: tuple, path: Path, tmp: str) -> dict:
    """One measurement in a fresh process with an empty datasets cache."""
    config, options, num_proc = run
    cache = tempfile.mkdtemp(dir=tmp, prefix="cache-")
    try:
        return measure(config, options, num_proc, path, cache)
    finally:
        shutil.rmtree(cache)

if __name__ == "__main__":
    main()
