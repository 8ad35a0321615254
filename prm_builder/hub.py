"""Publish built splits: one Hub dataset repo holds every config side by side, with a generated card.

    prm_builder.push_to_hub(ds, "user/math-prm", "synthetic", options={"problems": "gsm8k"})
    prm_builder.export_to_folder(ds, "out/", "synthetic", options=...)  # the same files, no upload

A config owns the files `<config>/<split>-NNNNN-of-NNNNN.parquet` and `<config>/distributions.png`
and its parts of the card (card.py). Publishing a config replaces exactly those and keeps
everything else, so `synthetic`, `prm800k` and `model_sampled` live in one repo.

Export and upload share one setup (`_prepare`: checks, options, drops, the card section) and one
writer (`write_config_files`). The upload writes to a temporary folder and commits its files in
one commit per config, so a failed push leaves the repo unchanged and a rerun sends only what
the Hub does not have yet. The export writes a new folder beside the old one and swaps them at
the end, so a failed export leaves the previous one loadable.
"""

import contextlib
import glob
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict, DatasetInfo, SplitDict, SplitInfo
from filelock import FileLock
from datasets.utils.py_utils import convert_file_size_to_int
from datasets.utils.tqdm import tqdm  # honours datasets' disable_progress_bars()
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from .builder import CONFIGS
from .card import (
    CARD_FILENAME, PLOT_FILENAME, package_version, parse_card, render_card, render_section, resolved_options,
)  # fmt: skip
from .drops import recorded_drops
from .features import CORE_FEATURES
from .redact import redact
from .stats import plot_distributions

DEFAULT_MAX_SHARD_SIZE = "500MB"
# Another writer committing between our read of the card and our commit: read again and retry.
COMMIT_ATTEMPTS = 3
# The namespace a card's snippets name when an export was given no repo id.
PLACEHOLDER_NAMESPACE = "your-namespace"
# Marks the hidden siblings of an export folder that an atomic export writes and swaps.
STAGING_MARK = ".prm-builder-"


class PushError(RuntimeError):
    """The push could not go ahead or did not finish; the message says why and what to do."""


@dataclass(frozen=True)
class _Publication:
    """What every publish of one config needs, checked and rendered before any file is written."""

    config_name: str
    repo_id: str
    section: str  # the config's section of the card body
    shard_bytes: int


def _prepare(dataset_dict, repo_id, config_name, options, drops, model_license, max_shard_size) -> _Publication:
    check_repo_id(repo_id)
    _check_dataset(dataset_dict, config_name)
    shard_bytes = convert_file_size_to_int(max_shard_size)
    drops = recorded_drops(dataset_dict) if drops is None else drops
    resolved = resolved_options(config_name, options)
    section = render_section(dataset_dict, config_name, repo_id, resolved, drops, model_license)
    return _Publication(config_name, repo_id, section, shard_bytes)


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
    """Upload the splits of one config to a Hub dataset repo (`export_to_folder` writes the same files locally).

    Args:
        dataset_dict: the built splits, e.g. `load_dataset("prm_builder", config_name, **options)`.
        repo_id: `namespace/name` (or `name`, in the namespace of the token's user).
        config_name: the prm_builder config the splits come from; also the Hub config name.
        options: the builder options used, printed on the card (defaults filled in, secrets
            redacted, local paths shown as `<local>/NAME`); None says on the card that they were
            not recorded.
        drops: items dropped per split; by default read from the build's Arrow folder.
        model_license: license of the model behind a `model_sampled` config; by default taken
            from the model's card when it is on this machine, else the card says "see the model card".
        private: visibility of a repo created by this push (an existing repo keeps its own).
        revision: branch to push to (created if missing); default the main branch.
        token: Hub token; by default HF_TOKEN or the token saved by `hf auth login`.
        export_dir: write exactly what would be uploaded to this folder instead (`export_to_folder`).
        max_shard_size: largest Parquet file, in bytes or as "500MB".
        commit_message: default "Upload config CONFIG with prm-builder VERSION".

    Returns:
        the Hub's CommitInfo, or with `export_dir` the list of files written (paths relative to it).
    """
    if export_dir is not None:
        return export_to_folder(
            dataset_dict, export_dir, config_name, repo_id=repo_id,
            options=options, drops=drops, model_license=model_license, max_shard_size=max_shard_size,
        )  # fmt: skip
    check_repo_id(repo_id)
    api = HfApi(token=require_token(token), library_name="prm-builder", library_version=package_version())
    with _explained_hub_errors(repo_id, "checking the token"):
        user = api.whoami()["name"]
    if "/" not in repo_id:
        repo_id = f"{user}/{repo_id}"
    publication = _prepare(dataset_dict, repo_id, config_name, options, drops, model_license, max_shard_size)
    with _explained_hub_errors(repo_id, "creating the repo", user=user):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.auth_check(repo_id, repo_type="dataset", write=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prm_builder_push_") as staging:
        files, info = write_config_files(dataset_dict, staging, config_name, publication.shard_bytes)
        additions = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(Path(staging, f))) for f in files]
        _upload(api, repo_id, revision, additions, user)
        message = commit_message or f"Upload config {config_name} with prm-builder {package_version()}"
        return _commit(api, publication, revision, info, additions, message, user)


def export_to_folder(
    dataset_dict: DatasetDict,
    export_dir: str | Path,
    config_name: str,
    *,
    repo_id: str | None = None,
    options: dict | None = None,
    drops: dict[str, Counter] | None = None,
    model_license: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> list[str]:
    """Write what `push_to_hub` would upload into `export_dir`, merging into a card already there.

    `load_dataset(export_dir, name=config_name)` then reads the splits back. `repo_id` only
    fills in the card's loading snippets (default `your-namespace/<folder name>`). The new
    export is written beside the old one and swapped in at the end: if anything fails on the
    way (an error, a full disk, an interrupt), `export_dir` still holds the previous export.
    Returns the files written, relative to `export_dir`.
    """
    folder = Path(export_dir).absolute()
    placeholder = repo_id is None  # then the folder's name is no title for the card
    repo_id = placeholder_repo_id(folder) if repo_id is None else repo_id
    publication = _prepare(dataset_dict, repo_id, config_name, options, drops, model_license, max_shard_size)
    card_path = folder / CARD_FILENAME
    with replaced_atomically(folder, keep=lambda path: not _is_rewritten(path, config_name)) as staging:
        existing = card_path.read_text(encoding="utf-8") if card_path.is_file() else None
        parse_card(existing, str(card_path))  # a broken card stops the export before any Parquet is written
        files, info = write_config_files(dataset_dict, staging, config_name, publication.shard_bytes)
        card = render_card(existing, repo_id, config_name, info, publication.section, str(card_path),
                           name_from_configs=placeholder)
        (staging / CARD_FILENAME).write_text(card, encoding="utf-8")
    return [*files, CARD_FILENAME]


def placeholder_repo_id(folder: Path) -> str:
    """The repo id a card names when none was given: `your-namespace/<folder name>`."""
    name = re.sub(r"[^\w.-]+", "-", folder.name).strip("-.")[:96] or "prm-data"
    return f"{PLACEHOLDER_NAMESPACE}/{name}"


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
            "access (or write the files to a folder with export_dir=, which needs no token)"
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
    plot_distributions(dataset_dict, str(folder / plot), title=f"config {config_name}")
    files.append(plot)
    features = next(iter(dataset_dict.values())).features
    dataset_size = sum(s.num_bytes for s in splits.values())
    info = DatasetInfo(features=features, splits=splits, download_size=download_size, dataset_size=dataset_size)
    return files, info


def is_generated(path: str, config_name: str) -> bool:
    """Whether a repo path is one of the files a push of `config_name` writes (and so replaces)."""
    pattern = rf"{re.escape(config_name)}/(\w+(\.\w+)*-\d{{5}}-of-\d{{5}}\.parquet|{re.escape(PLOT_FILENAME)})"
    return re.fullmatch(pattern, path) is not None


# -- upload --------------------------------------------------------------------------------------------


def _upload(api: HfApi, repo_id: str, revision: str | None, additions: list, user: str) -> None:
    """Upload the data files one at a time, so a failure can say which are already on the Hub."""
    done: list[str] = []
    for addition in tqdm(additions, desc=f"uploading to {repo_id}", unit="file"):
        progress = _progress_note(repo_id, done, [a.path_in_repo for a in additions if a.path_in_repo not in done])
        with _explained_hub_errors(repo_id, f"uploading {addition.path_in_repo}", progress, user):
            api.preupload_lfs_files(repo_id, [addition], repo_type="dataset", revision=revision)
        done.append(addition.path_in_repo)


def _commit(api, publication: _Publication, revision, info, additions, message, user):
    """One commit: the config's files, the merged card, and deletions of its files from an earlier push."""
    repo_id, config_name = publication.repo_id, publication.config_name
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
        card = render_card(existing, repo_id, config_name, info, publication.section, f"{repo_id}/{CARD_FILENAME}")
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
            f"or write the files with export_dir=.{suffix}"
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
        raise PushError(redact(message + suffix)) from error
    except (HTTPError, OSError) as error:
        reason = redact(f"{type(error).__name__}: {error}")  # a URL in the error may carry credentials
        raise PushError(f"could not reach the Hub while {step} ({reason}).{suffix}") from error


def _status(error: HfHubHTTPError) -> int | None:
    return getattr(error.response, "status_code", None)


def _check_dataset(dataset_dict, config_name: str) -> None:
    if config_name not in CONFIGS:
        raise ValueError(f"config_name must be one of {list(CONFIGS)}, got {config_name!r}")
    if not isinstance(dataset_dict, DatasetDict) or not dataset_dict:
        raise ValueError(f"expected a non-empty DatasetDict of built splits, got {type(dataset_dict).__name__}")
    for split, data in dataset_dict.items():
        wrong = [name for name, feature in CORE_FEATURES.items() if data.features.get(name) != feature]
        if wrong:
            raise ValueError(
                f"split {split!r} does not have the prm_builder row schema: columns {wrong} are missing or have "
                f"another type (expected {', '.join(f'{n}: {CORE_FEATURES[n]}' for n in wrong)})"
            )


# -- atomic folder replacement ---------------------------------------------------------------------


@contextlib.contextmanager
def replaced_atomically(folder: Path, keep):
    """Yield a new folder to fill, holding the files of `folder` for which `keep(relative path)` is true.

    On success the new folder takes the place of `folder`; on any failure it is removed and
    `folder` is untouched. Kept files are hard links (no copy of large Parquet files), so they
    must never be written in place: files to rewrite are left out by `keep` and written anew.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One export into a folder at a time: another one's unfinished folder would look abandoned.
    # The lock lives in the temporary folder, so nothing but the export appears beside it.
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    with FileLock(os.path.join(tempfile.gettempdir(), f"prm-builder-export-{key}.lock")):
        _recover_interrupted_swap(folder)
        staging = folder.with_name(f".{folder.name}{STAGING_MARK}new-{uuid.uuid4().hex[:12]}")
        with _swapped_in_on_success(staging, folder) as ready:
            if folder.is_dir():
                shutil.copytree(
                    folder, staging, symlinks=True, copy_function=_link_or_copy,
                    ignore=lambda directory, names: _left_out(folder, directory, names, keep),
                )  # fmt: skip
            elif folder.exists():
                raise NotADirectoryError(f"export_dir {str(folder)!r} is a file, not a folder")
            else:
                staging.mkdir()
            yield ready


@contextlib.contextmanager
def _swapped_in_on_success(staging: Path, folder: Path):
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not folder.exists():
        os.rename(staging, folder)
        return
    # Two renames: a crash between them leaves the old export in a hidden sibling, and the next
    # export to this folder puts it back first (_recover_interrupted_swap).
    old = folder.with_name(f".{folder.name}{STAGING_MARK}old-{uuid.uuid4().hex[:12]}")
    os.rename(folder, old)
    os.rename(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def _recover_interrupted_swap(folder: Path) -> None:
    """Put back an old export left by a crash mid-swap; remove new ones a crash left unfinished."""
    siblings = sorted(folder.parent.glob(f".{glob.escape(folder.name)}{STAGING_MARK}*"))
    for sibling in siblings:
        if "old-" in sibling.name[len(folder.name) + len(STAGING_MARK) + 1 :] and not folder.exists():
            os.rename(sibling, folder)
        else:
            shutil.rmtree(sibling, ignore_errors=True)


def _left_out(root: Path, directory: str, names: list[str], keep) -> set[str]:
    relative = Path(directory).relative_to(root)
    return {name for name in names if not Path(directory, name).is_dir() and not keep((relative / name).as_posix())}


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _is_rewritten(path: str, config_name: str) -> bool:
    return path == CARD_FILENAME or is_generated(path, config_name)
