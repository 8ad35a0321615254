"""The one `datasets` builder behind `load_dataset("prm_builder", name=...)`.

Each config is one module that ends with `SPEC = ConfigSpec(...)` (contract.py): its options
class, row schema (fixed, or a function of the options: model_sampled's early stop and judged rows) and metadata, `split_generators`, and
`generate_rows` (or `generate_tables`, for a config that converts column-wise). CONFIGS below maps
the config names to those specs.

The builder alone does what every config shares:
  - checks the options of each call against the config's (`_create_builder_config`: datasets' own
    messages do not say which options are valid);
  - applies `exclude_problems` to what a config yields (decontamination.py), counting each row
    dropped as "contaminated:<set>";
  - batches rows into Arrow tables (several times faster than datasets' per-example encoding),
    keyed as datasets' packaged builders key them;
  - records the drop counts of each generation job beside the Arrow files (drops.py) and logs one
    total per split (`_download_and_prepare`, `_prepare_split`);
  - leaves out a split in which every row was dropped (datasets cannot load an empty split), and
    stops when every split is empty.
The three methods named above override private `datasets` hooks; tests/test_registration.py and
the builder tests fail loudly if a `datasets` release changes them.
"""

from collections import Counter

import datasets
import pyarrow as pa
from datasets.builder import Key

from . import decontamination, math_shepherd, model_sampled, prm800k, stepwise, synthetic
from .contract import ConfigSpec
from .drops import describe_drops, load_drops, logger, record
from .options import check_data_files

CONFIGS: dict[str, ConfigSpec] = {
    "synthetic": synthetic.SPEC,
    "prm800k": prm800k.SPEC,
    "model_sampled": model_sampled.SPEC,
    "math_shepherd": math_shepherd.SPEC,
    "stepwise": stepwise.SPEC,
}

ROWS_PER_TABLE = 1000
VERSION = datasets.Version("1.0.0")


class PRMBuilder(datasets.ArrowBasedBuilder):
    VERSION = VERSION
    BUILDER_CONFIGS = [
        spec.config_class(name=name, version=VERSION, description=spec.description)
        for name, spec in CONFIGS.items()
    ]
    DEFAULT_CONFIG_NAME = "synthetic"
    DEFAULT_WRITER_BATCH_SIZE = ROWS_PER_TABLE
    # The folder of the build in progress, where each job records its drops; None when streaming.
    _drops_dir: str | None = None

    def __init__(self, *args, data_files=None, base_path=None, **kwargs):
        # Before datasets resolves data_files (here, before any config exists): a folder there is our one-line error.
        check_data_files(data_files, base_path)
        super().__init__(*args, data_files=data_files, base_path=base_path, **kwargs)

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        # datasets' own messages for these ("doesn't have a 'x' key") do not say what is valid.
        name = config_name or self.DEFAULT_CONFIG_NAME
        if name not in CONFIGS:
            raise ValueError(f"unknown prm_builder config {name!r}; valid configs: {', '.join(CONFIGS)}")
        valid = CONFIGS[name].config_class.option_names()
        unknown = sorted(set(config_kwargs) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for prm_builder config {name!r}; "
                f"valid options: {', '.join(valid)}"
            )
        # datasets skips an option passed as None (the config keeps its default), which would build
        # something other than what was asked: refuse it where None is not the option's own default.
        defaults = CONFIGS[name].config_class.option_defaults()
        refused = [key for key, value in config_kwargs.items() if value is None and defaults.get(key) is not None]
        if refused:
            key = refused[0]
            raise ValueError(f"{key}=None: expected a value; leave {key} out to get its default, {defaults[key]!r}")
        return super()._create_builder_config(name, custom_features, config_id, **config_kwargs)

    @property
    def _spec(self) -> ConfigSpec:
        return CONFIGS[self.config.name]

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self._spec.description,
            features=self._spec.row_features(self.config),
            homepage=self._spec.homepage,
            license=self._spec.license,
            citation=self._spec.citation,
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
            counts = load_drops(self._output_dir)
            found = "; ".join(f"{name}: {describe_drops(counts.get(name, Counter())) or 'no items'}" for name in empty)
            raise ValueError(f"{self.config.name}: no split has any row with these options ({found})")
        for name in empty:
            logger.warning(f"{self.config.name}: split {name!r} is left out: every row was dropped")
            del self.info.splits[name]

    def _split_generators(self, dl_manager):
        generators = self._spec.split_generators(self.config, dl_manager)
        splits = [generator.gen_kwargs["split"] for generator in generators]
        excluders = decontamination.excluders(self.config.exclude_problems, splits, dl_manager)
        for generator in generators:
            generator.gen_kwargs["excluder"] = excluders[generator.gen_kwargs["split"]]
        return generators

    def _prepare_split(self, split_generator, **kwargs):
        super()._prepare_split(split_generator, **kwargs)
        # Each generation job (one per num_proc worker) recorded its own counts: report the split's total once.
        drops_dir = self._drops_dir
        if drops_dir:
            counts = load_drops(drops_dir).get(split_generator.name)
            if counts:
                logger.warning(f"{split_generator.name}: {describe_drops(counts)}")

    def _generate_tables(self, split, excluder=None, **gen_kwargs):
        spec, drops = self._spec, Counter()
        if spec.generate_tables is not None:  # a config that converts column-wise (math_shepherd)
            for index, table in enumerate(spec.generate_tables(self.config, drops, split=split, **gen_kwargs)):
                yield Key(0, index), excluder.filter_table(table, drops) if excluder else table
            self._record_drops(split, drops)
            return
        schema = self.info.features.arrow_schema
        for shard_index, shard_kwargs in self._shard_jobs(gen_kwargs):
            # Keys as datasets' packaged builders give them: (shard within this job, batch within the shard).
            batch, batch_index = [], 0
            rows = spec.generate_rows(self.config, drops, split=split, **shard_kwargs)
            for row in excluder.filter(rows, drops) if excluder else rows:
                batch.append(row)
                if len(batch) == ROWS_PER_TABLE:
                    yield Key(shard_index, batch_index), pa.Table.from_pylist(batch, schema=schema)
                    batch, batch_index = [], batch_index + 1
            if batch:
                yield Key(shard_index, batch_index), pa.Table.from_pylist(batch, schema=schema)
        self._record_drops(split, drops)

    def _shard_jobs(self, gen_kwargs: dict):
        """(shard index, gen_kwargs for that shard alone), or one job for configs that need all shards at once."""
        if not self._spec.shards_are_independent or "shards" not in gen_kwargs:
            return [(0, gen_kwargs)]
        return [(index, {**gen_kwargs, "shards": [shard]}) for index, shard in enumerate(gen_kwargs["shards"])]

    def _record_drops(self, split: str, counts: Counter) -> None:
        drops_dir = self._drops_dir
        if drops_dir:
            record(drops_dir, split, counts)
        elif counts:  # streaming: no build folder, each job reports its own counts
            logger.warning(f"{split}: {describe_drops(counts)}")
