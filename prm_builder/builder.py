"""The one `datasets` builder behind `load_dataset("prm_builder", name=...)`.

Each config lives in its own module, which provides:
  CONFIG_CLASS   a PRMBuilderConfig dataclass (the options)
  FEATURES       the row schema (core columns + the config's own), or
  features(config) -> Features, when options add columns (model_sampled's early stop and judged rows)
  DESCRIPTION, HOMEPAGE, LICENSE, CITATION
  split_generators(config, dl_manager) -> list[SplitGenerator]; every gen_kwargs has "split"
  generate_rows(config, dropped, split, **gen_kwargs) -> rows as dicts, `dropped` (a Counter)
                 counting what was dropped, by reason
    (or generate_tables(...) -> Arrow tables of rows, for a config that converts column-wise)
  SHARDS_ARE_INDEPENDENT (optional, default False): True when the rows of each shard in
                 gen_kwargs["shards"] do not depend on the other shards; the builder then
                 generates shard by shard and keys each table with its real shard index
Every config's `exclude_problems` is applied here to what they yield (decontamination.py).

The builder is Arrow-based: rows are batched into Arrow tables here, which writes a split
several times faster than datasets' per-example encoding.
"""

from collections import Counter

import datasets
import pyarrow as pa
from datasets.builder import Key

from . import decontamination, drops, math_shepherd, model_sampled, prm800k, stepwise, synthetic
from .options import check_data_files

SOURCES = {
    "synthetic": synthetic,
    "prm800k": prm800k,
    "model_sampled": model_sampled,
    "math_shepherd": math_shepherd,
    "stepwise": stepwise,
}

ROWS_PER_TABLE = 1000
VERSION = datasets.Version("1.0.0")


class PRMBuilder(datasets.ArrowBasedBuilder):
    VERSION = VERSION
    BUILDER_CONFIGS = [
        module.CONFIG_CLASS(name=name, version=VERSION, description=module.DESCRIPTION)
        for name, module in SOURCES.items()
    ]
    DEFAULT_CONFIG_NAME = "synthetic"
    DEFAULT_WRITER_BATCH_SIZE = ROWS_PER_TABLE

    def __init__(self, *args, data_files=None, base_path=None, **kwargs):
        # Before datasets resolves data_files (here, before any config exists): a folder there is our one-line error.
        check_data_files(data_files, base_path)
        super().__init__(*args, data_files=data_files, base_path=base_path, **kwargs)

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        # datasets' own messages for these ("doesn't have a 'x' key") do not say what is valid.
        name = config_name or self.DEFAULT_CONFIG_NAME
        if name not in SOURCES:
            raise ValueError(f"unknown prm_builder config {name!r}; valid configs: {', '.join(SOURCES)}")
        valid = SOURCES[name].CONFIG_CLASS.option_names()
        unknown = sorted(set(config_kwargs) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for prm_builder config {name!r}; "
                f"valid options: {', '.join(valid)}"
            )
        # datasets skips an option passed as None (the config keeps its default), which would build
        # something other than what was asked: refuse it where None is not the option's own default.
        defaults = SOURCES[name].CONFIG_CLASS.option_defaults()
        refused = [key for key, value in config_kwargs.items() if value is None and defaults.get(key) is not None]
        if refused:
            key = refused[0]
            raise ValueError(f"{key}=None: expected a value; leave {key} out to get its default, {defaults[key]!r}")
        return super()._create_builder_config(name, custom_features, config_id, **config_kwargs)

    @property
    def _source(self):
        return SOURCES[self.config.name]

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self._source.DESCRIPTION,
            features=self._source.features(self.config) if hasattr(self._source, "features") else self._source.FEATURES,
            homepage=self._source.HOMEPAGE,
            license=self._source.LICENSE,
            citation=self._source.CITATION,
        )

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        # Drop counts go beside the Arrow files of this build (the temporary folder datasets
        # renames into the cache at the end), never into the cache during streaming.
        self._drops_dir = self._output_dir
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        finally:
            self._drops_dir = None
        # exclude_problems can empty a split (a benchmark's own test split), and datasets cannot
        # load an empty split: leave it out, loudly.
        empty = [name for name, split in self.info.splits.items() if split.num_examples == 0]
        if len(empty) == len(self.info.splits):
            raise ValueError(f"{self.config.name}: no split has any row with these options (see the drops logged above)")
        for name in empty:
            drops.logger.warning(f"{self.config.name}: split {name!r} is left out: every row was dropped")
            del self.info.splits[name]

    def _split_generators(self, dl_manager):
        generators = self._source.split_generators(self.config, dl_manager)
        # exclude_problems, for every config; one that filters lines itself (prm800k) says so.
        if not getattr(self._source, "FILTERS_EXCLUDED_PROBLEMS", False):
            splits = [generator.gen_kwargs["split"] for generator in generators]
            excluders = decontamination.excluders(self.config.exclude_problems, splits, dl_manager)
            for generator in generators:
                generator.gen_kwargs["excluder"] = excluders[generator.gen_kwargs["split"]]
        return generators

    def _prepare_split(self, split_generator, **kwargs):
        super()._prepare_split(split_generator, **kwargs)
        # Each generation job (one per num_proc worker) recorded its own counts: report the split's total once.
        drops_dir = getattr(self, "_drops_dir", None)
        if drops_dir:
            counts = drops.load_drops(drops_dir).get(split_generator.name)
            if counts:
                drops.logger.warning(f"{split_generator.name}: {drops.describe_drops(counts)}")

    def _generate_tables(self, split, excluder=None, **gen_kwargs):
        dropped = Counter()
        if hasattr(self._source, "generate_tables"):  # a config that converts column-wise (math_shepherd)
            for index, table in enumerate(self._source.generate_tables(self.config, dropped, split=split, **gen_kwargs)):
                yield Key(0, index), excluder.filter_table(table, dropped) if excluder else table
            self._record_drops(split, dropped)
            return
        schema = self.info.features.arrow_schema
        for shard_index, shard_kwargs in self._shard_jobs(gen_kwargs):
            # Keys as datasets' packaged builders give them: (shard within this job, batch within the shard).
            batch, batch_index = [], 0
            rows = self._source.generate_rows(self.config, dropped, split=split, **shard_kwargs)
            for row in excluder.filter(rows, dropped) if excluder else rows:
                batch.append(row)
                if len(batch) == ROWS_PER_TABLE:
                    yield Key(shard_index, batch_index), pa.Table.from_pylist(batch, schema=schema)
                    batch, batch_index = [], batch_index + 1
            if batch:
                yield Key(shard_index, batch_index), pa.Table.from_pylist(batch, schema=schema)
        self._record_drops(split, dropped)

    def _shard_jobs(self, gen_kwargs: dict):
        """(shard index, gen_kwargs for that shard alone), or one job for sources that need all shards at once."""
        if not getattr(self._source, "SHARDS_ARE_INDEPENDENT", False) or "shards" not in gen_kwargs:
            return [(0, gen_kwargs)]
        return [(index, {**gen_kwargs, "shards": [shard]}) for index, shard in enumerate(gen_kwargs["shards"])]

    def _record_drops(self, split: str, dropped: Counter) -> None:
        drops_dir = getattr(self, "_drops_dir", None)
        if drops_dir:
            drops.record(drops_dir, split, dropped)
        elif dropped:  # streaming: no build folder, each job reports its own counts
            drops.logger.warning(f"{split}: {drops.describe_drops(dropped)}")
