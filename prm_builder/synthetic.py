"""The `synthetic` config: correct GSM8K solutions plus corrupted copies that go wrong realistically.

Each corrupted copy makes one visible mistake (corruptions.py) in a calculation the final answer
depends on and carries it through everything that depends on it, never through a value that
merely looks the same (dataflow.py), so the copy stays true to its own wrong chain and ends in
a wrong answer, as a model's mistake would. Labels are True before the mistake and False from
it on. Every copy not made is counted by reason (see docs/synthetic.md).
"""

import contextlib
import dataclasses
import gc
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import datasets
from datasets.utils import logging

from . import gsm8k
from .corruptions import CORRUPTIONS
from .dataflow import Solution, parse_solution
from .drops import Dropped
from .citations import citation
from .contract import ConfigSpec
from .features import CORE_FEATURES
from .options import PRMBuilderConfig, as_list, check_int
from .problems import problem_files, read_gsm8k_problems

logger = logging.get_logger(__name__)

STRATEGIES = ("flip_number", "change_operator", "calculation_error", "wrong_final_answer")
# Shards of equal size (at most this many problems) so that num_proc workers get equal work.
PROBLEMS_PER_SHARD = 250
PROBLEMS_PER_BATCH = 100
# Draws per corrupted row before giving up on a duplicate of an earlier copy.
ATTEMPTS = 4

DESCRIPTION = (
    "GSM8K solutions split into steps, with corrupted copies (flip_number, change_operator, "
    "calculation_error, wrong_final_answer) whose error is carried through the later steps."
)
HOMEPAGE = "https://github.com/openai/grade-school-math"
LICENSE = "MIT (GSM8K)"
CITATION = citation("cobbe2021gsm8k")
FEATURES = CORE_FEATURES


@dataclasses.dataclass
class SyntheticConfig(PRMBuilderConfig):
    """Options of the `synthetic` config.

    Parameters:
        problems: "gsm8k" (the Hub's openai/gsm8k), "sample" (problems bundled with the package,
            no network), or a local folder with GSM8K's train.jsonl/validation.jsonl/test.jsonl
            (or one .jsonl file: the split its name says, else train; see problems.py).
        num_incorrect_per_problem: corrupted copies per problem, strategies spread evenly.
        max_examples: cap on the rows of each split (None: all).
        strategies: which corruptions to use (list or comma-separated string).
        include_correct: also yield each correct solution (all labels True).
        seed: randomness comes from (seed, problem), so rows do not depend on order or num_proc.
        keep_calculator_annotations: keep GSM8K's `<<48/2=24>>` in the step text.
    """

    problems: str = dataclasses.field(
        default="gsm8k", metadata={"help": "'gsm8k' (Hub), 'sample' (bundled, offline) or a local GSM8K folder/jsonl"}
    )
    num_incorrect_per_problem: int = dataclasses.field(default=3, metadata={"help": "corrupted copies per problem"})
    max_examples: int | None = dataclasses.field(default=None, metadata={"help": "cap on the rows of each split"})
    strategies: list[str] = dataclasses.field(
        default_factory=lambda: list(STRATEGIES), metadata={"help": "corruption strategies to use"}
    )
    include_correct: bool = dataclasses.field(default=True, metadata={"help": "also yield each correct solution"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the corruptions"})
    keep_calculator_annotations: bool = dataclasses.field(
        default=False, metadata={"help": "keep GSM8K's <<a*b=c>> annotations in the step text"}
    )

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.problems, (str, Path)) or not str(self.problems):
            raise ValueError(f"problems must be 'gsm8k', 'sample' or a local path, got {self.problems!r}")
        self.problems = str(self.problems)
        if self.problems == "math500":
            raise ValueError("problems='math500' has no worked solutions to corrupt; expected 'gsm8k', 'sample' or a local path")
        if self.problems not in ("gsm8k", "sample") and not Path(self.problems).exists():
            raise ValueError(
                f"problems must be 'gsm8k', 'sample' or an existing local path "
                f"(a folder with train.jsonl/validation.jsonl/test.jsonl, or a .jsonl file), got {self.problems!r}: no such file or folder"
            )
        check_int("num_incorrect_per_problem", self.num_incorrect_per_problem, minimum=0)
        check_int("max_examples", self.max_examples, minimum=1, allow_none=True)
        check_int("seed", self.seed)
        self.strategies = as_list("strategies", self.strategies)
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ValueError(f"strategies must be a non-empty list of {list(STRATEGIES)}, got {self.strategies!r}")
        # Order matters for which problem gets which strategy; duplicates would skew the spread.
        self.strategies = [s for s in STRATEGIES if s in self.strategies]
        for option in ("include_correct", "keep_calculator_annotations"):
            if not isinstance(getattr(self, option), bool):
                raise ValueError(f"{option} must be True or False, got {getattr(self, option)!r}")
        if not self.include_correct and self.num_incorrect_per_problem == 0:
            raise ValueError("include_correct=False with num_incorrect_per_problem=0 would yield no rows")

    def local_inputs(self) -> list[str]:
        return [] if self.problems in ("gsm8k", "sample") else [self.problems]



# -- splits ----------------------------------------------------------------------------------------


def split_generators(config: SyntheticConfig, dl_manager) -> list[datasets.SplitGenerator]:
    generators = []
    for split, file in problem_files(config.problems, dl_manager).items():
        problems = read_gsm8k_problems(file.path, file.selection)
        # Shards let num_proc work in parallel; a row cap has to see the rows in order, so one shard.
        count = min(len(problems), 1 if config.max_examples else -(-len(problems) // PROBLEMS_PER_SHARD))
        bounds = [len(problems) * index // max(count, 1) for index in range(count + 1)]
        shards = [problems[start:stop] for start, stop in zip(bounds, bounds[1:])]
        gen_kwargs = {"split": split, "shards": shards, "path": file.path}
        generators.append(datasets.SplitGenerator(name=split, gen_kwargs=gen_kwargs))
    return generators


# -- rows ------------------------------------------------------------------------------------------


def generate_rows(config: SyntheticConfig, drops: Counter, split: str, shards: list[list[dict]], path: str = "") -> Iterator[dict]:
    """Rows of the problems in `shards` (read from `path`, named in the debug log of skipped annotations)."""
    emitted = 0
    # A row cap stops at the exact problem (the drop counts cover only problems read); otherwise
    # problems are corrupted a batch at a time.
    batch_size = 1 if config.max_examples is not None else PROBLEMS_PER_BATCH
    for shard in shards:
        for start in range(0, len(shard), batch_size):
            # Corrupting allocates many short-lived objects and no reference cycles: pausing the
            # cyclic collector meanwhile saves it scanning the whole heap again and again.
            with _collector_paused():
                rows = [row for problem in shard[start : start + batch_size] for row in problem_rows(config, split, problem, drops, path)]
            for row in rows:
                if config.max_examples is not None and emitted >= config.max_examples:
                    return
                emitted += 1
                yield row


@contextlib.contextmanager
def _collector_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def problem_rows(config: SyntheticConfig, split: str, problem: dict, drops: Counter, path: str = "") -> Iterator[dict]:
    """The correct row and the corrupted copies of one problem; `path` names its file in the log."""
    try:
        solution = parse_solution(problem["answer"], problem["question"])
    except Dropped as error:
        drops[error.reason] += 1
        return
    problem_id = f"{split}-{problem['index']:05d}"
    correct_lines = solution.raw_lines
    base = {"prompt": problem["question"], "reference_answer": solution.answer_text}
    correct = gsm8k.render(correct_lines, solution.answer_text, config.keep_calculator_annotations)
    if config.include_correct:
        yield _row(base, f"{problem_id}/correct", "correct", correct, -1, solution.answer_text)
    if not config.num_incorrect_per_problem:
        return
    if solution.answer is None:
        drops["non_numeric_answer"] += config.num_incorrect_per_problem
        return
    if solution.unsafe:
        # A hostile or huge annotation: the problem keeps its correct row, no copy is attempted.
        where = f"{path}, line {problem['index'] + 1}" if path.endswith(".jsonl") else f"{path or split}, row {problem['index']}"
        logger.debug(f"{where}: annotation skipped as unsafe, solution {'; '.join(solution.unsafe)}")
        drops["unsafe_expression"] += config.num_incorrect_per_problem
        return
    # Duplicates are judged on the visible text, so keep_calculator_annotations changes display only.
    seen = {tuple(gsm8k.render(correct_lines, solution.answer_text, False))}
    for slot in range(config.num_incorrect_per_problem):
        # Rotating by the problem index spreads strategies evenly even with one copy per problem.
        planned = config.strategies[(problem["index"] + slot) % len(config.strategies)]
        rng = random.Random(f"{config.seed}:{split}:{problem['index']}:{slot}")
        # A problem that cannot take the planned mistake (its answer computed by algebra, no
        # visible expression) takes the next strategy that fits, so every slot is filled when any can be.
        fallbacks = [s for s in config.strategies if s != planned]
        reason = None
        for strategy in (planned, *fallbacks):
            drawn = _draw_copy(strategy, solution, rng, seen, config.keep_calculator_annotations)
            if not isinstance(drawn, str):
                break
            reason = reason or drawn
        else:
            drops[f"{planned}:{reason}"] += 1
            continue
        completions, error_step, final = drawn
        yield _row(base, f"{problem_id}/{strategy}/{slot}", strategy, completions, error_step, final)


def _draw_copy(strategy: str, solution: Solution, rng: random.Random, seen: set, keep_annotations: bool):
    """(completions, first wrong step, final answer) of a new corrupted copy, or why there is none."""
    for _ in range(ATTEMPTS):
        try:
            lines, error_step, final = CORRUPTIONS[strategy](solution, rng)
        except Dropped as skip:
            return skip.reason
        visible = tuple(gsm8k.render(lines, final, False))
        if visible not in seen:
            seen.add(visible)
            return (gsm8k.render(lines, final, True) if keep_annotations else list(visible)), error_step, final
    return "duplicate"


def _row(base: dict, row_id: str, kind: str, completions: list[str], error_step: int, final: str) -> dict:
    labels = [True] * len(completions) if error_step < 0 else [i < error_step for i in range(len(completions))]
    return {
        "id": row_id,
        **base,
        "completions": completions,
        "labels": labels,
        "first_error": error_step,
        "final_answer": final,
        "source": f"synthetic/{kind}",
    }


SPEC = ConfigSpec(
    config_class=SyntheticConfig,
    features=FEATURES,
    description=DESCRIPTION,
    homepage=HOMEPAGE,
    license=LICENSE,
    citation=CITATION,
    split_generators=split_generators,
    generate_rows=generate_rows,
    # Rows depend only on their own problem (and a row cap means a single shard): the builder may
    # generate shard by shard and key each table with its shard.
    shards_are_independent=True,
)
