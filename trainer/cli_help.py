"""`prm-train --help`: our options first, the inherited ones grouped after them, shown without importing torch.

The options of `prm-train` are the fields of three dataclasses, and one of them, transformers' `TrainingArguments`,
cannot be imported without torch and PEFT (seconds). So the help text is rendered once with the real parser and kept
in a cache file named after the installed versions of the libraries that define the options and the source of our
own; later `--help` calls print that file (benchmarks/startup.py times it). A different version anywhere renders it again.
"""

import dataclasses
import hashlib
import os
from pathlib import Path

# Distributions whose versions decide the options, and our modules that declare them.
_LIBRARIES = ("transformers", "trl", "peft", "accelerate")
_SOURCES = ("cli.py", "config.py", "cli_help.py", "mixture.py")

USAGE = "%(prog)s [--config FILE.yaml] --model_name_or_path MODEL --dataset_name DATASET [OPTIONS]"


def group_options(parser, script_arguments, config, model_config) -> None:
    """Put the options into groups, ours first: prm-train's, the PRM training options, the model options, then the
    options PRMConfig inherits from `transformers.TrainingArguments` (defaults that PRMConfig changes included)."""
    from transformers import TrainingArguments

    inherited = {field.name for field in dataclasses.fields(TrainingArguments)}
    titles = {
        "prm-train options": {field.name for field in dataclasses.fields(script_arguments)},
        "PRM training options (PRMConfig)": {field.name for field in dataclasses.fields(config)} - inherited,
        "model options (trl.ModelConfig)": {field.name for field in dataclasses.fields(model_config)},
        "training options inherited from transformers.TrainingArguments": inherited,
    }
    groups = {title: parser.add_argument_group(title) for title in titles}
    for action in parser._actions:  # argparse keeps groups in private lists; there is no public way to regroup
        title = next((title for title, names in titles.items() if action.dest in names), None)
        if title is None:
            continue  # -h
        for group in parser._action_groups:
            if action in group._group_actions:
                group._group_actions.remove(action)
        groups[title]._group_actions.append(action)
    parser._action_groups = [group for group in parser._action_groups if group._group_actions]
    parser.usage = USAGE
    parser.description = (
        "Train a process reward model on step-labelled rows, evaluate it on the test split and save it with a model "
        "card. Every option can also be set in the YAML file given with --config (command line flags win)."
    )


def _cache_file(prog: str) -> Path:
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(prog.encode())
    for library in _LIBRARIES:
        try:
            digest.update(f"{library}=={version(library)};".encode())
        except PackageNotFoundError:
            digest.update(f"{library} missing;".encode())
    here = Path(__file__).parent
    for source in _SOURCES:
        digest.update((here / source).read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prm_builder"
    return cache / f"{prog}-help-{digest.hexdigest()[:16]}.txt"


def print_help(make_parser, prog: str) -> None:
    """Print the help of `make_parser(prog=prog)`, from the cache when it is there, rendering and caching it if not."""
    path = _cache_file(prog)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        text = make_parser(prog=prog).format_help()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(text, encoding="utf-8")
            partial.replace(path)  # atomic: two first runs at once cannot leave half a file
        except OSError:
            pass  # a read-only home only costs speed
    print(text, end="")
