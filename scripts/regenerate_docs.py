"""Run the docs' runnable blocks and rewrite the outputs the docs show, in place.

    python scripts/regenerate_docs.py                  # every page
    python scripts/regenerate_docs.py docs/trainer.md  # some pages
    python scripts/regenerate_docs.py --check          # change nothing; exit 1 when a shown output is stale

The conventions, shared with tests/test_docs.py (which imports this file):

- `<!-- runnable -->` on the line above a ```bash fence marks a block the tests run. The blocks of one page run in
  order in one fresh folder (a later block uses what an earlier one built), offline, with `$TEST_DATA` pointing at
  tests/data and the project's console scripts on PATH.
- `<!-- output -->` on the line above a fence marks what the nearest runnable block above it prints on stdout (the
  block redirects stderr into it with `2>&1` where the page wants to show a message). The fence's content is
  compared with that, line for line, after `normalize`.
- A line `...` alone in a shown output stands for any number of lines (zero included): a page can show the head and
  the tail of a long output. Regenerating keeps the elision: each shown stretch between `...` lines is replaced by
  the stretch of the new output that looks most like it (same words, numbers aside), as many lines as before.

Only what differs between machines and runs is normalized before comparing: the absolute paths of the temporary
folder the blocks run in (shown as `/home/you/work`) and of their caches (shown as `~/.cache/huggingface`), and
timings (`12.3 s`, `0.01s`, `00:03`, rows/s figures, `train_runtime` and friends, on both sides). Numbers from the
seeded tiny model on CPU are compared as they are: a change that moves them must regenerate the docs. A shown output
that still matches is left as it is (its timings included); one that does not is rewritten from this run.
"""

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
# Where the docs say the blocks ran; the real (temporary) folder is replaced by this in every output.
SHOWN_WORK_DIR = "/home/you/work"
ELISION = "..."
BLOCK_TIMEOUT_S = 300

FENCE = re.compile(r"^(`{3,})(\S*)\s*$")
RUNNABLE_MARK = "<!-- runnable -->"
OUTPUT_MARK = "<!-- output -->"
# Timings: "3.2 s", "0.01s", "12 ms", tqdm's "00:03<00:00" and "328.95row/s", "it/s"; HF Trainer's runtime metrics.
TIMINGS = [
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s)\b"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:[a-z]+/s|s/[a-z]+)\b"), "<rate>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"), "<clock>"),
    (re.compile(r"('(?:train|eval)_(?:runtime|samples_per_second|steps_per_second)': )'?[\d.e+-]+'?"), r"\1<time>"),
    (re.compile(r'("(?:train|eval)_(?:runtime|samples_per_second|steps_per_second)": )[\d.e+-]+'), r"\1<time>"),
]


def pages() -> list[Path]:
    """The pages with runnable blocks: README.md and docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Shown:
    """A shown output: the lines of its fence's content (`start` is the index of its first line in the page)."""

    start: int
    lines: list[str]


@dataclass
class Block:
    """A runnable block, its number on the page (from 1), its code and the outputs shown for it."""

    number: int
    code: str
    line: int  # 1-based line of its fence, for messages
    shown: list[Shown] = field(default_factory=list)


def parse(text: str, where: str = "page") -> list[Block]:
    """The runnable blocks of a page, each with its shown outputs. Markers inside fences are text, not markers."""
    lines = text.split("\n")
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence.group(1):
            end += 1
        if end == len(lines):
            raise ValueError(f"{where}:{index + 1}: a ``` fence is never closed")
        mark = lines[index - 1].strip() if index else ""
        if mark == RUNNABLE_MARK:
            if fence.group(2) not in ("bash", "sh"):
                raise ValueError(
                    f"{where}:{index + 1}: {RUNNABLE_MARK} expects a ```bash fence, found {lines[index]!r}"
                )
            blocks.append(Block(len(blocks) + 1, "\n".join(lines[index + 1 : end]) + "\n", index + 1))
        elif mark == OUTPUT_MARK:
            if not blocks:
                raise ValueError(f"{where}:{index + 1}: {OUTPUT_MARK} with no runnable block above it")
            blocks[-1].shown.append(Shown(index + 1, lines[index + 1 : end]))
        index = end + 1
    return blocks


def block_env(work: Path, home: Path) -> dict:
    """The environment the blocks run in: offline, caches under `home`, the console scripts of this Python first."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TEST_DATA": str(TEST_DATA),
        "HF_HOME": str(home / "hf_home"),
        "HF_DATASETS_CACHE": str(home / "hf_datasets_cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "120",  # argparse and friends wrap at the terminal width
        "PWD": str(work),
    }


@dataclass
class Run:
    """What one block did: its exit status, stdout (the work folder's path replaced) and stderr."""

    block: Block
    returncode: int
    stdout: str
    stderr: str


def shown_paths(work: Path, home: Path) -> list[tuple[str, str]]:
    """(path on this machine, how the docs show it): the temporary folders the blocks run with, as a user's default
    folders would read. Longest first, so that a folder inside another is replaced as itself."""
    pairs = {
        home / "hf_datasets_cache": "~/.cache/huggingface/datasets",
        home / "hf_home": "~/.cache/huggingface",
        work: SHOWN_WORK_DIR,
    }
    expanded = {str(variant): shown for path, shown in pairs.items() for variant in (path, path.resolve())}
    return sorted(expanded.items(), key=lambda pair: -len(pair[0]))


def run_blocks(blocks: list[Block], work: Path, home: Path) -> list[Run]:
    """Run the blocks in order in `work`; stop after the first that fails (the next ones would need its output)."""
    env = block_env(work, home)
    runs = []
    for block in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S,
        )
        stdout = result.stdout
        for real, shown in shown_paths(work, home):
            stdout = stdout.replace(real, shown)
        runs.append(Run(block, result.returncode, stdout, result.stderr))
        if result.returncode != 0:
            break
    return runs


def normalize(line: str) -> str:
    """A line with what differs between machines and runs (timings) replaced by placeholders; trailing blanks off."""
    for pattern, replacement in TIMINGS:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def output_lines(stdout: str) -> list[str]:
    lines = stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    return [line.rstrip() for line in lines]


def matches(shown: list[str], actual: list[str]) -> bool:
    """Whether `actual` is what `shown` shows: equal line for line after `normalize`, `...` standing for any lines."""
    shown = [normalize(line) for line in shown]
    actual = [normalize(line) for line in actual]
    segments = _segments(shown)
    if len(segments) == 1:
        return segments[0] == actual
    # Anchored at both ends unless the shown output starts or ends with `...` (an empty first or last segment).
    first, *middle, last = segments
    if actual[: len(first)] != first or len(actual) < len(first) + len(last):
        return False
    if last and actual[len(actual) - len(last) :] != last:
        return False
    position, end = len(first), len(actual) - len(last)
    for segment in middle:
        found = _find(actual, segment, position, end)
        if found is None:
            return False
        position = found + len(segment)
    return True


def _segments(lines: list[str]) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    for line in lines:
        if line.strip() == ELISION:
            segments.append([])
        else:
            segments[-1].append(line)
    return segments


def _find(lines: list[str], segment: list[str], start: int, end: int) -> int | None:
    for position in range(start, end - len(segment) + 1):
        if lines[position : position + len(segment)] == segment:
            return position
    return None


def _shape(line: str) -> str:
    """A line's words with its numbers blanked: what stays when a change only moves figures."""
    return re.sub(r"\d+(?:\.\d+)?", "#", normalize(line))


def regenerate(shown: list[str], actual: list[str]) -> tuple[list[str], list[str]]:
    """The new content of a shown output, and warnings about stretches that no longer look like anything printed.

    Without `...`, the whole output. With it, each shown stretch is replaced by the stretch of `actual` (in order,
    as long as before) whose lines look most like it, numbers aside; a leading or trailing `...` is kept, so a page
    that shows the head (or the tail) of an output still does.
    """
    if matches(shown, actual):
        return shown, []
    segments = _segments(shown)
    if len(segments) == 1:
        return list(actual), []
    new: list[str] = []
    warnings: list[str] = []
    position = 0
    last = len(segments) - 1
    for number, segment in enumerate(segments):
        if number:
            new.append(ELISION)
        if not segment:
            continue
        size = len(segment)
        if number == 0:
            start = 0
        elif number == last:
            start = max(position, len(actual) - size)
        else:
            start = _best_stretch(actual, segment, position, len(actual) - sum(len(s) for s in segments[number + 1 :]))
        stretch = actual[start : start + size]
        score = difflib.SequenceMatcher(None, [_shape(x) for x in segment], [_shape(x) for x in stretch]).ratio()
        if score < 0.5:
            warnings.append(f"the stretch starting {segment[0]!r} now reads {stretch[:1]!r}: check it")
        new.extend(stretch)
        position = start + len(stretch)
    return new, warnings


def _best_stretch(actual: list[str], segment: list[str], start: int, end: int) -> int:
    shapes = [_shape(line) for line in segment]
    best, best_score = start, -1.0
    for position in range(start, max(start, end - len(segment)) + 1):
        candidate = [_shape(line) for line in actual[position : position + len(segment)]]
        score = difflib.SequenceMatcher(None, shapes, candidate).ratio()
        if score > best_score:
            best, best_score = position, score
    return best


def stale(page: Path, runs: list[Run]) -> list[str]:
    """One message per shown output of `page` that is not what its block printed, with a diff."""
    messages = []
    for run in runs:
        actual = output_lines(run.stdout)
        for shown in run.block.shown:
            if not matches(shown.lines, actual):
                diff = "\n".join(difflib.unified_diff(
                    shown.lines, actual, f"{page.name}:{shown.start + 1} (shown)",
                    f"block {run.block.number} (printed)", lineterm="", n=2,
                ))
                messages.append(f"{page.name}:{shown.start}: the output shown for runnable block {run.block.number} "
                                f"(line {run.block.line}) is not what it prints:\n{diff}")
    return messages


def rewrite(text: str, runs: list[Run]) -> tuple[str, list[str]]:
    """`text` with every shown output of the blocks that ran replaced by what they printed; and warnings."""
    lines = text.split("\n")
    warnings = []
    # From the bottom up, so that the start lines of the outputs above stay right.
    replacements = [(shown, run) for run in runs if run.returncode == 0 for shown in run.block.shown]
    for shown, run in sorted(replacements, key=lambda pair: -pair[0].start):
        new, notes = regenerate(shown.lines, output_lines(run.stdout))
        warnings += [f"line {shown.start}: {note}" for note in notes]
        lines[shown.start : shown.start + len(shown.lines)] = new
    return "\n".join(lines), warnings


def _name(page: Path) -> str:
    """A page as messages name it: relative to the repository when it is in it."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def run_page(page: Path) -> tuple[list[Block], list[Run]]:
    blocks = parse(page.read_text(encoding="utf-8"), _name(page))
    with tempfile.TemporaryDirectory(prefix="prm-docs-") as folder:
        work = Path(folder, "work")
        work.mkdir()
        return blocks, run_blocks(blocks, work, Path(folder))


def _regenerate_page(page: Path, check: bool) -> tuple[str, bool]:
    """Run one page; rewrite it unless `check`. Returns a report and whether everything ran and was up to date."""
    name = _name(page)
    started = page.read_text(encoding="utf-8")
    blocks, runs = run_page(page)
    report, ok = [], True
    failed = [run for run in runs if run.returncode != 0]
    if failed:
        run = failed[0]
        ok = False
        report.append(f"{name}: runnable block {run.block.number} (line {run.block.line}) failed with exit "
                      f"{run.returncode}; outputs of the blocks after it are left as they were.\n"
                      f"--- stdout\n{run.stdout[-2000:]}\n--- stderr\n{run.stderr[-2000:]}")
    messages = stale(page, runs)
    if check:
        report += messages or ([] if failed else [f"{name}: up to date ({len(runs)} block(s) ran)"])
        return "\n".join(report), ok and not messages
    new, warnings = rewrite(started, runs)
    report += [f"{name}: {warning}" for warning in warnings]
    if new != started:
        if page.read_text(encoding="utf-8") != started:
            return f"{name}: changed while its blocks ran; not rewritten, run again", False
        page.write_text(new, encoding="utf-8")
        report.append(f"{name}: rewrote {len(messages)} shown output(s)")
    else:
        report.append(f"{name}: up to date ({sum(len(b.shown) for b in blocks)} shown output(s))")
    return "\n".join(report), ok and not warnings


def _guarded(page: Path, check: bool) -> tuple[str, bool]:
    """`_regenerate_page`, with a page that cannot be parsed or run reported instead of stopping the other pages."""
    try:
        return _regenerate_page(page, check)
    except (ValueError, OSError, subprocess.TimeoutExpired) as error:
        return f"{_name(page)}: not regenerated: {error}", False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="pages to run (default: README.md and docs/*.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a shown output is stale")
    parser.add_argument("--jobs", "-j", type=int, default=min(4, os.cpu_count() or 1),
                        help="pages run at once (default: min(4, CPUs))")
    args = parser.parse_args(argv)
    chosen = [page.resolve() for page in args.pages] or pages()
    marks = {RUNNABLE_MARK, OUTPUT_MARK}
    chosen = [page for page in chosen if marks & set(page.read_text(encoding="utf-8").split("\n"))]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(lambda page: _guarded(page, args.check), chosen))
    for report, _ in results:
        print(report)
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
