"""model_sampled's request scheduler: the cache first, the backend only for what the cache lacks.

Work comes as tasks: generators that yield the generations they need (a list of `Want`s) and
are sent them back, in the same order, once all are there (see mc_search.rollout_labels). A
`Want` names a group, the generations of one prompt (`sample:<problem>`,
`rollout:<problem>:<prefix hash>` or a judge's `verdict:<problem>:<hash>`), indexed from 0; asking for the first `count` of a group
requests just the missing indices, once, however many tasks wait on it (two solutions can share
a step prefix). Every generation is written to the generation cache as soon as it arrives,
before any task sees it.

A task that needs nothing new runs on at once; the others wait while `pump` runs the backend
over the queue, which keeps growing as woken tasks ask for more (the next prefix of a search is
asked for as soon as the previous one's rollouts are in), so a backend never idles waiting for
a slow request. Finished tasks' results collect in `finished`, with the caller's tag.

A `Want` may name another backend than the policy's (an LLM judge: `Want.backend="judge"`);
each backend has its own queue. Backends of one class that can run together (the openai backend's
`generate_together`: one event loop, a window of requests in flight per backend) run at the same
time, so a policy server and a judge server both stay full. Others (transformers, vLLM: in-process,
usually on one device) take turns, each until its queue is empty, since a `generate` call owns the
thread while it runs: the judge's requests gather while the policy works and go out together.

`RowsInOrder` hands the finished tasks' rows out in the order their problems were admitted.
"""

import hashlib
import itertools
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from datasets.utils import logging
from datasets.utils.tqdm import tqdm

from .backends import BACKENDS, Generation, Request, invalid_generations
from .generation_cache import LOCK_NOTICE_S
from ..readers.problems import Problem

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class Want:
    """The first `count` generations of `group`: continuations of `prefix` answering `user`."""

    problem: str  # the problem key, under which the cache files the group
    group: str
    count: int
    user: str
    prefix: str
    backend: str = "policy"  # which backend generates it: "policy", or a name in Scheduler.backends


POLICY = "policy"
Task = Generator[list[Want], list[list[Generation]], Any]


@dataclass
class _Waiter:
    task: Task
    tag: Any
    wants: list[Want]
    missing: int  # wants not yet complete


@dataclass
class Scheduler:
    writer: Any  # the generation cache's SegmentWriter
    # The backend, built on first use: a LazyBackend, or any callable that returns one.
    open_backend: Callable
    progress: "Progress"
    seed: int
    # problem key -> group -> {index: generation}: what is cached, and what came back since.
    entries: dict[str, dict[str, dict[int, Generation]]] = field(default_factory=dict)
    queue: deque[Request] = field(default_factory=deque)
    waiting: dict[str, list[tuple[_Waiter, Want]]] = field(default_factory=dict)
    in_flight: dict[str, set[int]] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    finished: deque[tuple[Any, Any]] = field(default_factory=deque)  # (tag, the task's return value)
    # Backends other than the policy's (name -> opener, e.g. "judge"), and their queues.
    backends: dict[str, Callable] = field(default_factory=dict)
    queues: dict[str, deque[Request]] = field(default_factory=dict)

    def __post_init__(self):
        for name in self.backends:
            self.queues.setdefault(name, deque())

    @property
    def busy(self) -> bool:
        """Requests wait in some backend's queue."""
        return bool(self.queue) or any(self.queues.values())

    def add_cached(self, entries: dict[str, dict[str, dict[int, Generation]]]) -> None:
        for problem, groups in entries.items():
            known = self.entries.setdefault(problem, {})
            for key, group in groups.items():
                known.setdefault(key, {}).update(group)

    def forget(self, problem: str) -> None:
        """Drop a finished problem's generations from memory (they stay on disk)."""
        self.entries.pop(problem, None)
        self.forgotten.add(problem)

    def start(self, task: Task, tag: Any) -> None:
        self._run(task, tag, None)

    def _run(self, task: Task, tag: Any, sent: list | None) -> None:
        """Run `task` until it waits for a generation not yet here, or returns."""
        while True:
            try:
                wants = task.send(sent)
            except StopIteration as stop:
                self.finished.append((tag, stop.value))
                return
            missing = [want for want in wants if not self._complete(want)]
            if not missing:
                sent = [self._take(want) for want in wants]
                continue
            waiter = _Waiter(task, tag, wants, len(missing))
            for want in missing:
                self.waiting.setdefault(want.group, []).append((waiter, want))
                self._request(want)
            return

    def _group(self, want: Want) -> dict[int, Generation]:
        return self.entries.setdefault(want.problem, {}).setdefault(want.group, {})

    def _complete(self, want: Want) -> bool:
        group = self._group(want)
        return all(index in group for index in range(want.count))

    def _take(self, want: Want) -> list[Generation]:
        group = self._group(want)
        return [group[index] for index in range(want.count)]

    def _request(self, want: Want) -> None:
        group, asked = self._group(want), self.in_flight.setdefault(want.group, set())
        missing = [index for index in range(want.count) if index not in group and index not in asked]
        for first, n in runs(missing):
            seed = request_seed(self.seed, want.group, first)
            queue = self.queue if want.backend == POLICY else self.queues[want.backend]
            queue.append(Request(want.user, want.prefix, n, seed, tag=(want.problem, want.group, first)))
            asked.update(range(first, first + n))
            self.progress.add(n)

    def pump(self) -> Iterator[None]:
        """Run the queues (which woken tasks extend meanwhile) until all are empty: every backend at
        once where their class can (`generate_together`), else one at a time; yields after each result
        is stored and handed out."""
        lanes = [(self.open_backend, self.queue), *((self.backends[name], self.queues[name]) for name in self.backends)]
        together = _together(lanes)
        while self.busy:
            results = together(lanes) if together is not None else _in_turns(lanes)
            try:
                for request, generations in results:
                    self._store(request, generations)
                    yield
            finally:  # stopped early (an error, the caller gave up): cancel what is in flight now
                results.close()

    def _store(self, request: Request, generations: list[Generation]) -> None:
        problem, key, first = request.tag
        wrong = invalid_generations(generations, request.n)
        if wrong:  # never cached, never labelled: a backend bug must not become labels
            raise RuntimeError(f"the backend returned {wrong} for a request of group {key}; nothing was cached")
        self.writer.append(problem, key, first, generations)
        group = self.entries.setdefault(problem, {}).setdefault(key, {})
        for offset, generation in enumerate(generations):
            group.setdefault(first + offset, generation)
        self.in_flight[key].difference_update(range(first, first + request.n))
        if not self.in_flight[key]:
            del self.in_flight[key]
        self.progress.update(request.n)
        self._wake(key)

    def _wake(self, key: str) -> None:
        ready, still = [], []
        for waiter, want in self.waiting.pop(key, []):
            if not self._complete(want):
                still.append((waiter, want))
                continue
            waiter.missing -= 1
            if not waiter.missing:
                ready.append(waiter)
        if still:
            self.waiting[key] = still
        for waiter in ready:
            self._run(waiter.task, waiter.tag, [self._take(want) for want in waiter.wants])


def _together(lanes: list[tuple[Callable, deque[Request]]]) -> Callable | None:
    """The function that runs every lane's backend at once, when they are LazyBackends of one class
    that has one (openai's `generate_together`); None when they must take turns."""
    classes = {getattr(open_backend, "backend_class", None) for open_backend, _ in lanes}
    if len(lanes) < 2 or len(classes) != 1 or None in classes:
        return None
    return getattr(classes.pop(), "generate_together", None)


def _in_turns(lanes: list[tuple[Callable, deque[Request]]]) -> Iterator[tuple[Request, list[Generation]]]:
    """Each lane's backend until its queue is empty, one after the other."""
    for open_backend, queue in lanes:
        if queue:
            yield from open_backend().generate(queue)


def runs(indices: list[int]) -> Iterator[tuple[int, int]]:
    """(first, length) of each run of consecutive indices: one request per run."""
    start = previous = None
    for index in indices:
        if start is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            yield start, previous - start + 1
        start = previous = index
    if start is not None:
        yield start, previous - start + 1


def request_seed(seed: int, key: str, first: int) -> int:
    # From what the request is, never from when it runs: the same request draws the same text.
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}:{first}".encode()).digest()[:4], "big") >> 1


class LazyBackend:
    """The backend, built on first use only: a build whose generations are all cached loads no model."""

    def __init__(self, name: str, *args, **kwargs):
        self.backend_class = BACKENDS[name]  # known before it is built: Scheduler.pump runs alike ones together
        self.build = lambda: self.backend_class(*args, **kwargs)
        self.backend = None

    def get(self):
        if self.backend is None:
            self.backend = self.build()
        return self.backend

    __call__ = get

    def __enter__(self) -> "LazyBackend":
        return self

    def __exit__(self, *exc) -> None:
        if self.backend is not None:
            self.backend.close()


class Progress:
    """A bar of the split's solutions labelled, out of a total known before any request (a stable
    total, where the generations to make are known only as the searches go), with the requests
    and generations made so far beside it; shown once a request is made."""

    def __init__(self, split: str, total: int):
        self.split = split
        self.total = total
        self.done = 0  # solutions labelled or dropped
        self.requests = self.generated = 0
        self.bar = None

    def add(self, count: int) -> None:
        """A request for `count` generations joined the queue."""
        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=self.done, unit="solution", desc=f"Labelling {self.split}",
                            dynamic_ncols=True)  # fmt: skip
        self.requests += 1

    def update(self, count: int) -> None:
        """`count` generations came back."""
        self.generated += count
        self.bar.set_postfix_str(f"{self.generated:,} generations in {self.requests:,} requests", refresh=False)

    def solutions_done(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)

    def describe(self) -> str:
        return f"{self.generated:,} generations in {self.requests:,} requests for {self.done:,} solutions"

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


# Caches read without their shard locks (said once per process).
_UNLOCKED_CACHES: set[str] = set()


class _NoLock:
    def release(self) -> None:
        pass


class ShardLocks:
    """The problem shards this build is working on, locked against other builds sharing the cache.

    A shard is locked before its generations are read from the cache and released once all its
    rows are out, so a second build waits, then reads what the first one generated. A build never
    blocks while it holds a lock with work in progress (it stops admitting problems and finishes
    what it has first), so two builds can never wait for each other.
    """

    def __init__(self, cache, shards: list[list]):
        self.cache = cache
        self.firsts = [shard[0].key for shard in shards]
        self.ends = list(itertools.accumulate(len(shard) for shard in shards))  # problems handed out when done
        self.held = {}

    def take(self, number: int, wait: bool) -> bool:
        """Lock shard `number`; without `wait`, only if no other build holds it."""
        from filelock import Timeout

        try:
            lock = self.cache.shard_lock(self.firsts[number])
        except OSError as error:
            return self._without_lock(number, error)
        while True:
            try:
                lock.acquire(timeout=LOCK_NOTICE_S if wait else 0)
                break
            except Timeout:
                if not wait:
                    return False
                logger.warning(f"waiting for another build using the generation cache {self.cache.path} ({lock.lock_file})")
            except OSError as error:  # after Timeout, which is an OSError too
                return self._without_lock(number, error)
        self.held[number] = lock
        return True

    def _without_lock(self, number: int, error: OSError) -> bool:
        # A cache this build cannot write to (a read-only mount, a shared finished cache): reading
        # needs no lock, and if a generation is missing, writing it fails with the OS's words.
        if str(self.cache.path) not in _UNLOCKED_CACHES:
            _UNLOCKED_CACHES.add(str(self.cache.path))
            logger.warning(
                f"the generation cache {self.cache.path} cannot be locked ({error.strerror or error}): reading it "
                f"without the shard locks; a build that cannot generate into it must find every generation there"
            )
        self.held[number] = _NoLock()
        return True

    def release_done(self, handed_out: int) -> None:
        for number in [n for n in self.held if self.ends[n] <= handed_out]:
            self.held.pop(number).release()

    def __enter__(self) -> "ShardLocks":
        return self

    def __exit__(self, *exc) -> None:
        for lock in self.held.values():
            lock.release()
        self.held.clear()


class RowsInOrder:
    """Hands out rows in the order their problems were admitted, whatever order the generations
    come back in, and frees a problem's generations once no admitted problem uses them."""

    def __init__(self, scheduler: Scheduler, drops: Counter):
        self.scheduler = scheduler
        self.drops = drops
        self.outcomes = Counter()
        self.admitted: deque[Problem] = deque()  # admitted and not yet handed out, in order
        self.unfinished: dict[int, int] = {}  # position -> its solutions still being labelled
        self.finished: dict[int, list[dict]] = {}  # position -> its rows
        self.users: Counter = Counter()  # problem key -> admitted positions using its generations
        self.next_position = 0

    @property
    def in_progress(self) -> int:
        return len(self.admitted)

    def admit(self, problem: Problem, tasks: list[Task]) -> None:
        position = self.next_position + len(self.admitted)
        self.admitted.append(problem)
        self.users[problem.key] += 1
        self.finished[position], self.unfinished[position] = [], len(tasks)
        for task in tasks:
            self.scheduler.start(task, position)

    def ready(self) -> Iterator[dict]:
        while self.scheduler.finished:
            position, result = self.scheduler.finished.popleft()
            self.unfinished[position] -= 1
            self.scheduler.progress.solutions_done(1)
            if isinstance(result, str):
                self.drops[result] += 1
            else:
                self.finished[position].append(result)
                self.outcomes[result["outcome"]] += 1
        while self.admitted and self.unfinished[self.next_position] == 0:
            problem = self.admitted.popleft()
            del self.unfinished[self.next_position]
            yield from sorted(self.finished.pop(self.next_position), key=lambda row: row["sample_index"])
            self.next_position += 1
            self.users[problem.key] -= 1
            if not self.users[problem.key]:
                del self.users[problem.key]
                self.scheduler.forget(problem.key)
