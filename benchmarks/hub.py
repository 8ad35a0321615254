"""What publishing costs on top of writing the Parquet files: export of the full synthetic config.

The baseline is the least any publish does, writing each split to Parquet with `Dataset.to_parquet`.
`export_to_folder` writes exactly what `prm-builder push` uploads (the same Parquet, the plot and the
merged card); the card and the plot are also timed alone. All in this process, on the same built
splits (the GSM8K problems of --gsm8k x 3 corrupted copies, built once before timing; the
repository's tests/data/gsm8k by default, all of GSM8K with --gsm8k pointing at a full copy).

    python benchmarks/hub.py [--gsm8k tests/data/gsm8k] [--repeats 3]
"""

import argparse
import tempfile
import timeit
from pathlib import Path

from datasets import load_dataset
from datasets.utils.logging import disable_progress_bar, set_verbosity_error

import prm_builder  # noqa: F401 - registers the builder
from prm_builder.publishing import card, hub
from prm_builder.common.drops import recorded_drops
from prm_builder.publishing.stats import plot_distributions

DEFAULT_GSM8K = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k"


def parquet_only(dataset, folder: str) -> None:
    for split, data in dataset.items():
        data.to_parquet(f"{folder}/{split}.parquet")


def export(dataset, folder: str, options: dict) -> None:
    hub.export_to_folder(dataset, folder, "synthetic", repo_id="me/math-prm", options=options)


def card_only(dataset, options: dict) -> None:
    resolved = card.resolved_options("synthetic", options)
    card.render_section(dataset, "synthetic", "me/math-prm", resolved, recorded_drops(dataset), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of N for every measurement")
    parser.add_argument("--gsm8k", type=Path, default=DEFAULT_GSM8K, help=f"GSM8K folder (default: {DEFAULT_GSM8K})")
    args = parser.parse_args()
    set_verbosity_error(), disable_progress_bar()  # the timings, not the progress bars

    # Named folders: something on shared machines sweeps bare /tmp/tmp* folders mid-run.
    named = {"prefix": "prm_bench_hub_"}
    with tempfile.TemporaryDirectory(**named) as cache, tempfile.TemporaryDirectory(**named) as out:
        options = {"problems": str(args.gsm8k)}
        dataset = load_dataset("prm_builder", "synthetic", cache_dir=cache, **options)
        rows = sum(len(split) for split in dataset.values())
        runs = {
            "to_parquet per split (baseline)": lambda: parquet_only(dataset, out),
            # Every repeat after the first also merges into the card the previous one wrote.
            "export_to_folder (what push uploads)": lambda: export(dataset, f"{out}/export", options),
            "card alone (summary + render)": lambda: card_only(dataset, options),
            "plot alone": lambda: plot_distributions(dataset, f"{out}/plot.png"),
        }
        results = {name: min(timeit.repeat(run, number=1, repeat=args.repeats)) for name, run in runs.items()}

    baseline = results["to_parquet per split (baseline)"]
    print(f"synthetic on the GSM8K problems of {args.gsm8k}: {rows:,} rows, best of {args.repeats}")
    print(f"{'run':<40} {'seconds':>9} {'x baseline':>11}")
    for name, seconds in results.items():
        print(f"{name:<40} {seconds:>9.3f} {seconds / baseline:>11.2f}")


if __name__ == "__main__":
    main()
