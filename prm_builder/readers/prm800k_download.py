"""Getting PRM800K's files: download them resumably into the datasets cache, then verify them.

The files live in Git LFS in the openai/prm800k GitHub repository. A raw GitHub URL returns a
~130-byte pointer instead of the data, so we download from the LFS media address and check
every file against the size and sha256 recorded in its LFS pointer. A pointer, a truncated
download or a corrupted one fails here, with what was expected, what was got and how to fix
it, rather than later as a puzzling JSON error.

Downloads do not go through `dl_manager.download`: datasets reopens `<file>.incomplete` with
"w+b" on every attempt, so an interrupted 456 MB download starts again from zero. We keep the
partial file in the datasets downloads folder instead and append to it with huggingface_hub's
`http_get` (a Range request, retried), and move it into place only once verified: a file there
is a cache hit, and a later build makes no request at all.

Verification hashes the whole file (streamed, with a progress bar) once, then leaves a small
marker beside it, so rebuilding with other options does not hash 456 MB again.
"""

import contextlib
import hashlib
import inspect
import json
import logging as std_logging
import os
from pathlib import Path

import datasets
from datasets.download import StreamingDownloadManager
from datasets.utils import logging
from datasets.utils.tqdm import tqdm
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import WeakFileLock, httpx

logger = logging.get_logger(__name__)

# http_get retries a failed connection 5 times, 1 s apart, each with a "Trying to resume
# download..." warning, even when no byte ever arrived (no network): we ask for no retry before
# the first byte (it resets to 5 retries once data flows, so broken transfers still resume).
# The parameter is private: without it we keep huggingface_hub's default.
_NO_RETRY_BEFORE_DATA = {"_nb_retries": 0} if "_nb_retries" in inspect.signature(http_get).parameters else {}

# The LFS media address of the repository root; the environment variable points it elsewhere
# (a mirror, or a local server in tests).
REPOSITORY_URL = "https://media.githubusercontent.com/media/openai/prm800k/main"
URL_VARIABLE = "PRM_BUILDER_PRM800K_URL"

MATH500_FILE = "prm800k/math_splits/test.jsonl"
# Size and sha256 of each upstream file, as recorded in its Git LFS pointer.
UPSTREAM_FILES = {
    "prm800k/data/phase1_train.jsonl": (7_900_236, "e9da6a73f827ffb9a8c0dc644c541d34ed76b3d4d1e4896ff5f7b37ddf5ae34d"),
    "prm800k/data/phase1_test.jsonl": (829_105, "f4b3bc5b095e45c816453dc4d748b755c680d61d55f9895d929a335b487c727d"),
    "prm800k/data/phase2_train.jsonl": (456_135_365, "1110237feeb51d1bc200cb37b8f965cfdc1036eac7d506094049366fe7dc1089"),
    "prm800k/data/phase2_test.jsonl": (12_240_719, "6b172efa884ac8341a946dd82e06947c135b7254109fb3f7aa907c715d98aaad"),
    MATH500_FILE: (446_564, "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"),
}

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
HASH_CHUNK_BYTES = 1 << 20
VERIFIED_SUFFIX = ".prm800k-verified"
PARTIAL_SUFFIX = ".incomplete"
# A fresh download that fails verification is deleted (a wrong file cannot be resumed into the
# right one), so the fix is to build again rather than to delete it.
DISCARDED_FIX = (
    "build again to download it anew (this download was discarded), or pass data_dir= with a verified local copy"
)


class VerificationError(ValueError):
    """A file is not the PRM800K file it should be (LFS pointer, wrong size, wrong sha256)."""


def label_file(phase: int, split: str) -> str:
    """The upstream path of a label file, relative to the repository root."""
    return f"prm800k/data/phase{phase}_{split}.jsonl"


def repository_url() -> str:
    return os.environ.get(URL_VARIABLE, REPOSITORY_URL).rstrip("/")


def download_verified(dl_manager, files: dict[str, str]) -> dict[str, str]:
    """Download {key: upstream path} into the datasets downloads folder; return {key: verified local path}.

    The files land in `<downloads>/prm800k/<upstream path>`, the layout of a clone of the repository.
    """
    if isinstance(dl_manager, StreamingDownloadManager):
        raise ValueError(
            "prm800k with streaming=True reads local copies only (data_dir= or data_files=): the "
            "download is verified as whole files; build without streaming once, or pass data_dir="
        )
    config = dl_manager.download_config
    folder = Path(config.cache_dir or datasets.config.DOWNLOADED_DATASETS_PATH) / "prm800k"
    return {key: _download_one(relative, folder / relative, config.force_download) for key, relative in files.items()}


def _download_one(relative: str, path: Path, force: bool) -> str:
    """Make `path` a verified copy of the upstream file `relative`, resuming a partial download."""
    url = f"{repository_url()}/{relative}"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two builds appending to one partial file would corrupt it.
    with WeakFileLock(f"{path}.lock"):
        if path.is_file() and not force:
            verify(str(path), relative, url)  # only files that passed are moved here; hashed again only if changed
            return str(path)
        partial = Path(f"{path}{PARTIAL_SUFFIX}")
        expected_size = UPSTREAM_FILES[relative][0]
        size = partial.stat().st_size if partial.is_file() else 0
        if force or size > expected_size:  # longer than the file: not a prefix of it
            partial.unlink(missing_ok=True)
            size = 0
        if size < expected_size:
            if datasets.config.HF_HUB_OFFLINE:
                raise _unreachable(url, "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)", offline=True)
            # "ab" leaves the position at the end, which http_get needs (see _fetch).
            with open(partial, "ab") as file:
                _fetch(url, file)
        try:
            verify(str(partial), relative, url, DISCARDED_FIX)
        except VerificationError:
            partial.unlink()
            raise
        os.replace(partial, path)
        # The marker records size and mtime, which a rename keeps; it is missing if it could not be written.
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{partial}{VERIFIED_SUFFIX}", f"{path}{VERIFIED_SUFFIX}")
    return str(path)


class _OurMessageSaysIt(std_logging.Filter):
    """Drops http_get's "Error while downloading ... Max retries exceeded." warning: the error we raise says it."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return "Max retries exceeded" not in record.getMessage()


def _fetch(url: str, file) -> None:
    """Append to `file` the bytes of `url` after the file.tell() it already holds."""
    hub_logger = std_logging.getLogger("huggingface_hub.file_download")
    quiet = _OurMessageSaysIt()
    hub_logger.addFilter(quiet)
    try:
        _fetch_verbose(url, file)
    finally:
        hub_logger.removeFilter(quiet)


def _fetch_verbose(url: str, file) -> None:
    resume = file.tell()
    try:
        try:
            # http_get asks for `Range: bytes=<resume>-` and resumes broken connections itself. A
            # server that ignores Range answers 200 with the whole file: http_get then truncates
            # back to `file.tell() - resume` and writes from there, so nothing is appended twice.
            http_get(url, file, resume_size=resume, displayed_filename=Path(url).name, **_NO_RETRY_BEFORE_DATA)
        except HfHubHTTPError as error:
            if not resume or error.response is None or error.response.status_code != 416:
                raise
            # 416: the server's file is shorter than our partial one, which is then no prefix of it.
            file.seek(0)
            file.truncate()
            http_get(url, file, displayed_filename=Path(url).name, **_NO_RETRY_BEFORE_DATA)
    except (OSError, httpx.HTTPError) as error:  # OfflineModeIsEnabled is a ConnectionError, so an OSError
        raise _unreachable(url, error) from error


def _unreachable(url: str, reason, offline: bool = False) -> ConnectionError:
    if url.endswith(MATH500_FILE):
        way_out = (
            "without network, use a local copy of prm800k/math_splits/test.jsonl: problems= with its path for "
            "model_sampled, exclude_problems= with its path (or a data_dir= with math_splits/ beside data/) for prm800k"
        )
    else:
        way_out = (
            "without network, pass data_dir= with a local copy (git clone https://github.com/openai/prm800k with "
            "git-lfs installed, then data_dir='prm800k/prm800k/data')"
        )
    if not offline:
        way_out += ", or set HF_HUB_OFFLINE=1 to use the copy a previous build downloaded"
    return ConnectionError(f"could not download PRM800K's file {url} ({reason}); {way_out}")


def verify(path: str, relative: str, url: str, fix: str | None = None) -> None:
    """Check a downloaded file against the size and sha256 of `relative` in UPSTREAM_FILES."""
    expected_size, expected_sha = UPSTREAM_FILES[relative]
    fix = fix or (
        f"delete {path} (or pass download_mode='force_redownload') to download it "
        f"again, or pass data_dir= with a verified local copy"
    )
    check_not_lfs_pointer(path, f"{url} served a Git LFS pointer instead of the file; set {URL_VARIABLE} "
                                f"to the LFS media address (default {REPOSITORY_URL}) and {fix}")
    size = os.path.getsize(path)
    if size != expected_size:
        state = "truncated (an interrupted download?)" if size < expected_size else "larger than expected"
        raise VerificationError(
            f"{relative} from {url} is {state}: expected {expected_size:,} bytes, got {size:,} bytes in {path}; {fix}"
        )
    if _verified_marker(path) == expected_sha:
        return
    digest = file_sha256(path, description=f"Verifying {Path(relative).name}")
    if digest != expected_sha:
        raise VerificationError(
            f"{relative} from {url} is corrupted: expected sha256 {expected_sha}, got {digest} for {path}; {fix}"
        )
    _write_verified_marker(path, digest)


def check_not_lfs_pointer(path: str, how_to_fix: str) -> None:
    """Fail when `path` holds a Git LFS pointer (what a clone without git-lfs or a raw URL gives)."""
    with open(path, "rb") as file:
        head = file.read(512)
    if head.startswith(LFS_POINTER_PREFIX):
        pointer = head.decode("utf-8", "replace").strip().replace("\n", "; ")
        raise VerificationError(
            f"{path} is a Git LFS pointer ({len(head)} bytes: {pointer!r}), not the PRM800K data; {how_to_fix}"
        )


def file_sha256(path: str, description: str = "Hashing") -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file, tqdm(
        total=os.path.getsize(path), unit="B", unit_scale=True, desc=description, delay=2
    ) as progress:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            progress.update(len(chunk))
    return digest.hexdigest()


# The marker records the sha256 together with the size and mtime it was computed for, so a
# file replaced or modified in place is hashed again.
def _verified_marker(path: str) -> str | None:
    marker = Path(path + VERIFIED_SUFFIX)
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    stat = os.stat(path)
    if recorded.get("size") == stat.st_size and recorded.get("mtime_ns") == stat.st_mtime_ns:
        return recorded.get("sha256")
    return None


def _write_verified_marker(path: str, digest: str) -> None:
    stat = os.stat(path)
    try:
        Path(path + VERIFIED_SUFFIX).write_text(
            json.dumps({"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        )
    except OSError as error:  # a read-only cache only costs a second hash next time
        logger.info(f"could not record the verification of {path}: {error}")
