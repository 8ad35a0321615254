"""Monte Carlo step labels: from the prefix ending at step i the model writes `mc_rollouts`
continuations; step i is good if any reaches the right answer (Math-Shepherd's hard estimate),
and its score is the fraction that did.

Two searches decide which prefixes to evaluate:

  linear  every prefix, all at once.
  binary  OmegaPRM's: assuming labels are monotone (good, good, ..., bad, bad), find the first
          prefix with no successful rollout in ceil(log2(steps + 1)) evaluations at most, one
          at a time (the next prefix depends on this one's score); the steps it did not
          evaluate keep a NaN score.

With early stop (`mc_early_stop`), a prefix's rollouts are asked for in waves of growing size
(`wave_ends`: 1, 1, 1, 2, 3 for 8 rollouts) and stop at the first wave holding a success: one
success decides a hard label. A prefix with no success still gets all its rollouts, so a step is
labelled bad exactly when all `mc_rollouts` fail, and the labels are those of the full
evaluation over the same rollouts; only the score changes meaning: successes over the rollouts
made (`MCResult.rollouts`), not over `mc_rollouts`.

`rollout_labels` is one solution's whole search, written as a generator that yields the
rollouts it needs (`Want`s) and is sent them back by the scheduler (scheduler.py), so the
search reads top to bottom although its requests run side by side with everyone else's. The
waves of all the prefixes a round of the search evaluates are asked for together, and the
scheduler runs them beside every other solution's, so waiting for a wave never idles the backend.
"""

import hashlib
import math
from collections.abc import Generator
from dataclasses import dataclass

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


# Each wave makes the rollouts so far WAVE_GROWTH times as many (rounded up), from one: waves of
# 1, 1, 1, 2, 3 for 8 rollouts (1, 1, 1, 2, 3, 4, 4 for 16). A good step usually succeeds in its
# first rollout, so a first wave of one saves the most; a bad step needs every rollout, so few
# waves keep its round trips down. Tuned with benchmarks/model_sampled.py (docs/model_sampled.md):
# doubling (1, 1, 2, 4) makes 3% more rollouts with one wave fewer, one at a time 2% fewer with 8 waves.
WAVE_GROWTH = 1.5


def wave_ends(rollouts: int, early_stop: bool) -> list[int]:
    """How many rollouts a prefix has after each wave: [rollouts] without early stop, else 1, 2, 3, 5, 8, ..."""
    if not early_stop:
        return [rollouts]
    ends = [1]
    while ends[-1] < rollouts:
        ends.append(min(math.ceil(ends[-1] * WAVE_GROWTH), rollouts))
    return ends


@dataclass
class MCResult:
    """One solution's Monte Carlo labels: per step, the label, successes / rollouts made (NaN where the
    search did not evaluate the step) and the rollouts made (0 there)."""

    labels: list[bool]
    scores: list[float]
    rollouts: list[int]


def rollout_labels(
    problem: Problem, user: str, steps: list[str], separator: str, rollouts: int, search_name: str, early_stop: bool = False
) -> Generator[list[Want], list, MCResult]:
    """One solution's Monte Carlo labels; yields the rollouts each wave of each round of the search needs.

    A clean entry point for any label method that needs Monte Carlo labels (mc, consensus): run it
    with `yield from` inside a scheduler task.
    """
    search = SEARCHES[search_name](len(steps))
    made = [0] * len(steps)
    ends = wave_ends(rollouts, early_stop)
    while not search.done:
        asked = search.next_steps()
        prefixes = {step: separator.join(steps[: step + 1]) + separator for step in asked}
        successes = dict.fromkeys(asked, 0)
        waiting = list(asked)  # prefixes whose next wave is needed
        for end in ends:
            groups = yield [rollouts_of(problem, user, prefixes[step], end) for step in waiting]
            for step, generations in zip(waiting, groups):
                new = generations[made[step] : end]
                # A rollout cut off while thinking reached no answer: a failure, like any other.
                texts = [without_thinking(g.text) for g in new]
                graded = [grading.grade(prefixes[step] + t, problem.reference, problem.style) for t in texts if t is not None]
                successes[step] += sum(grade.correct for grade in graded)
                made[step] = end
            waiting = [step for step in waiting if not successes[step]]
            if not waiting:
                break
        for step in asked:
            search.record(step, successes[step] / made[step])
    return MCResult(search.labels(), search.scores, made)


def rollouts_of(problem: Problem, user: str, prefix: str, count: int) -> Want:
    """The first `count` rollouts from `prefix`: one group per prefix, shared by every solution that has it."""
    prefix_hash = hashlib.sha256(prefix.encode("utf-8")).hexdigest()[:16]
    return Want(problem.key, f"rollout:{problem.key}:{prefix_hash}", count, user, prefix)
