"""Every command the docs mark as runnable runs, offline, against tests/data and a tiny model, and prints what the
docs show.

A page marks a block with `<!-- runnable -->` on the line above its ```bash fence, and an output it shows with
`<!-- output -->` above that fence (`...` lines elide). The blocks of one page run in order in one fresh folder, with
`$TEST_DATA` pointing at tests/data and the project's console scripts on PATH. scripts/regenerate_docs.py holds the
conventions (what is normalized: timings and the folder's absolute path, nothing else) and rewrites the shown outputs
after a change that moves them.
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("regenerate_docs", ROOT / "scripts" / "regenerate_docs.py")
docs = importlib.util.module_from_spec(_spec)
sys.modules["regenerate_docs"] = docs  # dataclasses look their module up by name
_spec.loader.exec_module(docs)

PAGES = docs.pages()
LINK = re.compile(r"\]\(((?!https?://|#)[^)#\s]+)")
REGENERATE = "python scripts/regenerate_docs.py"


def page_blocks(page: Path) -> list:
    return docs.parse(page.read_text(encoding="utf-8"), page.name)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_point_at_files_in_the_repository(page):
    missing = [target for target in LINK.findall(page.read_text(encoding="utf-8")) if not (page.parent / target).exists()]
    assert missing == []


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if page_blocks(p)], ids=lambda p: p.name)
def test_runnable_blocks_run_and_print_what_the_page_shows(page):
    blocks, runs = docs.run_page(page)
    failed = [run for run in runs if run.returncode != 0]
    assert not failed, (
        f"{page.name}, runnable block {failed[0].block.number} (line {failed[0].block.line}) failed "
        f"(exit {failed[0].returncode}):\n{failed[0].block.code}\n"
        f"--- stdout\n{failed[0].stdout[-3000:]}\n--- stderr\n{failed[0].stderr[-3000:]}"
    )
    assert len(runs) == len(blocks)
    stale = docs.stale(page, runs)
    assert not stale, (
        "\n\n".join(stale) + f"\n\nIf the change is intended, regenerate the page: {REGENERATE} "
        f"{page.relative_to(ROOT)} (then check the prose around the outputs still says what they show)"
    )


# ---------------------------------------------------------------- the conventions, on pages the tests write


PAGE = """\
Intro.

<!-- runnable -->
```bash
echo one
echo two
```

<!-- output -->
```text
one
two
```

```bash
<!-- runnable -->
not a marker: inside a fence
```

<!-- runnable -->
```bash
seq 1 6
```

<!-- output -->
```
1
...
6
```
"""


def test_parse_finds_blocks_and_their_shown_outputs():
    blocks = docs.parse(PAGE)
    assert [(b.number, b.code, b.line) for b in blocks] == [(1, "echo one\necho two\n", 4), (2, "seq 1 6\n", 21)]
    assert [(s.start, s.lines) for s in blocks[0].shown] == [(10, ["one", "two"])]
    assert [(s.start, s.lines) for s in blocks[1].shown] == [(26, ["1", "...", "6"])]


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- output -->\n```\nx\n```\n", "page:2: <!-- output --> with no runnable block above it"),
        ("<!-- runnable -->\n```python\nx\n```\n", "page:2: <!-- runnable --> expects a ```bash fence"),
        ("<!-- runnable -->\n```bash\nx\n", "page:2: a ``` fence is never closed"),
    ],
)
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        docs.parse(text)


@pytest.mark.parametrize(
    "shown, actual, expected",
    [
        (["a", "b"], ["a", "b"], True),
        (["a", "b"], ["a", "b", "c"], False),
        (["a", "...", "c"], ["a", "b", "b2", "c"], True),
        (["a", "...", "c"], ["a", "c"], True),  # `...` may stand for nothing
        (["a", "...", "c"], ["a", "b", "c", "d"], False),  # anchored at the end
        (["...", "c"], ["a", "b", "c"], True),
        (["a", "..."], ["a", "b"], True),
        (["...", "b", "..."], ["a", "b", "c"], True),
        (["...", "x", "..."], ["a", "b", "c"], False),
        (["loss 0.6797"], ["loss 0.6798"], False),  # model figures are compared as they are
        (["took 3.2 s, 120.5 rows/s [00:03<00:00]"], ["took 0.41 s, 9.1 rows/s [00:00<00:00]"], True),  # timings not
        (["{'train_runtime': '10.55', 'train_loss': '0.7'}"], ["{'train_runtime': '63.1', 'train_loss': '0.7'}"], True),
        (["{'train_runtime': '10.5', 'train_loss': '0.7'}"], ["{'train_runtime': '10.5', 'train_loss': '0.8'}"], False),
        (["trailing blanks  "], ["trailing blanks"], True),
    ],
)
def test_matches(shown, actual, expected):
    assert docs.matches(shown, actual) is expected


def test_regenerate_replaces_a_whole_output_and_keeps_what_still_matches():
    assert docs.regenerate(["a", "b"], ["a", "c", "d"]) == (["a", "c", "d"], [])
    assert docs.regenerate(["a", "...", "z"], ["a", "b", "z"]) == (["a", "...", "z"], [])  # untouched


def test_regenerate_keeps_the_elisions_and_finds_the_stretches_shown():
    shown = ["...", "| total | 54 | 28 |", "...", "overall  0.50  0.41"]
    actual = ["wrote tiny", "Training data:", "| total | 60 | 30 |", "{'loss': 0.7}", "{", "}", "overall  0.52  0.43"]
    assert docs.regenerate(shown, actual) == (["...", "| total | 60 | 30 |", "...", "overall  0.52  0.43"], [])
    head = ["== train: 1 rows ==", "  dropped 5 items", "..."]
    assert docs.regenerate(head, ["== train: 2 rows ==", "  dropped 4 items", "saved", "== other =="]) == (
        ["== train: 2 rows ==", "  dropped 4 items", "..."], [])


def test_regenerate_warns_when_a_shown_stretch_is_gone():
    new, warnings = docs.regenerate(["...", "error: old message", "..."], ["something", "else entirely"])
    assert new[0] == "..." and new[-1] == "..." and len(new) == 3
    assert warnings == [f"the stretch starting 'error: old message' now reads {new[1:2]!r}: check it"]


def test_rewrite_replaces_shown_outputs_in_place(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    blocks = docs.parse(PAGE)
    work = tmp_path / "work"
    work.mkdir()
    runs = docs.run_blocks(blocks, work, tmp_path)
    assert docs.stale(page, runs) == []

    changed = PAGE.replace("echo two", "echo three").replace("seq 1 6", "seq 1 7")
    page.write_text(changed)
    blocks = docs.parse(changed)
    runs = docs.run_blocks(blocks, work, tmp_path)
    stale = docs.stale(page, runs)
    assert len(stale) == 2 and stale[0].startswith("page.md:10: the output shown for runnable block 1 (line 4)")
    assert "-two\n+three" in stale[0]
    new, warnings = docs.rewrite(changed, runs)
    assert warnings == []
    assert new == changed.replace("one\ntwo\n```", "one\nthree\n```").replace("1\n...\n6\n", "1\n...\n7\n")


def test_outputs_show_the_work_folder_as_the_docs_do(tmp_path):
    blocks = docs.parse("<!-- runnable -->\n```bash\necho \"saved to $PWD/prm\"; echo \"$HF_DATASETS_CACHE/x\"\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    runs = docs.run_blocks(blocks, work, tmp_path)
    assert runs[0].stdout == f"saved to {docs.SHOWN_WORK_DIR}/prm\n~/.cache/huggingface/datasets/x\n"


def test_every_shown_output_belongs_to_a_runnable_block_and_pages_have_some():
    shown = {page.name: sum(len(block.shown) for block in page_blocks(page)) for page in PAGES}
    assert shown["README.md"] >= 1 and shown["evaluation.md"] >= 2 and shown["trainer.md"] >= 1


def test_test_data_is_defined_where_a_reader_sees_it():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        uses = [text.find(use) for use in ("$TEST_DATA", 'environ["TEST_DATA"]') if use in text]
        if uses:
            definition = "export TEST_DATA=$PWD/tests/data"
            assert definition in text[: min(uses)], f"{page.name} uses $TEST_DATA before saying what it is"


def test_readme_says_to_activate_the_virtual_environment():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_bare_command = readme.index("\nprm-builder build synthetic --problems sample --output-dir out/synthetic\n")
    assert "source .venv/bin/activate" in readme[:first_bare_command]


def test_the_script_checks_rewrites_and_reports_a_broken_page(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text(PAGE.replace("echo two", "echo three"))
    assert docs.main(["--check", str(page)]) == 1
    assert "-two\n+three" in capsys.readouterr().out
    assert docs.main([str(page)]) == 0
    assert f"{page}: rewrote 1 shown output(s)" in capsys.readouterr().out
    assert "one\nthree\n```" in page.read_text()
    assert docs.main(["--check", str(page)]) == 0

    broken = tmp_path / "broken.md"
    broken.write_text("<!-- runnable -->\n```bash\nfalse\n```\n\n<!-- output -->\n```\nx\n```\n")
    assert docs.main([str(broken), str(page)]) == 1  # the other page is still done
    out = capsys.readouterr().out
    assert f"{broken}: runnable block 1 (line 2) failed with exit 1" in out and f"{page}: up to date" in out
    assert broken.read_text().endswith("```\nx\n```\n")  # left as it was
