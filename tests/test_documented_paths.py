"""Every Python path and source file the docs name exists: a module moved to another folder fails here, not for a reader.

The names are parsed from the pages a user reads (README.md, docs/, the dataset cards, the recipes' comments):
`from X import a, b`, `import X`, `-m X` and any other dotted `prm_builder.`/`prm_trainer.` name in text or code,
and the paths of source files (`prm_builder/...py`, `trainer/...py`).
"""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "dataset_card.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "prm_builder" / "data").glob("*.md")]
    + [path for path in (ROOT / "recipes").rglob("*") if path.is_file()]
)
PACKAGE = r"prm_(?:builder|trainer)"
FROM_IMPORT = re.compile(rf"\bfrom ({PACKAGE}(?:\.\w+)*) import \(?([\w ,]+)")
MODULE_RUN = re.compile(rf"(?:^|\s)-m ({PACKAGE}(?:\.\w+)*)")
DOTTED = re.compile(rf"(?<![\w./-])({PACKAGE}(?:\.\w+)+)")
SOURCE_FILE = re.compile(r"(?<![\w./-])((?:prm_builder|trainer)/[\w/]+\.py)\b")


def documented() -> dict[str, set[tuple[str, str]]]:
    """kind -> {(what, where)}: names to import, modules run with -m, dotted names, source files."""
    found = {"from": set(), "-m": set(), "dotted": set(), "file": set()}
    for page in PAGES:
        where = page.relative_to(ROOT).as_posix()
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            at = f"{where}:{number}"
            for module, names in FROM_IMPORT.findall(line):
                found["from"].update((f"{module}:{name.strip()}", at) for name in names.split(",") if name.strip())
            found["-m"].update((module, at) for module in MODULE_RUN.findall(line))
            found["dotted"].update((name, at) for name in DOTTED.findall(line))
            found["file"].update((path, at) for path in SOURCE_FILE.findall(line))
    return found


FOUND = documented()


def resolve(dotted: str):
    """Import the longest importable module prefix of `dotted`, then look the rest up as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as error:
            if error.name is None or not ".".join(parts[:cut]).startswith(error.name):
                raise
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return value
    raise ModuleNotFoundError(dotted)


def test_the_docs_name_the_paths_we_know_of():
    # The parsing finds what it is meant to (a parser that finds nothing would pass every check below).
    assert {"prm_trainer:PRMConfig", "prm_trainer:PRMReward"} <= {name for name, _ in FOUND["from"]}
    assert {"prm_trainer.cli"} <= {name for name, _ in FOUND["-m"]}
    assert {"prm_trainer.load_prm", "prm_builder.push_to_hub"} <= {name for name, _ in FOUND["dotted"]}
    assert "prm_builder/publishing/card.py" in {path for path, _ in FOUND["file"]}


@pytest.mark.parametrize(("name", "where"), sorted(FOUND["from"] | FOUND["dotted"]))
def test_each_documented_name_imports(name, where):
    module, _, attribute = name.partition(":")
    try:
        resolve(f"{module}.{attribute}" if attribute else module)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{where} names {name.replace(':', ' -> ')}, which does not import: {error}")


@pytest.mark.parametrize(("module", "where"), sorted(FOUND["-m"]))
def test_each_module_the_docs_run_with_dash_m_runs_its_main(module, where):
    imported = importlib.import_module(module)
    assert callable(getattr(imported, "main", None)), f"{where}: {module} has no main()"
    source = Path(imported.__file__).read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":' in source, f"{where}: `-m {module}` would import {module} and do nothing"


@pytest.mark.parametrize(("path", "where"), sorted(FOUND["file"]))
def test_each_documented_source_file_exists(path, where):
    assert (ROOT / path).is_file(), f"{where} names {path}, which is not there"


# Dotted names the docs gave before the modules moved into subpackages (issue 24): users' code holds them.
NAMES_DOCUMENTED_BEFORE_THE_MOVE = [
    "prm_builder.grading", "prm_builder.grading.answers_match", "prm_trainer.mixture.load_mixture",
    "prm_trainer.trainer.compute_accuracy", "prm_trainer.compute_accuracy", "prm_trainer.load_mixture",
]


@pytest.mark.parametrize("name", NAMES_DOCUMENTED_BEFORE_THE_MOVE)
def test_names_documented_before_the_move_still_resolve(name):
    import prm_builder  # noqa: F401
    import prm_trainer

    value = prm_trainer if name.startswith("prm_trainer") else prm_builder
    for attribute in name.split(".")[1:]:
        value = getattr(value, attribute)
    assert value is not None
    from prm_trainer import trainer  # the from-import form too
    from prm_trainer.training.trainer import compute_accuracy, compute_step_accuracy

    assert trainer.compute_accuracy is compute_accuracy is compute_step_accuracy
