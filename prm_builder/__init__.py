"""prm-builder: step-labelled data for process reward models, one `load_dataset` call away.

    import prm_builder
    from datasets import load_dataset
    ds = load_dataset("prm_builder", "synthetic", problems="sample")
"""

import functools
import hashlib
import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"
__all__ = ["CORE_FEATURES", "CONFIG_NAMES", "PRMBuilder", "builder_source_hash", "export_to_folder", "load_drops", "push_to_hub", "__version__"]

DATASET_NAME = "prm_builder"
_PACKAGE_DIR = Path(__file__).resolve().parent
# Public names served lazily (PEP 562), so `import prm_builder` and the command lines' --help
# do not pay for importing datasets, pandas and pyarrow before they need them (benchmarks/startup.py).
_LAZY_EXPORTS = {
    "PRMBuilder": ("builder", "PRMBuilder"),
    "CORE_FEATURES": ("common.features", "CORE_FEATURES"),
    "load_drops": ("common.drops", "load_drops"),
    "push_to_hub": ("publishing.hub", "push_to_hub"),
    "export_to_folder": ("publishing.hub", "export_to_folder"),
}


# Modules that docs named before the subpackages existed: `prm_builder.grading` and
# `from prm_builder import grading` keep working.
_MOVED_MODULES = {"grading": "common.grading"}


def __getattr__(name: str):
    if name in _MOVED_MODULES:
        return importlib.import_module(f".{_MOVED_MODULES[name]}", __name__)
    if name == "CONFIG_NAMES":
        return list(importlib.import_module(".builder", __name__).CONFIGS)
    if name in _LAZY_EXPORTS:
        module, attribute = _LAZY_EXPORTS[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def builder_source_hash() -> str:
    """Hash of every source and data file of the package: a code change means a new Arrow cache."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*")):
        if path.suffix in (".py", ".jsonl") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(_PACKAGE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _wrap_dataset_module_factory(datasets_load) -> None:
    """Make `load_dataset("prm_builder", ...)` build through `PRMBuilder`.

    datasets 5 runs no loading scripts and has no plugin entry point, so we wrap its private
    `datasets.load.dataset_module_factory` (looked up at call time by `load_dataset_builder`)
    and answer for our name only. Adding the name to `_PACKAGED_DATASETS_MODULES` instead would
    make datasets scan the current folder for data files (slow, fails in an empty folder, and
    stray files change the cache key). tests/test_registration.py fails loudly if a datasets
    release breaks this.
    """
    original = datasets_load.dataset_module_factory
    if getattr(original, "_prm_builder_wrapper", False):
        return

    @functools.wraps(original)
    def dataset_module_factory(path, *args, **kwargs):
        if path == DATASET_NAME:
            return datasets_load.DatasetModule(
                f"{__name__}.builder", builder_source_hash(), {"dataset_name": DATASET_NAME}
            )
        return original(path, *args, **kwargs)

    dataset_module_factory._prm_builder_wrapper = True
    datasets_load.dataset_module_factory = dataset_module_factory


class _WrapWhenImported(importlib.abc.MetaPathFinder):
    """Wraps `datasets.load` the moment anything imports it, if that happens after us.

    This keeps `import prm_builder` light: datasets is imported by whoever uses it (the user's
    `from datasets import load_dataset`, or our own builders), and registration follows it.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != "datasets.load":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            _wrap_dataset_module_factory(module)

        spec.loader.exec_module = exec_and_wrap
        return spec


def _register_with_datasets() -> None:
    if "datasets.load" in sys.modules:
        _wrap_dataset_module_factory(sys.modules["datasets.load"])
    elif not any(isinstance(finder, _WrapWhenImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WrapWhenImported())


_register_with_datasets()
