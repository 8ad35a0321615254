"""The dataset card: one README.md for a Hub repo that holds several prm_builder configs.

The template is `data/dataset_card.md` inside the package, a copy of the project's root
`dataset_card.md` (the one users read and edit; a test checks the two are identical). A config
owns its `configs:` and `dataset_info:` entries in the card's YAML and its section of the body,
between HTML comment markers; rendering a config replaces exactly those and keeps everything
else, so `synthetic`, `prm800k` and `model_sampled` share one card.
"""

import datetime
import re
from collections import Counter
from pathlib import Path

import datasets
import jinja2
import yaml
from datasets import DatasetDict, DatasetInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError

from .builder import CONFIGS
from .redact import LOCAL, REDACTED, SECRET_NAME, public_value, redact
from .stats import summarize_splits

CARD_TEMPLATE = Path(__file__).resolve().parent / "data" / "dataset_card.md"
CARD_FILENAME = "README.md"
PLOT_FILENAME = "distributions.png"
TAGS = ["process-reward-model", "stepwise-supervision", "trl", "math"]
TASK_CATEGORIES = ["token-classification"]
# Hub license ids, and how a config module's LICENSE text names them ("MIT (GSM8K)" -> mit).
LICENSE_PATTERNS = {"mit": r"\bMIT\b", "apache-2.0": r"\bApache\b", "cc-by-4.0": r"\bCC[- ]BY[- ]4\.0\b"}

# Said under the options table when a value in it was hidden.
HIDDEN_NOTES = {
    LOCAL: f"`{LOCAL}/NAME` stands for a file or folder on the machine that built this config: "
    "point it at your own copy to rebuild.",
    REDACTED: f"`{REDACTED}` hides a credential, never published.",
}

REGION_START, REGION_END = "<!-- prm-builder:configs:start -->", "<!-- prm-builder:configs:end -->"
REGION = re.compile(re.escape(REGION_START) + r".*?" + re.escape(REGION_END), re.DOTALL)
SECTION = re.compile(
    r"<!-- prm-builder:config:start (?P<name>\S+) licenses=(?P<licenses>\S*) -->.*?"
    r"<!-- prm-builder:config:end (?P=name) -->",
    re.DOTALL,
)


def render_card(
    existing: str | None,
    repo_id: str,
    config_name: str,
    info: DatasetInfo,
    section: str,
    where: str = CARD_FILENAME,
    name_from_configs: bool = False,
) -> str:
    """The README.md after adding (or replacing) one config: its YAML entries and its body section.

    Everything else in an existing card is kept: other configs' sections and metadata, and any
    text outside the configs region. Without a body, the card is the template's skeleton.
    `where` names the existing card in errors. The card's `pretty_name` is the repo's name, or with
    `name_from_configs` (an export to a folder, whose name is no title: `export`, `out`) one made from
    the configs it holds (`content_name`); a name someone wrote into the card is kept either way.
    """
    data, body = parse_card(existing, where)

    sections = {match["name"]: match[0] for match in SECTION.finditer(_region(body))}
    generated = {repo_id.rpartition("/")[2], content_name(sections)}  # names this function gave before
    old_title = data.get("pretty_name") if name_from_configs and data.get("pretty_name") in generated else None
    if old_title:
        data["pretty_name"] = None  # ours, not someone's: name the card after what it holds now
    sections[config_name] = section.strip()
    sections = dict(sorted(sections.items()))

    data_files = [{"split": split, "path": f"{config_name}/{split}-*"} for split in info.splits]
    MetadataConfigs({config_name: {"data_files": data_files}}).to_dataset_card_data(data)
    DatasetInfosDict({config_name: info}).to_dataset_card_data(data)
    licenses = sorted({lic for s in sections.values() for lic in SECTION.match(s)["licenses"].split(",") if lic})
    data["license"] = licenses[0] if len(licenses) == 1 else licenses
    data["language"] = data.get("language") or ["en"]
    data["task_categories"] = _union(data.get("task_categories"), TASK_CATEGORIES)
    data["tags"] = _union(data.get("tags"), TAGS)
    data["size_categories"] = [_size_category(_total_rows(data))]
    data["pretty_name"] = data.get("pretty_name") or (
        content_name(sections) if name_from_configs else repo_id.rpartition("/")[2]
    )

    if old_title and body.lstrip("\n").startswith(f"# {old_title}\n"):
        body = body.replace(f"# {old_title}\n", f"# {data['pretty_name']}\n", 1)  # the template's heading
    region = "\n\n".join([REGION_START, *sections.values(), REGION_END])
    if REGION.search(body):
        body = REGION.sub(lambda _: region, body, count=1)
    elif body.strip():
        body = body.rstrip() + "\n\n## Configs\n\n" + region + "\n"
    else:
        skeleton = _template().render(card_data="", pretty_name=data["pretty_name"], repo_id=repo_id)
        body = REGION.sub(lambda _: region, DatasetCard(skeleton).text, count=1)
    return f"---\n{data.to_yaml()}\n---\n{body}"


def content_name(config_names) -> str:
    """A card's title from the configs it holds: `Process reward model data: prm800k, synthetic`."""
    return "Process reward model data: " + ", ".join(sorted(config_names)) if config_names else ""


def parse_card(text: str | None, where: str) -> tuple[DatasetCardData, str]:
    """(YAML metadata, body) of an existing card; empty for none."""
    if not text:
        return DatasetCardData(), ""
    try:
        card = DatasetCard(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(
            f"{where}: the existing card's YAML metadata does not parse ({error}); fix or remove it"
        ) from None
    return card.data, card.text


def _region(body: str) -> str:
    match = REGION.search(body)
    return match[0] if match else ""


def _union(existing, ours: list[str]) -> list[str]:
    existing = [existing] if isinstance(existing, str) else list(existing or [])
    return existing + [item for item in ours if item not in existing]


def _total_rows(data: DatasetCardData) -> int:
    infos = data.get("dataset_info") or []
    infos = [infos] if isinstance(infos, dict) else infos
    return sum(split.get("num_examples", 0) for info in infos for split in info.get("splits", []))


def _size_category(rows: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ]
    for bound, name in bounds:
        if rows < bound:
            return name
    return "10M<n<100M"


def render_section(
    dataset_dict: DatasetDict,
    config_name: str,
    repo_id: str,
    resolved: dict | None,
    drops: dict[str, Counter],
    model_license: str | None,
) -> str:
    """One config's section of the card body: what it is, how it was built, and its numbers.

    `resolved` are the options from `resolved_options` (None: not recorded).
    """
    spec = CONFIGS[config_name]
    model = _model_info(resolved.get("model"), model_license) if resolved else None
    public = None if resolved is None else {name: _public(name, value) for name, value in resolved.items()}
    summary = summarize_splits(dataset_dict, drops)
    split_names = list(summary)
    license_ids = _license_ids(spec.license)
    if model:
        # Generated text comes under the model's terms too; unknown terms are "other" on the Hub.
        license_ids += _license_ids(model["license"]) if model["license"] else ["other"]
    context = {
        "name": config_name,
        "description": spec.description,
        "homepage": spec.homepage,
        "license": spec.license,
        "license_ids": sorted(set(license_ids)),
        "citation": spec.citation.strip(),
        "model": model,
        "version": package_version(),
        "datasets_version": datasets.__version__,
        "date": _build_date(),
        "options": [(name, _table_cell(value)) for name, value in public.items()]
        if public is not None
        else [("(not recorded)", "pass options= to push_to_hub")],
        "call_options": [(name, repr(value)) for name, value in (public or {}).items()],
        "hidden_note": " ".join(note for marker, note in HIDDEN_NOTES.items() if marker in repr(public) + repr(model)),
        "split_names": split_names,
        "splits": [_split_row(split, s) for split, s in summary.items()],
        "sources": _per_split(summary, lambda s: s["rows_per_source"]),
        "breakdowns": [
            (column, _per_split(summary, lambda s, c=column: s.get("rows_per_value", {}).get(c, {})))
            for column in sorted({c for s in summary.values() for c in s.get("rows_per_value", {})})
        ],
        "agreement": [_agreement_row(split, s["agreement"]) for split, s in summary.items() if "agreement" in s],
        "plot": f"{config_name}/{PLOT_FILENAME}",
        "repo_id": repo_id,
        "test_split_flag": " ".join(_train_flags(split_names)),
    }
    # The macro alone: the skeleton around it is rendered (and discarded) with blank values.
    skeleton_values = {"card_data": "", "pretty_name": "", "repo_id": repo_id}
    # Options are made public above; this pass catches a credential anywhere else in the text.
    return redact(str(_template().make_module(skeleton_values).config_section(context)))


def resolved_options(config_name: str, options: dict | None) -> dict | None:
    """The options as the builder saw them: validated, normalized, defaults filled in."""
    if options is None:
        return None
    # data_dir/data_files are shown as given: datasets resolves them only inside load_dataset.
    local = {name: options[name] for name in ("data_dir", "data_files") if options.get(name) is not None}
    rest = {name: value for name, value in options.items() if name not in ("data_dir", "data_files")}
    config = CONFIGS[config_name].config_class(name=config_name, **rest)
    return {**local, **config.options()}


def _public(name: str, value):
    """An option's value as the card shows it: secrets redacted, local paths as `<local>/NAME`."""
    return REDACTED if SECRET_NAME.search(name) and value not in (None, "") else public_value(value)


def _table_cell(value) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    # One table cell: no raw newlines or pipes, and no backticks that would end the code span.
    return text.replace("\n", "\\n").replace("|", "\\|").replace("`", "'")


def _split_row(split: str, s: dict) -> dict:
    return {
        "name": split,
        "rows": f"{s['rows']:,}",
        "steps": f"{s['steps']:,}",
        "positive_steps": f"{s['positive_steps']:,}",
        "negative_steps": f"{s['negative_steps']:,}",
        "positive_fraction": f"{s['positive_fraction']:.1%}",
        "rows_with_error": f"{s['rows_with_error']:,}",
        "dropped": ", ".join(f"{n:,} {reason}" for reason, n in s["dropped"].items()) or "nothing",
        "steps_per_solution": _distribution_text(s["steps_per_solution"]),
        "first_error_position": _distribution_text(s["first_error_position"]),
    }


def _agreement_row(split: str, a: dict) -> dict:
    both = a["both_labelled"]
    agreed = f"{a['agreed']:,} ({a['agreement']:.1%})" if both else "-"
    return {
        "split": split,
        "judged": f"{a['judge_labelled']:,}",
        "dropped": ", ".join(f"{n:,} {reason}" for reason, n in a["judge_dropped"].items()) or "none",
        "both": f"{both:,}",
        "agreed": agreed,
        **{kind: (f"{n:,}" if both else "-") for kind, n in a["confusion"].items()},
    }


def _distribution_text(d: dict) -> str:
    return f"{d['mean']} / {d['median']:g} / {d['max']}" if d["count"] else "no errors"


def _per_split(summary: dict, counts_of) -> list[tuple[str, list[str]]]:
    """[(value, [count in each split])] for a per-split mapping of value -> count."""
    values = sorted({value for s in summary.values() for value in counts_of(s)})
    return [(value, [f"{counts_of(s).get(value, 0):,}" for s in summary.values()]) for value in values]


def _train_flags(split_names: list[str]) -> list[str]:
    flags = []
    if "train" not in split_names:
        flags.append(f"--dataset_train_split {split_names[0]}")
    if "test" not in split_names:
        flags.append("--dataset_test_split none")
    return flags


def _model_info(model: str | None, license: str | None) -> dict | None:
    if not model:
        return None
    local = Path(model).is_dir()
    return {
        "name": public_value(model),
        "url": None if local else f"https://huggingface.co/{model}",
        "license": license or _model_card_license(model),
    }


def _model_card_license(model: str) -> str | None:
    """The license on the model's card when the card is on this machine (a local folder or the HF cache)."""
    card_path = Path(model) / "README.md"
    if not card_path.is_file():
        try:
            cached = try_to_load_from_cache(model, "README.md")
        except (HFValidationError, ValueError):
            return None
        if not isinstance(cached, str):
            return None
        card_path = Path(cached)
    data = ModelCard.load(card_path, ignore_metadata_errors=True).data
    license = data.get("license")
    if license == "other":
        return data.get("license_name") or license
    return license if isinstance(license, str) else None


def _license_ids(text: str) -> list[str]:
    """Hub license ids named in a license text: "MIT (GSM8K)" -> [mit]; an id ("llama3.1") passes through."""
    found = [license_id for license_id, pattern in LICENSE_PATTERNS.items() if re.search(pattern, text, re.IGNORECASE)]
    if found:
        return found
    text = text.strip().lower()
    return [text if re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", text) else "other"]


def _template() -> jinja2.Template:
    if not CARD_TEMPLATE.is_file():
        raise FileNotFoundError(f"dataset card template not found at {CARD_TEMPLATE}; reinstall prm-builder")
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(CARD_TEMPLATE.read_text(encoding="utf-8"))


def _build_date() -> str:
    return datetime.date.today().isoformat()


def package_version() -> str:
    from . import __version__

    return __version__
