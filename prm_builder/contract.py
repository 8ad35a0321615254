"""The contract between the builder and a config: each config module ends with `SPEC = ConfigSpec(...)`.

A config says where its inputs are (`split_generators`) and how one split of them becomes rows
(`generate_rows`, or `generate_tables` for a config that converts column-wise), and counts what
it leaves out in `drops`. Everything the configs share is the builder's (builder.py): the option
checks, `exclude_problems` (decontamination.py, applied to what a config yields), the drop
files and the policy for a split that ends up empty. So a config never filters benchmark
problems itself and never imports another config (tests/test_layout.py checks both).
"""

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .options import PRMBuilderConfig


class SplitGenerators(Protocol):
    """One `datasets.SplitGenerator` per split; every gen_kwargs has "split" (the builder adds "excluder")."""

    def __call__(self, config: PRMBuilderConfig, dl_manager) -> list: ...


class GenerateRows(Protocol):
    """The rows of one split (or, for independent shards, of one shard) as dicts, in a stable order;
    every item left out is counted in `drops` by reason."""

    def __call__(self, config: PRMBuilderConfig, drops: Counter, split: str, **gen_kwargs) -> Iterator[dict]: ...


class GenerateTables(Protocol):
    """As GenerateRows, as pyarrow Tables of rows (in `features`' schema)."""

    def __call__(self, config: PRMBuilderConfig, drops: Counter, split: str, **gen_kwargs) -> Iterator[Any]: ...


@dataclass(frozen=True)
class ConfigSpec:
    """What one config gives the builder.

    config_class: the options, a PRMBuilderConfig dataclass.
    features: the row schema (features.CORE_FEATURES, plus the config's own columns).
    features_for: for a config whose options add columns (model_sampled's early stop), the
        schema of a build with those options; `row_features(config)` is what the builder uses.
    description, homepage, license, citation: for `datasets.DatasetInfo` and the dataset card.
    split_generators, and exactly one of generate_rows or generate_tables (see the Protocols above).
    shards_are_independent: True when the rows of each shard in gen_kwargs["shards"] depend on no
        other shard; the builder then generates shard by shard and keys each table with its real
        shard index. Only for generate_rows.
    """

    config_class: type[PRMBuilderConfig]
    features: Any  # datasets.Features
    description: str
    homepage: str
    license: str
    citation: str
    split_generators: SplitGenerators
    generate_rows: GenerateRows | None = None
    generate_tables: GenerateTables | None = None
    shards_are_independent: bool = False
    features_for: Callable[[PRMBuilderConfig], Any] | None = None

    def __post_init__(self):
        name = getattr(self.config_class, "__name__", repr(self.config_class))
        if not (isinstance(self.config_class, type) and issubclass(self.config_class, PRMBuilderConfig)):
            raise TypeError(f"ConfigSpec.config_class must be a PRMBuilderConfig subclass, got {name}")
        if (self.generate_rows is None) == (self.generate_tables is None):
            raise TypeError(f"ConfigSpec of {name}: give exactly one of generate_rows and generate_tables")
        if self.shards_are_independent and self.generate_rows is None:
            raise TypeError(f"ConfigSpec of {name}: shards_are_independent applies to generate_rows only")

    def row_features(self, config: PRMBuilderConfig):
        """The row schema of a build with these options."""
        return self.features if self.features_for is None else self.features_for(config)
