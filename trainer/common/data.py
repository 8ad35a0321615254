"""The trainer's data: what `--dataset_name` (prm-train), `--dataset` (prm-eval) and a mixture entry name, loaded.

One module for the three, so a dataset is found, refused or explained the same way everywhere:

- `prm_builder:CONFIG` builds with `load_dataset("prm_builder", name=CONFIG, **options)`;
- a folder saved by `prm-builder build` (`dataset_dict.json` or `state.json`) is read with `load_from_disk`;
- a folder of data files (`.jsonl`, `.json`, `.parquet`, `.csv`, `.arrow`) goes to `load_dataset`;
- anything else that looks like a Hub id goes to `load_dataset`, and its failure names what was asked.

A path that looks local and does not exist fails at once (no Hub round trip), and a folder that is neither a dataset
nor data files says what it holds. `--dataset_options` are parsed here, and the options a built folder was made with
are read back from its `prm_builder_options.json` (prm_builder.common.options.OPTIONS_FILE).
"""

import json
from pathlib import Path

from prm_builder.command_line import folder_contents, looks_local, missing_path

# Files `load_dataset` reads from a folder (its packaged builders); a folder with none of them is not data.
DATA_FILE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".csv", ".tsv", ".arrow")
# Files that make a folder a model (or a LoRA adapter), not data, although they are JSON.
MODEL_FILES = ("config.json", "adapter_config.json")


def parse_dataset_options(options) -> dict:
    """`--dataset_options` as `load_dataset` keyword arguments, from `key=value` strings, a JSON object or a dict."""
    import yaml

    if options is None:
        return {}
    if isinstance(options, dict):
        return dict(options)
    if isinstance(options, str):
        options = [options]
    if len(options) == 1 and options[0].lstrip().startswith("{"):
        parsed = json.loads(options[0])
        if not isinstance(parsed, dict):
            raise ValueError(f"--dataset_options as JSON must be an object, got {options[0]!r}")
        return parsed
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--dataset_options expects key=value pairs, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return parsed


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by `save_to_disk` (a DatasetDict, or one Dataset)?"""
    return Path(path, "dataset_dict.json").is_file() or Path(path, "state.json").is_file()


def _data_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name.endswith(DATA_FILE_SUFFIXES)
            and p.name not in MODEL_FILES and not p.name.startswith(("tokenizer", "special_tokens", "generation_"))]


def check_dataset_folder(name: str, flag: str = "--dataset_name") -> None:
    """Refuse `name` when it looks local and is missing, or is a folder that holds no dataset and no data files."""
    missing = missing_path(name, flag, "folder")
    if missing:
        raise FileNotFoundError(missing)
    folder = Path(name).expanduser()
    if not folder.is_dir() or is_saved_dataset(folder) or _data_files(folder):
        return
    model = next((file for file in MODEL_FILES if (folder / file).is_file()), None)
    hint = (f"; it looks like a model ({model}): pass it as a model, not as data" if model
            else "; build one with `prm-builder build CONFIG --output-dir DIR`")
    raise ValueError(
        f"{flag} {name!r} is a folder but neither a dataset saved by `prm-builder build` (no dataset_dict.json) nor a "
        f"folder of data files ({', '.join(DATA_FILE_SUFFIXES[:6])}); it holds {folder_contents(folder)}{hint}"
    )


def load_prm_dataset(name: str, config: str | None = None, options: dict | None = None, flag: str = "--dataset_name"):
    """The dataset behind `--dataset_name` (or prm-eval's `--dataset`, named by `flag` in errors), as a DatasetDict."""
    import datasets

    options = options or {}
    if name == "prm_builder" or name.startswith("prm_builder:"):
        import prm_builder  # noqa: F401  (registers the "prm_builder" builder with datasets)

        suffix = name.partition(":")[2]
        if suffix and config and suffix != config:
            raise ValueError(f"{flag} {name!r} and --dataset_config {config!r} name different configs")
        config = suffix or config
        if not config:
            raise ValueError(
                f"{flag} {name!r} needs a config, e.g. prm_builder:synthetic (or --dataset_config synthetic)"
            )
        dataset = datasets.load_dataset("prm_builder", name=config, **options)
    else:
        check_dataset_folder(name, flag)
        if is_saved_dataset(Path(name).expanduser()):
            if options or config:
                raise ValueError(
                    f"{name} is a saved dataset: --dataset_config and --dataset_options apply to builders, got "
                    f"config={config!r}, options={options}"
                )
            dataset = datasets.load_from_disk(str(Path(name).expanduser()))
        elif Path(name).exists():
            dataset = datasets.load_dataset(name, name=config, **options)
        else:
            dataset = _load_from_hub(name, config, options, flag)
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    return dataset


def _load_from_hub(name: str, config: str | None, options: dict, flag: str):
    """`load_dataset(name)` for a Hub id; a failure says it is neither here nor reachable, and the ways out."""
    import datasets
    from huggingface_hub import constants

    try:
        return datasets.load_dataset(name, name=config, **options)
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        offline = constants.HF_HUB_OFFLINE or "Offline" in str(error)
        why = ("HF_HUB_OFFLINE is set and no copy is in the cache" if offline
               else " ".join(str(error).split()) or type(error).__name__)
        where = "" if looks_local(name) else f" (no folder {Path(name).resolve()} here)"
        raise ValueError(
            f"{flag} {name!r} is not a local folder{where} and could not be loaded from the Hub ({why}): pass a folder "
            "saved by `prm-builder build`, prm_builder:CONFIG, or a Hub dataset id"
            + ("" if offline else ", or set HF_HUB_OFFLINE=1 to use a copy already in the cache")
        ) from error


def built_options(dataset_name: str | None) -> dict:
    """The builder options a folder saved by `prm-builder build` was made with ({} for anything else)."""
    from prm_builder.common.options import OPTIONS_FILE

    path = Path(dataset_name or "", OPTIONS_FILE)
    if not dataset_name or not path.is_file():
        return {}
    return json.loads(path.read_text()).get("options") or {}
