"""Publish built splits: one Hub dataset repo holds every config side by side, with a generated card.

    prm_builder.push_to_hub(ds, "user/math-prm", "synthetic", options={"problems": "gsm8k"})
    prm_builder.push_to_hub(ds, "user/math-prm", "synthetic", options=..., export_dir="out/")  # no upload

A config owns the files `<config>/<split>-NNNNN-of-NNNNN.parquet` and `<config>/distributions.png`,
its `configs:` and `dataset_info:` entries in the card's YAML, and its section of the card body
(between HTML comment markers, rendered from dataset_card.md). Pushing a config replaces exactly
those and keeps everything else, so `synthetic`, `prm800k` and `model_sampled` live in one repo.

Export and upload share one path: the files are written to a folder (the export folder, or a
temporary one), and the upload commits that folder's files in one commit per config, so a failed
push leaves the repo unchanged and a rerun sends only what the Hub does not have yet.
"""

import contextlib
import datetime
import re
import tempfile
from collections import Counter
from pathlib import Path

import datasets
import jinja2
import yaml
from datasets import DatasetDict, DatasetInfo, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from datasets.utils.tqdm import tqdm  # honours datasets' disable_progress_bars()
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    DatasetCardData,
    HfApi,
    ModelCard,
    get_token,
    try_to_load_from_cache,
)
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from .builder import SOURCES
from .drops import recorded_drops
from .features import CORE_FEATURES
from .stats import plot_distributions, summarize

# A symlink to the project's dataset_card.md, so the template ships inside the package.
CARD_TEMPLATE = Path(__file__).resolve().parent / "data" / "dataset_card.md"
CARD_FILENAME = "README.md"
PLOT_FILENAME = "distributions.png"
DEFAULT_MAX_SHARD_SIZE = "500MB"
TAGS = ["process-reward-model", "stepwise-supervision", "trl", "math"]
TASK_CATEGORIES = ["token-classification"]
# Hub license ids, and how a config module's LICENSE text names them ("MIT (GSM8K)" -> mit).
LICENSE_PATTERNS = {"mit": r"\bMIT\b", "apache-2.0": r"\bApache\b", "cc-by-4.0": r"\bCC[- ]BY[- ]4\.0\b"}
# Option names whose values must never reach a public card (e.g. an API key for a backend).
SECRET_OPTION = re.compile(r"(^|_)(key|token|secret|password)$", re.IGNORECASE)
# Another writer committing between our read of the card and our commit: read again and retry.
COMMIT_ATTEMPTS = 3

REGION_START, REGION_END = "<!-- prm-builder:configs:start -->", "<!-- prm-builder:configs:end -->"
REGION = re.compile(re.escape(REGION_START) + r".*?" + re.escape(REGION_END), re.DOTALL)
SECTION = re.compile(
    r"<!-- prm-builder:config:start (?P<name>\S+) licenses=(?P<licenses>\S*) -->.*?"
    r"<!-- prm-builder:config:end (?P=name) -->",
    re.DOTALL,
)


class PushError(RuntimeError):
    """The push could not go ahead or did not finish; the message says why and what to do."""


# -- public API --------------------------------------------------------------------------------------


def push_to_hub(
    dataset_dict: DatasetDict,
    repo_id: str,
    config_name: str,
    *,
    options: dict | None = None,
    drops: dict[str, Counter] | None = None,
    model_license: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    export_dir: str | Path | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    commit_message: str | None = None,
):
    """Upload the splits of one config to a Hub dataset repo (or write them to `export_dir`).

    Args:
        dataset_dict: the built splits, e.g. `load_dataset("prm_builder", config_name, **options)`.
        repo_id: `namespace/name` (or `name`, in the namespace of the token's user).
        config_name: the prm_builder config the splits come from; also the Hub config name.
        options: the builder options used, printed on the card (defaults filled in); None says
            on the card that they were not recorded.
        drops: items dropped per split; by default read from the build's Arrow folder.
        model_license: license of the model behind a `model_sampled` config; by default taken
            from the model's card when it is on this machine, else the card says "see the model card".
        private: visibility of a repo created by this push (an existing repo keeps its own).
        revision: branch to push to (created if missing); default the main branch.
        token: Hub token; by default HF_TOKEN or the token saved by `hf auth login`.
        export_dir: write exactly what would be uploaded to this folder instead of uploading.
        max_shard_size: largest Parquet file, in bytes or as "500MB".
        commit_message: default "Upload config CONFIG with prm-builder VERSION".

    Returns:
        the Hub's CommitInfo, or with `export_dir` the list of files written (paths relative to it).
    """
    if export_dir is not None:
        return export_to_folder(
            dataset_dict, export_dir, repo_id, config_name,
            options=options, drops=drops, model_license=model_license, max_shard_size=max_shard_size,
        )  # fmt: skip
    check_repo_id(repo_id)
    _check_dataset(dataset_dict, config_name)
    shard_bytes = convert_file_size_to_int(max_shard_size)
    resolved = resolved_options(config_name, options)
    api = HfApi(token=require_token(token), library_name="prm-builder", library_version=_package_version())
    with _explained_hub_errors(repo_id, "checking the token"):
        user = api.whoami()["name"]
    if "/" not in repo_id:
        repo_id = f"{user}/{repo_id}"
    drops = recorded_drops(dataset_dict) if drops is None else drops
    section = render_section(dataset_dict, config_name, repo_id, resolved, drops, model_license)
    with _explained_hub_errors(repo_id, "creating the repo", user=user):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.auth_check(repo_id, repo_type="dataset", write=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prm_builder_push_") as staging:
        files, info = write_config_files(dataset_dict, staging, config_name, shard_bytes)
        additions = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(Path(staging, f))) for f in files]
        _upload(api, repo_id, revision, additions, user)
        message = commit_message or f"Upload config {config_name} with prm-builder {_package_version()}"
        return _commit(api, repo_id, revision, config_name, info, section, additions, message, user)


def export_to_folder(
    dataset_dict: DatasetDict,
    export_dir: str | Path,
    repo_id: str,
    config_name: str,
    *,
    options: dict | None = None,
    drops: dict[str, Counter] | None = None,
    model_license: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> list[str]:
    """Write what `push_to_hub` would upload into `export_dir`, merging into a card already there.

    `load_dataset(export_dir, name=config_name)` then reads the splits back. Returns the files
    written, relative to `export_dir`.
    """
    check_repo_id(repo_id)
    _check_dataset(dataset_dict, config_name)
    shard_bytes = convert_file_size_to_int(max_shard_size)
    drops = recorded_drops(dataset_dict) if drops is None else drops
    section = render_section(
        dataset_dict, config_name, repo_id, resolved_options(config_name, options), drops, model_license
    )
    folder = Path(export_dir)
    card_path = folder / CARD_FILENAME
    existing = card_path.read_text(encoding="utf-8") if card_path.is_file() else None
    _parse_card(existing, str(card_path))  # a broken card stops the export before any file changes
    folder.mkdir(parents=True, exist_ok=True)
    for stale in _generated_files(folder, config_name):
        stale.unlink()
    files, info = write_config_files(dataset_dict, folder, config_name, shard_bytes)
    card_path.write_text(render_card(existing, repo_id, config_name, info, section, str(card_path)), encoding="utf-8")
    return [*files, CARD_FILENAME]


def check_repo_id(repo_id: str) -> None:
    """Raise ValueError when `repo_id` is not `name` or `namespace/name` as the Hub spells them."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(
            f"repo id must be 'namespace/name' or 'name' (letters, digits, -, _, .), got {repo_id!r}: {error}"
        ) from None


def require_token(token: str | None = None) -> str:
    """The token to push with (never printed): the argument, else HF_TOKEN or the saved login."""
    token = token or get_token()
    if not token:
        raise PushError(
            "not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN to a token with write "
            "access (or write the files to a folder with --export-dir, which needs no token)"
        )
    return token


# -- files ---------------------------------------------------------------------------------------


def write_config_files(
    dataset_dict: DatasetDict, folder: str | Path, config_name: str, max_shard_size: int
) -> tuple[list[str], DatasetInfo]:
    """Write the Parquet shards and the plot of one config under `folder/<config>/`.

    Returns the paths written (relative to `folder`, which are also the paths in the repo) and
    the config's DatasetInfo for the card's YAML.
    """
    folder = Path(folder)
    (folder / config_name).mkdir(parents=True, exist_ok=True)
    files, splits, download_size = [], SplitDict(), 0
    for split, data in dataset_dict.items():
        num_bytes = data.data.nbytes
        # Same rule as datasets' own push_to_hub: no shard above max_shard_size, at most one per row.
        num_shards = max(1, min(num_bytes // max_shard_size + 1, len(data)))
        for index in tqdm(range(num_shards), desc=f"{config_name}/{split}: writing Parquet", unit="shard"):
            path = f"{config_name}/{split}-{index:05d}-of-{num_shards:05d}.parquet"
            data.shard(num_shards, index, contiguous=True).to_parquet(str(folder / path))
            download_size += (folder / path).stat().st_size
            files.append(path)
        splits.add(SplitInfo(name=split, num_bytes=num_bytes, num_examples=len(data)))
    plot = f"{config_name}/{PLOT_FILENAME}"
    plot_distributions(dataset_dict, str(folder / plot))
    files.append(plot)
    features = next(iter(dataset_dict.values())).features
    dataset_size = sum(s.num_bytes for s in splits.values())
    info = DatasetInfo(features=features, splits=splits, download_size=download_size, dataset_size=dataset_size)
    return files, info


def is_generated(path: str, config_name: str) -> bool:
    """Whether a repo path is one of the files a push of `config_name` writes (and so replaces)."""
    pattern = rf"{re.escape(config_name)}/(\w+(\.\w+)*-\d{{5}}-of-\d{{5}}\.parquet|{re.escape(PLOT_FILENAME)})"
    return re.fullmatch(pattern, path) is not None


def _generated_files(folder: Path, config_name: str) -> list[Path]:
    config_folder = folder / config_name
    if not config_folder.is_dir():
        return []
    return [p for p in config_folder.iterdir() if p.is_file() and is_generated(f"{config_name}/{p.name}", config_name)]


# -- upload --------------------------------------------------------------------------------------------


def _upload(api: HfApi, repo_id: str, revision: str | None, additions: list, user: str) -> None:
    """Upload the data files one at a time, so a failure can say which are already on the Hub."""
    done: list[str] = []
    for addition in tqdm(additions, desc=f"uploading to {repo_id}", unit="file"):
        progress = _progress_note(repo_id, done, [a.path_in_repo for a in additions if a.path_in_repo not in done])
        with _explained_hub_errors(repo_id, f"uploading {addition.path_in_repo}", progress, user):
            api.preupload_lfs_files(repo_id, [addition], repo_type="dataset", revision=revision)
        done.append(addition.path_in_repo)


def _commit(api, repo_id, revision, config_name, info, section, additions, message, user):
    """One commit: the config's files, the merged card, and deletions of its files from an earlier push."""
    paths = {a.path_in_repo for a in additions}
    progress = (
        f"Every data file is uploaded but the commit did not complete, so {repo_id} is unchanged (unless the "
        "connection dropped just after the Hub took the commit: see the repo's history). Run the same command "
        "again: it sends no data file again and commits the config."
    )
    for attempt in range(COMMIT_ATTEMPTS):
        with _explained_hub_errors(repo_id, "reading the current card", progress, user):
            parent = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
            repo_files = api.list_repo_files(repo_id, repo_type="dataset", revision=parent)
            existing = None
            if CARD_FILENAME in repo_files:
                card_file = api.hf_hub_download(repo_id, CARD_FILENAME, repo_type="dataset", revision=parent)
                existing = Path(card_file).read_text(encoding="utf-8")
        card = render_card(existing, repo_id, config_name, info, section, f"{repo_id}/{CARD_FILENAME}")
        operations = [
            *additions,
            CommitOperationAdd(path_in_repo=CARD_FILENAME, path_or_fileobj=card.encode("utf-8")),
            *[
                CommitOperationDelete(path_in_repo=p)
                for p in repo_files
                if is_generated(p, config_name) and p not in paths
            ],
        ]
        try:
            with _explained_hub_errors(repo_id, "committing", progress, user):
                return api.create_commit(
                    repo_id, operations=operations, commit_message=message, repo_type="dataset",
                    revision=revision, parent_commit=parent,
                )  # fmt: skip
        except PushError as error:
            conflict = isinstance(error.__cause__, HfHubHTTPError) and _status(error.__cause__) in (409, 412)
            if not conflict or attempt == COMMIT_ATTEMPTS - 1:
                raise


def _progress_note(repo_id: str, uploaded: list[str], pending: list[str]) -> str:
    lines = [f"Nothing was committed: {repo_id} is unchanged (each config is pushed in one commit)."]
    if uploaded:
        lines.append(
            f"Already uploaded, not yet committed: {', '.join(uploaded)} "
            "(the Hub keeps them; a rerun does not send them again)."
        )
    if pending:
        lines.append(f"Not uploaded yet: {', '.join(pending)}.")
    lines.append("Run the same command again to resume.")
    return " ".join(lines)


@contextlib.contextmanager
def _explained_hub_errors(repo_id: str, step: str, progress: str = "", user: str | None = None):
    """Turn the Hub's errors into messages that say what went wrong and what to do (never the token)."""
    suffix = f" {progress}" if progress else ""
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise PushError(
            f"HF_HUB_OFFLINE is set, so nothing can be pushed while {step}; unset it, "
            f"or write the files with --export-dir.{suffix}"
        ) from error
    except HfHubHTTPError as error:
        status = _status(error)
        who = f"the token of {user!r}" if user else "this token"
        if status == 401:
            message = (
                "the Hub rejected the token (from HF_TOKEN or `hf auth login`) as invalid or expired; "
                "log in again with `hf auth login`"
            )
        elif status == 403 or (status == 404 and step == "creating the repo"):
            message = (
                f"no write access to dataset repo {repo_id!r} with {who}: use a token with write permission for "
                f"that namespace (`hf auth login`), or push to a repo of your own"
            )
        else:
            message = f"the Hub refused {step} for {repo_id!r} (HTTP {status}): {error.server_message or error}"
        raise PushError(message + suffix) from error
    except (HTTPError, OSError) as error:
        raise PushError(f"could not reach the Hub while {step} ({type(error).__name__}: {error}).{suffix}") from error


def _status(error: HfHubHTTPError) -> int | None:
    return getattr(error.response, "status_code", None)


# -- the card ------------------------------------------------------------------------------------------


def render_card(
    existing: str | None, repo_id: str, config_name: str, info: DatasetInfo, section: str, where: str = CARD_FILENAME
) -> str:
    """The README.md after adding (or replacing) one config: its YAML entries and its body section.

    Everything else in an existing card is kept: other configs' sections and metadata, and any
    text outside the configs region. Without a body, the card is the template's skeleton.
    `where` names the existing card in errors.
    """
    data, body = _parse_card(existing, where)

    sections = {match["name"]: match[0] for match in SECTION.finditer(_region(body))}
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
    data["pretty_name"] = data.get("pretty_name") or repo_id.rpartition("/")[2]

    region = "\n\n".join([REGION_START, *sections.values(), REGION_END])
    if REGION.search(body):
        body = REGION.sub(lambda _: region, body, count=1)
    elif body.strip():
        body = body.rstrip() + "\n\n## Configs\n\n" + region + "\n"
    else:
        skeleton = _template().render(card_data="", pretty_name=data["pretty_name"], repo_id=repo_id)
        body = REGION.sub(lambda _: region, DatasetCard(skeleton).text, count=1)
    return f"---\n{data.to_yaml()}\n---\n{body}"


def _parse_card(text: str | None, where: str) -> tuple[DatasetCardData, str]:
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
    module = SOURCES[config_name]
    model = _model_info(resolved.get("model"), model_license) if resolved else None
    summary = summarize(dataset_dict, drops)
    split_names = list(summary)
    license_ids = _license_ids(module.LICENSE)
    if model:
        # Generated text comes under the model's terms too; unknown terms are "other" on the Hub.
        license_ids += _license_ids(model["license"]) if model["license"] else ["other"]
    context = {
        "name": config_name,
        "description": module.DESCRIPTION,
        "homepage": module.HOMEPAGE,
        "license": module.LICENSE,
        "license_ids": sorted(set(license_ids)),
        "citation": module.CITATION.strip(),
        "model": model,
        "version": _package_version(),
        "datasets_version": datasets.__version__,
        "date": _build_date(),
        "options": [(name, _shown(name, value)) for name, value in resolved.items()]
        if resolved is not None
        else [("(not recorded)", "pass options= to push_to_hub")],
        "call_options": [
            (name, "'<redacted>'" if SECRET_OPTION.search(name) else repr(value))
            for name, value in (resolved or {}).items()
        ],
        "split_names": split_names,
        "splits": [_split_row(split, s) for split, s in summary.items()],
        "sources": _per_split(summary, lambda s: s["rows_per_source"]),
        "breakdowns": [
            (column, _per_split(summary, lambda s, c=column: s.get("rows_per_value", {}).get(c, {})))
            for column in sorted({c for s in summary.values() for c in s.get("rows_per_value", {})})
        ],
        "plot": f"{config_name}/{PLOT_FILENAME}",
        "repo_id": repo_id,
        "test_split_flag": " ".join(_train_flags(split_names)),
    }
    # The macro alone: the skeleton around it is rendered (and discarded) with blank values.
    skeleton_values = {"card_data": "", "pretty_name": "", "repo_id": repo_id}
    return str(_template().make_module(skeleton_values).config_section(context))


def resolved_options(config_name: str, options: dict | None) -> dict | None:
    """The options as the builder saw them: validated, normalized, defaults filled in."""
    if options is None:
        return None
    # data_dir/data_files are shown as given: datasets resolves them only inside load_dataset.
    local = {name: options[name] for name in ("data_dir", "data_files") if options.get(name) is not None}
    rest = {name: value for name, value in options.items() if name not in ("data_dir", "data_files")}
    config = SOURCES[config_name].CONFIG_CLASS(name=config_name, **rest)
    return {**local, **config.options()}


def _shown(name: str, value) -> str:
    if SECRET_OPTION.search(name):
        return "<redacted>"
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
    return {
        "name": model,
        "url": None if Path(model).is_dir() else f"https://huggingface.co/{model}",
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


def _check_dataset(dataset_dict, config_name: str) -> None:
    if config_name not in SOURCES:
        raise ValueError(f"config_name must be one of {list(SOURCES)}, got {config_name!r}")
    if not isinstance(dataset_dict, DatasetDict) or not dataset_dict:
        raise ValueError(f"expected a non-empty DatasetDict of built splits, got {type(dataset_dict).__name__}")
    for split, data in dataset_dict.items():
        wrong = [name for name, feature in CORE_FEATURES.items() if data.features.get(name) != feature]
        if wrong:
            raise ValueError(
                f"split {split!r} does not have the prm_builder row schema: columns {wrong} are missing or have "
                f"another type (expected {', '.join(f'{n}: {CORE_FEATURES[n]}' for n in wrong)})"
            )


def _build_date() -> str:
    return datetime.date.today().isoformat()


def _package_version() -> str:
    from . import __version__

    return __version__
