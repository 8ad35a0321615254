"""Converting a large PRM800K-format file, against a plain `load_dataset("json", ...)` of it.

The file is made by repeating the real sample lines of --samples (default: the repository's
tests/data/prm800k/samples.jsonl) with unique labelers and timestamps up to --size-mb (default 460, the size of the real
phase2_train.jsonl). Every measurement runs in a fresh Python process with an empty datasets
cache (the file itself sits in the OS page cache for all of them alike); runs are interleaved
and the best of --repeats is kept, so a busy machine slows every run alike. Peak memory is
the maximum resident set size of the process (and of its largest worker with num_proc).

    python benchmarks/prm800k.py [--samples FILE] [--size-mb 460] [--repeats 2]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "prm800k" / "samples.jsonl"

# Runs in a fresh process: times one load_dataset call, then reports rows and peak memory.
MEASURE = """
import json, resource, sys, time
import datasets
from datasets.utils.logging import disable_progress_bar, set_verbosity_error
import prm_builder
disable_progress_bar(); set_verbosity_error()
run = json.loads(sys.argv[1])
start, start_cpu = time.perf_counter(), time.process_time()
if run["config"] == "json":
    built = datasets.load_dataset("json", data_files=run["path"], cache_dir=run["cache"], num_proc=run["num_proc"])
else:
    built = datasets.load_dataset("prm_builder", run["config"], data_files=run["path"], cache_dir=run["cache"],
                                  num_proc=run["num_proc"], **run["options"])
seconds = time.perf_counter() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "seconds": seconds,
    # CPU time of the call: all its threads, and worker processes (none ran before it).
    "cpu_seconds": time.process_time() - start_cpu + children.ru_utime + children.ru_stime,
    "rows": sum(len(split) for split in built.values()),
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""

# The sample lines repeated here are mostly MATH500 problems, which exclude_problems leaves out
# of a train split by default: turned off, so every line is converted.
ALL = {"exclude_problems": "none"}
RUNS = {
    "json (baseline)": ("json", {}, None),
    "prm800k": ("prm800k", ALL, None),
    "prm800k, num_proc=2": ("prm800k", ALL, 2),
    "prm800k alternatives": ("prm800k", {**ALL, "alternatives": True}, None),
    "prm800k alternatives, num_proc=2": ("prm800k", {**ALL, "alternatives": True}, 2),
}


def write_large_file(path: Path, size_mb: int, samples_path: Path = SAMPLES) -> tuple[int, int]:
    """Repeat the sample lines, each copy with its own labeler and timestamp, to at least size_mb."""
    samples = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    target, written, lines = size_mb * 1_000_000, 0, 0
    with path.open("w", encoding="utf-8") as file:
        while written < target:
            for sample in samples:
                text = json.dumps({**sample, "labeler": f"bench-{lines:09d}", "timestamp": f"copy-{lines}"}) + "\n"
                file.write(text)
                written += len(text.encode())
                lines += 1
    return lines, written


def measure(config: str, options: dict, num_proc: int | None, path: Path, cache: str) -> dict:
    run = {"config": config, "options": options, "num_proc": num_proc, "path": str(path), "cache": cache}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(run)], capture_output=True, text=True, check=False,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{config} {options} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=460, help="size of the generated file (at least 200)")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for every run")
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="PRM800K-format lines to repeat")
    args = parser.parse_args()
    if not args.samples.is_file():
        parser.error(
            f"--samples {args.samples}: no such file; expected PRM800K-format lines (the repository's "
            f"tests/data/prm800k/samples.jsonl, or a file of the real PRM800K)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "phase2_train_large.jsonl"
        lines, size = write_large_file(path, args.size_mb, args.samples)
        results: dict[str, list[dict]] = {name: [] for name in RUNS}
        for repeat in range(args.repeats):
            for name, (config, options, num_proc) in RUNS.items():
                cache = tempfile.mkdtemp(dir=tmp, prefix="cache-")
                results[name].append(measure(config, options, num_proc, path, cache))
                shutil.rmtree(cache)

    best = {name: min(runs, key=lambda r: r["seconds"]) for name, runs in results.items()}
    baseline = best["json (baseline)"]["seconds"]
    megabytes = size / 1e6
    print(f"{megabytes:,.0f} MB, {lines:,} lines, {os.cpu_count()} CPUs, best of {args.repeats}, fresh process and cache each run")
    print(f"{'run':<34} {'rows':>9} {'seconds':>8} {'MB/s':>7} {'x json':>7} {'peak MB':>8} {'worker MB':>10}")
    for name, r in best.items():
        worker = f"{r['worker_peak_mb']:,.0f}" if r["worker_peak_mb"] else "-"
        print(
            f"{name:<34} {r['rows']:>9,} {r['seconds']:>8.2f} {megabytes / r['seconds']:>7.1f} "
            f"{r['seconds'] / baseline:>7.2f} {r['peak_mb']:>8,.0f} {worker:>10}"
        )


if __name__ == "__main__":
    main()
