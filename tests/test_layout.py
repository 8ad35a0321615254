"""The code's shape: no import circles, modules of one job, and a light `import prm_builder`."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"prm_builder": ROOT / "prm_builder", "prm_trainer": ROOT / "trainer"}
MAX_MODULE_LINES = 450
# prm800k.py is one job whose module docstring is the specification of the conversion.
LONG_MODULES_ALLOWED = {"prm_builder.prm800k"}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))
            modules[name] = path
    return modules


def imported_project_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module `name` imports, at top level or inside a function (both make a circle)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def test_no_import_circles():
    modules = project_modules()
    graph = {name: imported_project_modules(name, path, set(modules)) for name, path in modules.items()}
    # A package importing its own submodules is not a circle (submodules import the package first anyway).
    graph = {name: {t for t in targets if not name.startswith(t + ".") and not t.startswith(name + ".")} for name, targets in graph.items()}
    visiting, done, cycles = [], set(), []

    def visit(node):
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        if node in done:
            return
        visiting.append(node)
        for target in sorted(graph[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)
    assert cycles == []


def _import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_project_modules(name, path, set(modules)) for name, path in modules.items()}


def _config_modules() -> set[str]:
    from prm_builder.builder import CONFIGS

    return {spec.split_generators.__module__ for spec in CONFIGS.values()}


def test_no_config_module_imports_another():
    # Shared readers live a layer below the configs (problems.py, jsonl.py, ...): a config that
    # needs another's code, directly or through a module it imports, should move that code there.
    graph, configs = _import_graph(), _config_modules()
    assert len(configs) == 5

    def reached(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    assert {config: sorted(reached(config) & configs - {config}) for config in sorted(configs)} == {
        config: [] for config in sorted(configs)
    }


def test_the_builder_alone_applies_exclude_problems():
    # decontamination.py filters rows; a config that imported it would be filtering on its own.
    graph = _import_graph()
    assert {name for name, targets in graph.items() if "prm_builder.decontamination" in targets} == {"prm_builder.builder"}


def test_modules_stay_small():
    too_long = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in project_modules().items()
        if name not in LONG_MODULES_ALLOWED
    }
    assert {name: lines for name, lines in too_long.items() if lines > MAX_MODULE_LINES} == {}


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_import_is_light_and_registration_follows_datasets():
    out = _run(
        "import sys, prm_builder\n"
        "print(sorted(m for m in ('datasets', 'torch', 'transformers', 'pandas') if m in sys.modules))\n"
        "from datasets import load_dataset\n"
        "import datasets.load\n"
        "print(datasets.load.dataset_module_factory._prm_builder_wrapper)\n"
    )
    assert out.split("\n")[:2] == ["[]", "True"]


def test_registration_when_datasets_came_first():
    out = _run("import datasets.load, prm_builder\nprint(datasets.load.dataset_module_factory._prm_builder_wrapper)")
    assert out.strip() == "True"


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(project_modules()))
def test_each_module_imports_alone(module):
    # A fresh interpreter per module: an order-dependent import (a hidden circle) fails here.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT, capture_output=True)
