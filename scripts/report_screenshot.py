"""Regenerate docs/report.png, the screenshot of the report page that docs/report.md shows.

Offline and on the CPU: builds the synthetic config from the problems bundled in the package, makes a PRM of the
tiny model of `prm-builder tiny-model` with a randomly initialized (untrained) score head, runs `prm-builder report
--prm` on them, and photographs the rows of the page in headless Chromium (Debian's `chromium`; driven as the browser
tests drive it, tests/browser.py).

    python scripts/report_screenshot.py [--out docs/report.png] [--html report.html]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root, for its tests package
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def untrained_prm(base: Path, out: Path) -> None:
    """The tiny model with a 2-label token classification head, seeded: scores that mean nothing, for the picture."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(0)
    AutoModelForTokenClassification.from_pretrained(base, num_labels=2).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "report.png"), help="PNG to write")
    parser.add_argument("--html", default=None, help="also keep the page here")
    parser.add_argument("--height", type=int, default=1700, help="pixels of the page to keep, from the top")
    args = parser.parse_args()

    from tests.browser import Chromium, find_chromium

    executable = find_chromium()
    if executable is None:
        print("report_screenshot: Chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["HF_DATASETS_CACHE"] = str(scratch / "cache")  # a build of its own, not the user's cache
        from prm_builder.cli import main as prm_builder

        for command in (
            ["build", "synthetic", "--problems", "sample", "--max-examples", "6", "--output-dir", str(scratch / "data")],
            ["tiny-model", str(scratch / "tiny")],
        ):
            if prm_builder(command) != 0:
                return 1
        untrained_prm(scratch / "tiny", scratch / "prm")
        for command in (
            ["report", str(scratch / "data"), "--output", str(scratch / "report.html"), "--per-source", "2",
             "--prm", str(scratch / "prm"), "--device", "cpu"],
        ):
            if prm_builder(command) != 0:
                return 1
        page = scratch / "report.html"
        if args.html:
            Path(args.html).write_bytes(page.read_bytes())
        browser = Chromium(executable, scratch / "profile", width=1100, height=900)
        try:
            browser.open(page)
            # Scroll past the summary to the rows, so the picture shows what the page is for.
            top = browser.evaluate("document.querySelector('h2:nth-of-type(2)').getBoundingClientRect().top + scrollY")
            png = browser.screenshot(clip=(0, max(0, int(top) - 20), 1100, args.height))
        finally:
            browser.close()
    Path(args.out).write_bytes(png)
    print(f"wrote {args.out} ({len(png) / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
