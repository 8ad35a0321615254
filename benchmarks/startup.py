"""Start-up time of the command lines: `--help` of each console script, best of N runs.

    python benchmarks/startup.py [--repeats 5]

Prints seconds per command and the ratio to a bare `python -c pass` measured in the same run
(the interpreter's own start-up), so figures from machines of different speed compare.
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "prm-builder --help": [str(BIN / "prm-builder"), "--help"],
    "prm-train --help": [str(BIN / "prm-train"), "--help"],
    "prm-eval --help": [str(BIN / "prm-eval"), "--help"],
}


def best_of(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    baseline = None
    print(f"| command | best of {args.repeats} (s) | x python start-up |")
    print("| --- | ---: | ---: |")
    for name, command in COMMANDS.items():
        if not Path(command[0]).exists() and not shutil.which(command[0]):
            print(f"| {name} | not installed | |")
            continue
        seconds = best_of(command, args.repeats)
        baseline = baseline or seconds
        print(f"| {name} | {seconds:.3f} | {seconds / baseline:.1f}x |")


if __name__ == "__main__":
    main()
