"""The `prm-builder` command: build a config into a folder, inspect a built folder.

    prm-builder build synthetic --problems sample --output-dir out/synthetic
    prm-builder stats out/synthetic --plot out/synthetic.png
    prm-builder report out/synthetic --output report.html --per-source 5
    prm-builder push synthetic --problems gsm8k --repo-id user/math-prm

Every option of a config is a flag of `build CONFIG` (`--num-incorrect-per-problem 3`), made
from the config's dataclass fields, so the command line and `load_dataset` never drift apart.
A failure prints one line (failures.py: what failed, where, the ways out, in flag words) and
exits 1; `--debug` prints the full traceback as well.
"""

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from .command_line import follow_conventions, run_command

# Commands that need the configs' option dataclasses (and so datasets, pandas, pyarrow); the
# parser of every other command, `--help` included, is built without importing them.
CONFIG_COMMANDS = ("build", "push")


def _configs() -> dict:
    from .builder import CONFIGS

    return CONFIGS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser(with_configs=_command_of(argv) in CONFIG_COMMANDS)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    _quiet_and_redacted_logs()
    return run_command("prm-builder", lambda: args.run(args), debug=args.debug, option_names=_option_names,
                       model=lambda: _model_of(args))


def _command_of(argv: list[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _model_of(args: argparse.Namespace) -> str | None:
    """The model a build loads (given or the config's default), for errors that do not name it."""
    configs = _configs()
    config_class = configs[args.config].config_class if getattr(args, "config", None) in configs else None
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)} if config_class else {}
    model = getattr(args, "model", None) or defaults.get("model")
    return model if isinstance(model, str) else None


def _option_names() -> set[str]:
    """Every name a message may quote as a Python argument that is also a flag here."""
    names = {name for spec in _configs().values() for name in spec.config_class.option_names()}
    return names | {"export_dir", "repo_id", "cache_dir", "num_proc", "max_shard_size", "model_license", "revision"}


def _quiet_and_redacted_logs() -> None:
    """Redact credentials in every log line this process prints (datasets', huggingface_hub's, ours),
    and show each kind of huggingface_hub retry warning once."""
    import logging

    from .failures import OncePerKindOfRetry
    from .redact import RedactingFilter

    filters = [RedactingFilter(), OncePerKindOfRetry()]
    loggers = [logging.getLogger(), logging.getLogger("datasets"), logging.getLogger("huggingface_hub")]
    for handler in [logging.lastResort, *(h for logger in loggers for h in logger.handlers)]:
        for added in filters if handler is not None else []:
            for earlier in [f for f in handler.filters if type(f) is type(added)]:  # main() called again
                handler.removeFilter(earlier)
            handler.addFilter(added)


def make_parser(with_configs: bool = True) -> argparse.ArgumentParser:
    """The whole parser; without `with_configs`, `build` and `push` are listed but take no CONFIG."""
    parser = argparse.ArgumentParser(prog="prm-builder", description="Build, inspect and publish PRM datasets.")
    parser.add_argument("--debug", action="store_true", help="on failure, also print the full traceback")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    specs = _configs() if with_configs else {}
    add_build_command(commands, specs)
    add_stats_command(commands)
    add_report_command(commands)
    add_push_command(commands, specs)
    add_cache_commands(commands)
    add_tiny_model_command(commands)
    return follow_conventions(parser)


# `--debug` is also accepted after the command (`prm-builder build synthetic ... --debug`);
# SUPPRESS keeps a subcommand from resetting a `--debug` given before it.
DEBUG_FLAG = argparse.ArgumentParser(add_help=False)
DEBUG_FLAG.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="on failure, also print the full traceback")


def add_build_command(commands, specs: dict) -> None:
    build = commands.add_parser("build", help="build a config through load_dataset and save it to a folder")
    configs = build.add_subparsers(title="configs", metavar="CONFIG")
    for name, spec in specs.items():
        config_parser = configs.add_parser(name, help=spec.description, description=spec.description, parents=[DEBUG_FLAG])
        add_config_options(config_parser, spec.config_class)
        config_parser.add_argument("--output-dir", required=True, help="folder to save the built DatasetDict to")
        config_parser.add_argument("--num-proc", type=int, default=None, help="processes for generation")
        config_parser.add_argument("--cache-dir", default=None, help="datasets cache folder (default: HF_DATASETS_CACHE)")
        config_parser.add_argument(
            "--force-rebuild", action="store_true", help="ignore the Arrow cache and build again"
        )
        config_parser.add_argument("--plot", default=None, help="also draw the distributions to this PNG file")
        config_parser.set_defaults(run=run_build, config=name)


def add_stats_command(commands) -> None:
    stats = commands.add_parser("stats", help="summarize a folder saved by `build`", parents=[DEBUG_FLAG])
    stats.add_argument("path", help="folder written by `prm-builder build --output-dir`")
    stats.add_argument("--plot", default=None, help="draw steps per solution and first-error positions to this PNG")
    stats.add_argument("--json", action="store_true", help="print the summary as JSON")
    stats.set_defaults(run=run_stats)


def add_report_command(commands) -> None:
    from .report import add_report_arguments  # light: numpy, datasets and jinja2 load when it runs

    report = commands.add_parser(
        "report", help="write a self-contained HTML page of sampled rows, step by step, coloured by label",
        description="Write one HTML file (no server, no network) with the summary and plots of `stats`, then sampled "
                    "rows of each source step by step, coloured by label, with Monte Carlo scores, the judge's verdict "
                    "and, with --prm, a PRM's scores.",
        parents=[DEBUG_FLAG],
    )  # fmt: skip
    add_report_arguments(report)
    report.set_defaults(run=run_report)


def add_push_command(commands, specs: dict) -> None:
    push = commands.add_parser(
        "push", help="build a config through load_dataset and publish it to a Hub dataset repo (or a folder)"
    )
    push_configs = push.add_subparsers(title="configs", metavar="CONFIG")
    for name, spec in specs.items():
        config_parser = push_configs.add_parser(name, help=spec.description, description=spec.description, parents=[DEBUG_FLAG])
        add_config_options(config_parser, spec.config_class)
        add_push_options(config_parser)
        config_parser.set_defaults(run=run_push, config=name)


def add_cache_commands(commands) -> None:
    cache = commands.add_parser("cache", help="list, clear or repair model_sampled's generation caches")
    cache_actions = cache.add_subparsers(title="actions", metavar="ACTION")
    listing = cache_actions.add_parser("list", help="show each generation cache: model, options, problems done, size")
    clear = cache_actions.add_parser("clear", help="remove one generation cache (KEY) or all of them")
    clear.add_argument("key", nargs="?", default=None, help="a key from `cache list` (or a unique prefix); omit for all")
    clear.add_argument("--yes", action="store_true", help="remove all caches without asking")
    repair = cache_actions.add_parser("repair", help="drop the damaged records of one generation cache, keep the rest")
    repair.add_argument("key", help="a key from `cache list` (or a unique prefix)")
    for action, run in ((listing, run_cache_list), (clear, run_cache_clear), (repair, run_cache_repair)):
        action.add_argument(
            "--generation-cache-dir", default=None, help="root of the caches (default: <HF_DATASETS_CACHE>/prm_builder_generations)"
        )
        action.set_defaults(run=run)


def add_tiny_model_command(commands) -> None:
    tiny = commands.add_parser(
        "tiny-model", help="write a tiny untrained Qwen2 and its tokenizer to a folder, for offline demos", parents=[DEBUG_FLAG]
    )
    tiny.add_argument("path", help="folder to write (save_pretrained layout)")
    tiny.add_argument("--chat-template", action="store_true", help="give the tokenizer a ChatML chat template")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    tiny.set_defaults(run=run_tiny_model)


def run_tiny_model(args: argparse.Namespace) -> int:
    from .tiny_model import build_tiny_model

    path = build_tiny_model(args.path, with_chat_template=args.chat_template, seed=args.seed)
    print(f"wrote a tiny Qwen2 and its tokenizer to {path} (untrained: for trying the commands offline)")
    return 0


def add_push_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo-id", default=None,
        help="Hub dataset repo, 'namespace/name' (one repo holds every config); optional with --export-dir",
    )  # fmt: skip
    parser.add_argument("--private", action="store_true", default=None, help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing; default: main)")
    parser.add_argument(
        "--export-dir", default=None,
        help="write exactly what would be uploaded to this folder instead (replaced only once complete)",
    )  # fmt: skip
    parser.add_argument("--model-license", default=None, help="license of the sampled model, for the card (default: from its model card)")
    parser.add_argument("--max-shard-size", default="500MB", help="largest Parquet file (default: 500MB)")
    parser.add_argument("--num-proc", type=int, default=None, help="processes for generation")
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder (default: HF_DATASETS_CACHE)")


# -- options from the config dataclass -------------------------------------------------------------


def add_config_options(parser: argparse.ArgumentParser, config_class) -> None:
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    for name in config_class.option_names():
        flag = "--" + name.replace("_", "-")
        if name == "data_dir":
            parser.add_argument(flag, default=None, help="local folder with the source files")
            continue
        if name == "data_files":
            parser.add_argument(
                flag, nargs="+", default=None, metavar="SPLIT=PATH", help="explicit source files per split"
            )
            continue
        field = fields[name]
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kind, element = _base_type(hints[name])
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"{help_text} (default: {default})")
        elif kind is list:
            parser.add_argument(
                flag, default=None, type=_comma_list(element), help=f"{help_text} (comma-separated; default: {_show(default)})"
            )
        else:
            parser.add_argument(flag, default=None, type=kind if kind in (int, float) else str, help=f"{help_text} (default: {_show(default)})")


def _base_type(annotation):
    """(int | float | bool | str | list, list element type) of an option's annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) > 1:
            return str, None  # e.g. `str | list[str]`: the config parses the text itself
        annotation = members[0]
    if typing.get_origin(annotation) is list:
        (element,) = typing.get_args(annotation) or (str,)
        return list, element
    return (annotation if annotation in (bool, int, float) else str), None


def _comma_list(element):
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        return [element(item) for item in items] if element in (int, float) else items

    return parse


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def collect_options(args: argparse.Namespace, config_class) -> dict:
    """The options given on the command line (unset flags are left to the config's defaults)."""
    options = {}
    for name in config_class.option_names():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "data_files":
            value = _split_files(value)
        options[name] = value
    return options


def _split_files(items: list[str]) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for item in items:
        split, sep, path = item.partition("=")
        if not sep or not split or not path:
            raise ValueError(f"--data-files expects SPLIT=PATH items (e.g. train=phase2_train.jsonl), got {item!r}")
        if Path(path).is_dir():  # else datasets says only "Unable to find" the folder it was given
            raise ValueError(f"--data-files {item}: {path} is a folder; --data-files names files (e.g. "
                             f"{split}={Path(path) / 'train.jsonl'}), --data-dir {path} reads a folder")
        files.setdefault(split, []).append(path)
    return files


# -- commands ----------------------------------------------------------------------------------------


def run_build(args: argparse.Namespace) -> int:
    from datasets import DownloadMode, load_dataset

    import prm_builder  # noqa: F401 - registers the builder with datasets

    from .drops import recorded_drops, save_drops
    from .options import OPTIONS_FILE
    from .redact import without_credentials
    from .stats import format_summary, plot_distributions, summarize_splits

    options = collect_options(args, _configs()[args.config].config_class)
    dataset = load_dataset(
        "prm_builder",
        args.config,
        num_proc=args.num_proc,
        cache_dir=args.cache_dir,
        download_mode=DownloadMode.FORCE_REDOWNLOAD if args.force_rebuild else None,
        **options,
    )
    drops = recorded_drops(dataset)
    output = Path(args.output_dir)
    dataset.save_to_disk(str(output))
    save_drops(drops, output)
    # Read back by prm-train for its model card: credentials redacted (docs/trainer.md), local paths kept.
    stored = {"config": args.config, "options": without_credentials(_jsonable(options))}
    (output / OPTIONS_FILE).write_text(json.dumps(stored, indent=2))
    print(format_summary(summarize_splits(dataset, drops)))
    print(f"saved to {output} (load it with datasets.load_from_disk({str(output)!r}))")
    if args.plot:
        plot_distributions(dataset, args.plot, title=f"{_described(args.config, options)}: {output}")
        print(f"plot written to {args.plot}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from datasets import DatasetDict, load_from_disk

    from .drops import load_drops
    from .stats import format_summary, plot_distributions, summarize_splits

    path = Path(args.path)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a folder saved by `prm-builder build` (no dataset_dict.json); "
            "build one with `prm-builder build CONFIG --output-dir DIR`"
        )
    dataset = load_from_disk(str(path))
    assert isinstance(dataset, DatasetDict)
    summary = summarize_splits(dataset, load_drops(path))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if args.plot:
        plot_distributions(dataset, args.plot, title=_built_title(path) or str(path))
        print(f"plot written to {args.plot}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .report import report_command

    return report_command(args, _built_title(Path(args.path)))


def run_push(args: argparse.Namespace) -> int:
    from datasets import load_dataset

    from . import hub

    options = collect_options(args, _configs()[args.config].config_class)
    # Fail before a long build when the push cannot happen anyway.
    if args.export_dir is None:
        if args.repo_id is None:
            raise ValueError("push needs --repo-id (the Hub dataset repo), or --export-dir to write the files to a folder")
        hub.check_repo_id(args.repo_id)
        hub.require_token()
    elif args.repo_id is not None:
        hub.check_repo_id(args.repo_id)
    dataset = load_dataset("prm_builder", args.config, num_proc=args.num_proc, cache_dir=args.cache_dir, **options)
    published = {"options": options, "model_license": args.model_license, "max_shard_size": args.max_shard_size}
    if args.export_dir is not None:
        written = hub.export_to_folder(dataset, args.export_dir, args.config, repo_id=args.repo_id, **published)
        print("\n".join(f"wrote {Path(args.export_dir) / path}" for path in written))
        print(f"load it with datasets.load_dataset({args.export_dir!r}, name={args.config!r})")
        return 0
    result = hub.push_to_hub(
        dataset, args.repo_id, args.config, private=args.private, revision=args.revision, **published
    )
    print(f"pushed config {args.config!r} to {result.commit_url}")
    print(f"load it with datasets.load_dataset({result.repo_url.repo_id!r}, name={args.config!r})")
    return 0


def run_cache_list(args: argparse.Namespace) -> int:
    from . import generation_cache

    root = args.generation_cache_dir or generation_cache.default_root()
    summaries = generation_cache.list_caches(root)
    print(f"{len(summaries)} generation cache(s) in {root}")
    for summary in summaries:
        print(generation_cache.describe_cache(summary))
    return 0


def run_cache_clear(args: argparse.Namespace) -> int:
    from . import generation_cache

    root = args.generation_cache_dir or generation_cache.default_root()
    if args.key is not None:
        doomed = [generation_cache.resolve(root, args.key)]
    else:
        doomed = generation_cache.cache_folders(root)
        if doomed and not args.yes:
            if not sys.stdin.isatty():
                raise ValueError(f"refusing to remove all {len(doomed)} generation caches in {root} without --yes")
            if input(f"remove all {len(doomed)} generation caches in {root}? [y/N] ").strip().lower() != "y":
                return 1
    for path in doomed:
        generation_cache.remove(path)
        print(f"removed {path}")
    return 0


def run_cache_repair(args: argparse.Namespace) -> int:
    from . import generation_cache

    path = generation_cache.resolve(args.generation_cache_dir, args.key)
    dropped, kept = generation_cache.repair(path)
    print(f"repaired {path}: dropped {dropped} damaged record(s), kept {kept}")
    return 0


def _described(name: str, options: dict) -> str:
    """'synthetic (problems=sample)': what was built, for plot and page titles."""
    shown = ", ".join(f"{key}={_show(value)}" for key, value in options.items())
    return f"{name} ({shown})" if shown else name


def _built_title(path: Path) -> str | None:
    """The config and options a folder was built with, and the folder, from its prm_builder_options.json."""
    from .options import OPTIONS_FILE

    recorded = path / OPTIONS_FILE
    if not recorded.is_file():
        return None
    built = json.loads(recorded.read_text())
    return f"{_described(str(built.get('config', '?')), built.get('options') or {})}: {path}"


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


if __name__ == "__main__":
    sys.exit(main())
