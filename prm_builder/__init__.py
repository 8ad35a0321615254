"""prm-builder: step-labelled data for process reward models, one `load_dataset` call away.

    import prm_builder
    from datasets import load_dataset
    ds = load_dataset("prm_builder", "synthetic", problems="sample")
"""

import functools
import hashlib
from pathlib import Path

import datasets.load

from .builder import SOURCES, PRMBuilder
from .drops import load_drops
from .features import CORE_FEATURES
from .hub import export_to_folder, push_to_hub

__version__ = "0.1.0"
__all__ = ["CORE_FEATURES", "CONFIG_NAMES", "PRMBuilder", "builder_source_hash", "export_to_folder", "load_drops", "push_to_hub", "__version__"]

DATASET_NAME = "prm_builder"
CONFIG_NAMES = list(SOURCES)
_PACKAGE_DIR = Path(__file__).resolve().parent


@functools.cache
def builder_source_hash() -> str:
    """Hash of every source and data file of the package: a code change means a new Arrow cache."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*")):
        if path.suffix in (".py", ".jsonl") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(_PACKAGE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _register_with_datasets() -> None:
    """Make `load_dataset("prm_builder", ...)` build through `PRMBuilder`.

    datasets 5 runs no loading scripts and has no plugin entry point, so we wrap its private
    `datasets.load.dataset_module_factory` (looked up at call time by `load_dataset_builder`)
    and answer for our name only. Adding the name to `_PACKAGED_DATASETS_MODULES` instead would
    make datasets scan the current folder for data files (slow, fails in an empty folder, and
    stray files change the cache key). tests/test_registration.py fails loudly if a datasets
    release breaks this.
    """
    original = datasets.load.dataset_module_factory
    if getattr(original, "_prm_builder_wrapper", False):
        return

    @functools.wraps(original)
    def dataset_module_factory(path, *args, **kwargs):
        if path == DATASET_NAME:
            return datasets.load.DatasetModule(
                PRMBuilder.__module__, builder_source_hash(), {"dataset_name": DATASET_NAME}
            )
        return original(path, *args, **kwargs)

    dataset_module_factory._prm_builder_wrapper = True
    datasets.load.dataset_module_factory = dataset_module_factory


_register_with_datasets()
