"""The base of every config's options: a dataclass BuilderConfig validated like datasets' own.

`load_dataset("prm_builder", name, **options)` turns the options into fields of the config
(datasets copies the registered config and sets each option with setattr, so `__post_init__`
does not run again: `create_config_id`, which datasets always calls next, validates instead).
"""

import dataclasses
import math
import os
from typing import Any, ClassVar

import datasets
from datasets.fingerprint import Hasher

from . import exclude_option

# What `prm-builder build` writes beside a built dataset: {"config": ..., "options": {...}}, the options it was built
# with (credentials redacted), read back by prm-train and prm-eval for the model card.
OPTIONS_FILE = "prm_builder_options.json"

# BuilderConfig's own fields that are not options of ours.
_BASE_FIELDS = {"name", "version", "description", "data_dir", "data_files"}


@dataclasses.dataclass
class PRMBuilderConfig(datasets.BuilderConfig):
    # Only configs that read user files through datasets' own `data_dir`/`data_files` accept them.
    ACCEPTS_DATA_FILES: ClassVar[bool] = False
    # Options that change how rows are made, never which rows (e.g. a server URL): left out of the cache key.
    OPTIONS_NOT_IN_CACHE_KEY: ClassVar[frozenset] = frozenset()

    # Every config: benchmark problems kept out of the rows (see prm_builder/exclude_option.py).
    exclude_problems: str | list[str] | dict | None = dataclasses.field(
        default=exclude_option.DEFAULT,
        metadata={
            "help": "'default' (MATH500 and GSM8K test problems out of the train split), 'none', 'math500', "
            "'gsm8k_test', 'processbench', a .jsonl/.json file with a 'problem' field, a list of those, "
            "or {split: any of those}"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Check and normalize the options; subclasses extend it. Must be idempotent."""
        if not self.ACCEPTS_DATA_FILES and (self.data_dir is not None or self.data_files is not None):
            raise ValueError(
                f"config {self.name!r} takes no data_dir/data_files; valid options: {', '.join(self.option_names())}"
            )
        check_data_files(self.data_files)
        self.exclude_problems = exclude_option.normalize_option(self.exclude_problems)

    @classmethod
    def option_names(cls) -> list[str]:
        names = [f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS | {"exclude_problems"}]
        names.append("exclude_problems")  # the one option every config has: after the config's own
        return (["data_dir", "data_files"] if cls.ACCEPTS_DATA_FILES else []) + names

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return {f.name: _field_default(f) for f in dataclasses.fields(cls) if f.name in cls.option_names()}

    def options(self) -> dict[str, Any]:
        """The option values, normalized: what the build depends on and what the dataset card prints."""
        return {name: getattr(self, name) for name in self.option_names() if name not in ("data_dir", "data_files")}

    def local_inputs(self) -> list[str]:
        """Local files or folders whose content defines the build; their size and mtime join the cache key."""
        return []

    def create_config_id(self, config_kwargs: dict, custom_features=None) -> str:
        # The cache key comes from the normalized options (so `seed=0` and the default share a
        # cache) plus a stat fingerprint of local inputs (so an edited local file is rebuilt).
        self.validate()
        defaults = {f.name: _field_default(f) for f in dataclasses.fields(self)}
        key = {
            name: value
            for name, value in self.options().items()
            if value != defaults.get(name) and name not in self.OPTIONS_NOT_IN_CACHE_KEY
        }
        if self.data_dir is not None:
            key["data_dir"] = os.path.normpath(self.data_dir)
        if self.data_files is not None:
            key["data_files"] = {split: sorted(map(str, files)) for split, files in self.data_files.items()}
        inputs = list(self.local_inputs()) + exclude_option.local_paths(self.exclude_problems)
        if self.data_files is not None:
            inputs += [str(f) for files in self.data_files.values() for f in files]
        if self.data_dir is not None:
            inputs.append(self.data_dir)
        fingerprints = [_stat_fingerprint(path) for path in sorted(set(inputs))]
        if fingerprints:
            key["local_inputs"] = fingerprints
        if custom_features is not None:
            key["features"] = custom_features
        return self.name if not key else f"{self.name}-{Hasher.hash(key)}"


def check_data_files(data_files, base_path: str | None = None) -> None:
    """Refuse a `data_files` entry that is a folder, naming `data_dir` for it.

    datasets takes each entry as a file or a glob pattern and, for a folder, says only "Unable to find" it. It
    resolves the entries before the config exists (in DatasetBuilder.__init__), so the builder calls this first;
    `validate` calls it too, for a config made directly. `data_files`: a path, a list, or {split: path or list}.
    """
    by_split = data_files.items() if isinstance(data_files, dict) else [(None, data_files)]
    for split, value in by_split:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(item, (str, os.PathLike)):
                continue
            path = os.fspath(item)
            if os.path.isdir(os.path.join(base_path or "", path)):
                file = os.path.join(path, "train.jsonl")
                example = f"{{{split!r}: {file!r}}}" if split is not None else repr(file)
                raise ValueError(f"data_files: {path!r} is a folder; data_files names files (e.g. "
                                 f"data_files={example}), data_dir={path!r} reads a folder")


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


# Local inputs up to this size are fingerprinted by content (an edit that keeps size and mtime
# is still seen); larger ones by size, mtime_ns and inode, which costs no reading.
CONTENT_FINGERPRINT_MAX_BYTES = 256 * 1024 * 1024
_content_hashes: dict[tuple, str] = {}


def _stat_fingerprint(path: str) -> tuple:
    """(path, fingerprint) of a local input, a file or a folder (every file under it)."""
    if not os.path.exists(path):
        return (path, None)
    if os.path.isdir(path):
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    else:
        files = [path]
    stats = [(file, os.stat(file)) for file in files]
    by_content = sum(stat.st_size for _, stat in stats) <= CONTENT_FINGERPRINT_MAX_BYTES
    entries = tuple(
        (os.path.relpath(file, path) if file != path else "", _content_hash(file, stat) if by_content else (stat.st_size, stat.st_mtime_ns, stat.st_ino))
        for file, stat in stats
    )
    return (os.path.abspath(path), entries)


def _content_hash(path: str, stat: os.stat_result) -> str:
    import xxhash  # a dependency of datasets; several GB/s

    # Remembered per (path, size, mtime, ctime, inode): ctime changes on every write and cannot
    # be set back, so a remembered hash is never stale.
    memo = (path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if memo not in _content_hashes:
        digest = xxhash.xxh3_128()
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        _content_hashes[memo] = digest.hexdigest()
    return _content_hashes[memo]


def check_choice(option: str, value: Any, choices: list) -> None:
    if value not in choices:
        raise ValueError(f"{option} must be one of {choices}, got {value!r}")


def check_int(option: str, value: Any, minimum: int | None = None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be an integer{' or None' if allow_none else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{option} must be >= {minimum}, got {value}")


def check_number(option: str, value: Any, minimum: float | None = None, maximum: float | None = None,
                 *, above_minimum: bool = False, allow_none: bool = False) -> float | None:
    """A finite int or float (never a bool, None, NaN or infinity) within bounds, returned as float."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{option} must be a finite number{' or None' if allow_none else ''}, got {value!r}")
    low = minimum is not None and (value <= minimum if above_minimum else value < minimum)
    if low or (maximum is not None and value > maximum):
        bounds = [f"{'>' if above_minimum else '>='} {minimum:g}" if minimum is not None else "", f"<= {maximum:g}" if maximum is not None else ""]
        raise ValueError(f"{option} must be a number {' and '.join(b for b in bounds if b)}, got {value!r}")
    return float(value)


def check_bool(option: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{option} must be True or False, got {value!r}")


def check_string(option: str, value: Any, expected: str = "a non-empty string", allow_none: bool = False) -> str | None:
    """A non-empty string (a path given as os.PathLike becomes its string), else an error saying `expected`."""
    if value is None and allow_none:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{option} must be {expected}{' or None' if allow_none else ''}, got {value!r}")
    return value


def as_list(option: str, value: Any) -> list:
    """Accept a list, a tuple or a comma-separated string (as the command line gives it)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{option} must be a list or a comma-separated string, got {value!r}")


def check_urls(option: str, value: Any) -> list[str] | None:
    """OpenAI-compatible server URLs (a list or a comma-separated string), or None; a URL without a
    path gets /v1, where vLLM, SGLang and TGI serve the API."""
    from .redact import redact_url

    if value is None or value == "" or value == []:
        return None
    urls = []
    for url in as_list(option, value):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            shown = redact_url(url) if isinstance(url, str) else url
            raise ValueError(f"{option} must be http(s) URLs, e.g. 'http://localhost:8000/v1', got {shown!r}")
        url = url.rstrip("/")
        if url.count("/") == 2:
            url += "/v1"
        urls.append(url)
    return urls
