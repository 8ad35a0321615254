"""The generation cache: every raw model generation kept on disk, so no GPU hour is paid twice.

One cache is a folder under the root (default `<HF_DATASETS_CACHE>/prm_builder_generations`),
named after the model plus a hash of everything a generation depends on (its "identity":
model, revision, sampling parameters, prompt template, seed):

    identity.json      the identity, for `prm-builder cache list`
    epoch              an integer; `force_regenerate` starts a new epoch, the old one is ignored
    segments/e<epoch>-<time>-<pid>-<random>.jsonl
                       append-only, one per writing process, one JSON line per finished request:
                       {"p": problem key, "k": entry key, "i": first index, "g": [[text, finish_reason], ...]}
    locks/<problem key>.lock
                       one per problem shard (named by its first problem): builds sharing the cache
                       take it before reading and generating the shard, so the second build finds
                       the first one's generations instead of making its own

An entry key names a group of generations of one prompt, `<kind>:<...>` (model_sampled uses
`sample:<problem>`, `rollout:<problem>:<prefix hash>` and, for a judge's verdicts,
`verdict:<problem>:<hash>`); index i of a group is one generation.

Why a kill -9 at any point loses nothing and duplicates nothing:
  - each line goes out in one unbuffered write() as soon as its request finishes, so it is in
    the OS page cache (which outlives the process) before the next request is handled; fsync
    every FSYNC_INTERVAL_S and on close adds durability against power loss;
  - a process only appends to the segment it created, so a line torn by a kill is always the
    last one of its segment: the reader ignores it, and that request is simply made again;
  - only absent generations are requested, and the reader keeps the first line for each
    (entry, index), so two builds racing on one cache still read one generation per index.

Only valid generations are written (text a string, finish reason "stop" or "length"); a line
that is not one (damage from outside) stops a build with the file and line, `cache list` shows
it, and `cache repair` drops such lines and keeps the rest.
"""

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .backends import FINISH_REASONS, Generation
from ..readers.problems import PROBLEM_KEY_LENGTH

ROOT_DIRNAME = "prm_builder_generations"
IDENTITY_FILE = "identity.json"
EPOCH_FILE = "epoch"
SEGMENTS_DIRNAME = "segments"
_LINE_HEAD = b'{"p":"'
FSYNC_INTERVAL_S = 1.0
# Segments this process is writing (their writer's pid is ours): `cache repair` leaves them alone.
_open_segments: set[str] = set()


def default_root() -> Path:
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / ROOT_DIRNAME


def cache_name(identity: dict) -> str:
    """`<model's last path part>-<hash of the identity>`: readable in `cache list`, unique per identity."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", str(identity.get("model", "model")).rstrip("/").split("/")[-1])
    return f"{model or 'model'}-{digest}"


class CorruptCacheError(ValueError):
    pass


def cache_command(action: str, path: Path) -> str:
    """The `prm-builder cache ACTION` command line for the cache at `path`, with the root it lives in:
    a cache under another --generation-cache-dir than the default is found only with that flag."""
    import shlex

    return f"prm-builder cache {action} {path.name} --generation-cache-dir {shlex.quote(str(path.parent))}"


LOCKS_DIRNAME = "locks"
# While waiting for another build's shard lock, say so this often.
LOCK_NOTICE_S = 30.0


class GenerationCache:
    def __init__(self, root: str | os.PathLike, identity: dict):
        self.identity = identity
        self.path = Path(root) / cache_name(identity)

    @property
    def epoch(self) -> int:
        return read_epoch(self.path)

    def load(self, problem_keys: Collection[str] | None = None) -> dict[str, dict[str, dict[int, Generation]]]:
        """problem key -> entry key -> {index: generation}, for the given problems (all when None),
        current epoch only."""
        entries: dict[str, dict[str, dict[int, Generation]]] = {}
        wanted = None if problem_keys is None else {key.encode("ascii") for key in problem_keys}
        for segment in _segments(self.path, self.epoch):
            for record in _read_segment(segment, wanted, self.path):
                group = entries.setdefault(record["p"], {}).setdefault(record["k"], {})
                for offset, (text, finish_reason) in enumerate(record["g"]):
                    group.setdefault(record["i"] + offset, Generation(text, finish_reason))
        return entries

    def writer(self) -> "SegmentWriter":
        return SegmentWriter(self)

    def shard_lock(self, first_problem: str):
        """The lock of the problem shard starting with `first_problem`, shared by every build of this cache."""
        from filelock import FileLock

        self._ensure_created()
        (self.path / LOCKS_DIRNAME).mkdir(exist_ok=True)
        return FileLock(self.path / LOCKS_DIRNAME / f"{first_problem}.lock")

    def start_new_epoch(self) -> int:
        """Make every cached generation invisible (force_regenerate), then delete it from disk."""
        self._ensure_created()
        epoch = self.epoch + 1
        _write_atomically(self.path / EPOCH_FILE, f"{epoch}\n".encode())
        # The new epoch is durable before anything is deleted: a kill in between only leaves
        # files that no reader looks at, and the next clean-up takes them.
        for segment in (self.path / SEGMENTS_DIRNAME).glob("*.jsonl"):
            if not segment.name.startswith(_epoch_prefix(epoch)):
                segment.unlink(missing_ok=True)
        return epoch

    def _ensure_created(self) -> None:
        (self.path / SEGMENTS_DIRNAME).mkdir(parents=True, exist_ok=True)
        identity_file = self.path / IDENTITY_FILE
        if not identity_file.exists():
            _write_atomically(identity_file, json.dumps(self.identity, indent=2, sort_keys=True).encode())


class SegmentWriter:
    """Appends finished requests to a segment of its own; created on the first append."""

    def __init__(self, cache: GenerationCache):
        self.cache = cache
        self.file = None
        self.last_sync = 0.0
        self.records = 0

    def append(self, problem: str, key: str, first_index: int, generations: list[Generation]) -> None:
        if len(problem) != PROBLEM_KEY_LENGTH:
            raise ValueError(f"problem keys must be {PROBLEM_KEY_LENGTH} characters, got {problem!r}")
        if self.file is None:
            self._open()
        record = {"p": problem, "k": key, "i": first_index, "g": [[g.text, g.finish_reason] for g in generations]}
        # ASCII JSON has no raw newline inside: one line per record, written with one write().
        self.file.write(json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n")
        self.records += 1
        if time.monotonic() - self.last_sync >= FSYNC_INTERVAL_S:
            self._sync()

    def _open(self) -> None:
        self.cache._ensure_created()
        name = f"{_epoch_prefix(self.cache.epoch)}{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.file = open(self.cache.path / SEGMENTS_DIRNAME / name, "xb", buffering=0)
        _open_segments.add(self.file.name)
        _fsync_dir(self.cache.path / SEGMENTS_DIRNAME)
        self.last_sync = time.monotonic()

    def _sync(self) -> None:
        os.fsync(self.file.fileno())
        self.last_sync = time.monotonic()

    def close(self) -> None:
        if self.file is not None:
            self._sync()
            self.file.close()
            _open_segments.discard(self.file.name)
            self.file = None

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- reading -----------------------------------------------------------------------------------------


def read_epoch(path: Path) -> int:
    try:
        return int((path / EPOCH_FILE).read_text().strip())
    except FileNotFoundError:
        return 0
    except ValueError as error:
        raise CorruptCacheError(
            f"{path / EPOCH_FILE}: expected an integer, got {error}; remove this cache with "
            f"`{cache_command('clear', path)}`"
        ) from None


def _epoch_prefix(epoch: int) -> str:
    return f"e{epoch:06d}-"


def _segments(path: Path, epoch: int) -> list[Path]:
    # Names start with the epoch and a zero-padded time: sorted names are segments oldest first.
    return sorted((path / SEGMENTS_DIRNAME).glob(f"{_epoch_prefix(epoch)}*.jsonl"))


def _read_segment(segment: Path, wanted: set[bytes] | None, cache: Path):
    for number, record, damage in _lines(segment, wanted):
        if damage is not None:
            raise CorruptCacheError(
                f"{segment}, line {number}: {damage}; drop the damaged records with "
                f"`{cache_command('repair', cache)}` (the rest is kept), or remove the cache with "
                f"`{cache_command('clear', cache)}`"
            )
        if record is not None:
            yield record


def _lines(segment: Path, wanted: set[bytes] | None = None):
    """(line number, record, None) for each valid line, (line number, None, what is wrong) for a
    damaged one; a torn last line (a kill mid-write) is (number, None, None)."""
    with open(segment, "rb") as file:
        lines = file.readlines()
    head = len(_LINE_HEAD)
    for number, line in enumerate(lines, start=1):
        if wanted is not None and line.startswith(_LINE_HEAD) and line[head : head + PROBLEM_KEY_LENGTH] not in wanted:
            continue
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no line end")
            record = json.loads(line)
        except ValueError as error:
            if number == len(lines):
                yield number, None, None  # torn by a kill mid-write: that request was never counted as done
            else:
                yield number, None, f"expected a JSON generation record, got {line[:80]!r} ({error})"
            continue
        damage = _record_damage(record)
        yield (number, None, f"{damage}: {line[:80]!r}") if damage else (number, record, None)


def _record_damage(record) -> str | None:
    if not isinstance(record, dict) or not {"p", "k", "i", "g"} <= set(record):
        return "expected a record with keys p, k, i and g"
    if not isinstance(record["p"], str) or len(record["p"]) != PROBLEM_KEY_LENGTH or not isinstance(record["k"], str):
        return "expected a problem key of 16 characters and a string entry key"
    if isinstance(record["i"], bool) or not isinstance(record["i"], int) or record["i"] < 0:
        return "expected a first index >= 0"
    generations = record["g"]
    valid = isinstance(generations, list) and generations and all(
        isinstance(g, list) and len(g) == 2 and isinstance(g[0], str) and g[1] in FINISH_REASONS for g in generations
    )
    return None if valid else f"expected generations as [text, one of {list(FINISH_REASONS)}]"


# -- listing, clearing and repairing (`prm-builder cache list|clear|repair`) ----------------------------


@dataclass
class CacheSummary:
    name: str
    path: Path
    identity: dict
    epoch: int
    problems: int = 0  # problems with at least one cached generation
    generations: Counter = field(default_factory=Counter)  # kind (the entry key's prefix) -> count
    bytes: int = 0
    damage: str | None = None  # the first damaged record or file ("<file>, line N: ..."), None if sound
    damaged_records: int = 0


def cache_folders(root: str | os.PathLike | None = None) -> list[Path]:
    root = Path(root) if root is not None else default_root()
    folders = sorted(root.iterdir()) if root.is_dir() else []
    return [path for path in folders if not path.name.startswith(".") and (path / IDENTITY_FILE).is_file()]


def list_caches(root: str | os.PathLike | None = None) -> list[CacheSummary]:
    return [summarize_cache(path) for path in cache_folders(root)]


def summarize_cache(path: Path) -> CacheSummary:
    """What one cache holds, counting valid records only; damage is reported, never raised."""
    summary = CacheSummary(path.name, path, {}, 0, bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    try:
        summary.identity = json.loads((path / IDENTITY_FILE).read_text())
        summary.epoch = read_epoch(path)
    except (ValueError, CorruptCacheError) as error:
        summary.damage = str(error) if isinstance(error, CorruptCacheError) else f"{path / IDENTITY_FILE}: {error}"
        return summary
    seen, problems = {}, set()
    for segment in _segments(path, summary.epoch):
        for number, record, damage in _lines(segment):
            if damage is not None:
                summary.damaged_records += 1
                summary.damage = summary.damage or f"{segment}, line {number}: {damage}"
            if record is None:
                continue
            indices = seen.setdefault(record["k"], set())
            new = {record["i"] + offset for offset in range(len(record["g"]))} - indices
            indices |= new
            summary.generations[record["k"].split(":", 1)[0]] += len(new)
            problems.add(record["p"])
    summary.problems = len(problems)
    return summary


def resolve(root: str | os.PathLike | None, key: str) -> Path:
    """The cache folder named `key`, or the only one whose name starts with it."""
    names = [path.name for path in cache_folders(root)]
    matches = [name for name in names if name == key] or [name for name in names if name.startswith(key)]
    if len(matches) != 1:
        found = "none matches" if not matches else f"{len(matches)} match: {', '.join(matches)}"
        raise ValueError(
            f"expected the key (or a unique prefix) of one generation cache, got {key!r}: {found}; "
            f"see `prm-builder cache list`"
        )
    return (Path(root) if root is not None else default_root()) / matches[0]


def remove(path: Path) -> None:
    # Rename first: a half-deleted cache is never mistaken for a live one by a concurrent build.
    doomed = path.with_name(f".deleting-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def repair(path: Path) -> tuple[int, int]:
    """Drop the damaged records of a cache, keep every valid one; (records dropped, records kept).

    A segment still being written by a running build is left alone (with a message): rewriting it
    would lose what that build appends next. An unreadable epoch file is rebuilt from the
    segments' names; an unreadable identity cannot be, and the cache can only be cleared.
    """
    try:
        json.loads((path / IDENTITY_FILE).read_text())
    except ValueError as error:
        raise CorruptCacheError(f"{path / IDENTITY_FILE}: {error}; remove the cache with `{cache_command('clear', path)}`") from None
    try:
        epoch = read_epoch(path)
    except CorruptCacheError:
        names = [segment.name for segment in (path / SEGMENTS_DIRNAME).glob("e*.jsonl")]
        epoch = max((int(name[1:7]) for name in names if name[1:7].isdigit()), default=0)
        _write_atomically(path / EPOCH_FILE, f"{epoch}\n".encode())
    dropped = kept = 0
    for segment in _segments(path, epoch):
        with open(segment, "rb") as file:
            lines = file.readlines()
        good = [number for number, record, _ in _lines(segment) if record is not None]
        kept += len(good)
        if len(good) == len(lines):
            continue
        if _being_written(segment):
            raise CorruptCacheError(f"{segment} is being written by a running build (pid {segment.name.split('-')[2]}); repair it once that build ends")
        dropped += len(lines) - len(good)
        _write_atomically(segment, b"".join(lines[number - 1] for number in good))
    return dropped, kept


def _being_written(segment: Path) -> bool:
    pid = int(segment.name.split("-")[2])
    if pid == os.getpid():
        return str(segment) in _open_segments
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- atomic files ---------------------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def describe_cache(summary: CacheSummary) -> str:
    """A few lines about one cache, for `prm-builder cache list`."""
    identity = summary.identity
    sampling = " ".join(f"{name}={identity.get(name)}" for name in ("temperature", "top_p", "max_new_tokens", "seed"))
    kinds = sorted(summary.generations.items(), key=lambda kv: (kv[0] != "sample", kv[0]))  # samples first
    done = ", ".join(f"{count:,} {kind}s" for kind, count in kinds) or "no generations"
    revision = f"@{identity['revision']}" if identity.get("revision") else ""
    lines = [
        f"{summary.name}  ({_size(summary.bytes)}, epoch {summary.epoch})",
        f"  model: {identity.get('model')}{revision}",
        f"  sampling: {sampling}",
        f"  done: {summary.problems:,} problems, {done}",
    ]
    if summary.damage:
        records = f"{summary.damaged_records} damaged record(s), the first at " if summary.damaged_records else ""
        lines.append(f"  DAMAGED: {records}{summary.damage}")
        lines.append(f"  fix: {cache_command('repair', summary.path)}  (or: {cache_command('clear', summary.path)})")
    return "\n".join(lines)


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
