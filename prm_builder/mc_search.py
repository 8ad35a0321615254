"""Monte Carlo step labels: from the prefix ending at step i the model writes `mc_rollouts`
continuations; step i is good if any reaches the right answer (Math-Shepherd's hard estimate),
and its score is the fraction that did.

Two searches decide which prefixes to evaluate:

  linear  every prefix, all at once.
  binary  OmegaPRM's: assuming labels are monotone (good, good, ..., bad, bad), find the first
          prefix with no successful rollout in ceil(log2(steps + 1)) evaluations at most, one
          at a time (the next prefix depends on this one's score); the steps it did not
          evaluate keep a NaN score.

`rollout_labels` is one solution's whole search, written as a generator that yields the
rollouts it needs (`Want`s) and is sent them back by the scheduler (scheduler.py), so the
search reads top to bottom although its requests run side by side with everyone else's.
"""

import hashlib
import math
from collections.abc import Generator

from . import grading
from .backends import without_thinking
from .problems import Problem
from .scheduler import Want


class LinearSearch:
    """Evaluate every step prefix; a step is good when any of its rollouts succeeded."""

    def __init__(self, num_steps: int):
        self.scores = [math.nan] * num_steps
        self.asked = False

    def next_steps(self) -> list[int]:
        if self.asked:
            return []
        self.asked = True
        return list(range(len(self.scores)))

    def record(self, step: int, score: float) -> None:
        self.scores[step] = score

    @property
    def done(self) -> bool:
        return not any(math.isnan(score) for score in self.scores)

    def labels(self) -> list[bool]:
        return [score > 0 for score in self.scores]


class BinarySearch:
    """Find the first step prefix with no successful rollout, assuming labels are monotone (OmegaPRM).

    Invariant: every step before `low` is good, and step `high` (if < num_steps) is bad. Each
    evaluation halves [low, high), so a solution of n steps costs ceil(log2(n + 1)) evaluations
    at most instead of n.
    """

    def __init__(self, num_steps: int):
        self.scores = [math.nan] * num_steps
        self.low, self.high = 0, num_steps
        self.asking = None

    def next_steps(self) -> list[int]:
        if self.done or self.asking is not None:
            return []
        self.asking = (self.low + self.high) // 2
        return [self.asking]

    def record(self, step: int, score: float) -> None:
        self.scores[step] = score
        self.asking = None
        if score > 0:
            self.low = step + 1
        else:
            self.high = step

    @property
    def done(self) -> bool:
        return self.low >= self.high

    def labels(self) -> list[bool]:
        return [step < self.low for step in range(len(self.scores))]


SEARCHES = {"linear": LinearSearch, "binary": BinarySearch}


def rollout_labels(
    problem: Problem, user: str, steps: list[str], separator: str, rollouts: int, search_name: str
) -> Generator[list[Want], list, tuple[list[bool], list[float]]]:
    """(labels, scores) of one solution's steps; yields the rollouts each round of the search needs."""
    search = SEARCHES[search_name](len(steps))
    while not search.done:
        asked = search.next_steps()
        prefixes = [separator.join(steps[: step + 1]) + separator for step in asked]
        groups = yield [rollouts_of(problem, user, prefix, rollouts) for prefix in prefixes]
        for step, prefix, generations in zip(asked, prefixes, groups):
            # A rollout cut off while thinking reached no answer: a failure, like any other.
            texts = [without_thinking(g.text) for g in generations]
            successes = sum(grading.grade(prefix + t, problem.reference, problem.style).correct for t in texts if t is not None)
            search.record(step, successes / len(generations))
    return search.labels(), search.scores


def rollouts_of(problem: Problem, user: str, prefix: str, count: int) -> Want:
    """The first `count` rollouts from `prefix`: one group per prefix, shared by every solution that has it."""
    prefix_hash = hashlib.sha256(prefix.encode("utf-8")).hexdigest()[:16]
    return Want(problem.key, f"rollout:{problem.key}:{prefix_hash}", count, user, prefix)
