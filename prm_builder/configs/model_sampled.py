"""The `model_sampled` config: a real model's solutions, each step labelled by Monte Carlo rollouts.

For every problem the model writes `num_samples_per_problem` solutions at a high temperature,
one step per paragraph. Each solution is graded against the reference answer (grading.py), then
labelled:

  outcome  every step gets the solution's own correctness: cheap, and a weak baseline, since a
           right answer can follow a wrong step and a wrong answer can follow right ones.
  mc       Math-Shepherd's hard estimate: from the prefix ending at step i the model writes
           `mc_rollouts` continuations; step i is good if any reaches the right answer, and
           `step_scores[i]` is the fraction that did. `mc_search="linear"` evaluates every
           prefix; `"binary"` (OmegaPRM) assumes labels are monotone (good, good, ..., bad, bad)
           and finds the first prefix with no successful rollout in ~log2(steps + 1) evaluations;
           the steps it did not evaluate get NaN in `step_scores`. A correct final answer does not
           skip the rollouts: right answers after wrong steps are exactly what a PRM must catch.
           `mc_early_stop` (the default) asks for a prefix's rollouts in waves and stops at the
           first success: the same labels for a fraction of the rollouts; `step_scores` is then
           successes over the rollouts made, which the `step_rollouts` column gives.
  judge    an LLM judge (`judge_model`, thinking allowed) reads the problem and the indexed steps
           and names the earliest wrong step, or -1 (judge.py); `judge_samples` verdicts are
           voted on, a tie or no majority is a drop. Steps before the voted index are True.
  consensus  the judge, then Monte Carlo as `mc` does, on every solution the judge labelled; kept
           only when both give the same first error (Zhang et al. 2025's consensus filtering),
           disagreements dropped and counted by kind.

Every generation (solution or rollout) goes through the generation cache (generation_cache.py)
before it is used, so an interrupted build resumes where it stopped, changing only labelling
options generates nothing but the new rollouts, and the Arrow cache then serves the rows as for
any config. This module holds the options and streams a split's rows; problems.py reads the
problems, scheduler.py makes the requests, solution_labels.py makes one solution's row,
mc_search.py searches for its first bad step and judge_labels.py asks the judge.
"""

import contextlib
import dataclasses
import os
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import datasets
from datasets import List, Value
from datasets.utils import logging

from ..common import grading
from ..sampling import judge_labels
from ..sampling.backends import BACKENDS, Sampling
from ..sampling.backends.openai import MAX_RETRIES, REQUEST_TIMEOUT_S
from ..common.citations import citation
from ..contract import ConfigSpec
from ..common.features import CORE_FEATURES, with_extra_columns
from ..sampling.generation_cache import GenerationCache, default_root
from ..sampling.judge import DEFAULT_JUDGE_PROMPT_TEMPLATE
from ..common.options import PRMBuilderConfig, check_bool, check_choice, check_int, check_number, check_string, check_urls
from ..readers.problems import Problem, load_problems
from ..sampling.sampling_plan import plan, wave_sizes  # noqa: F401 - wave_sizes: part of this module's interface
from ..sampling.scheduler import LazyBackend, Progress, RowsInOrder, Scheduler, ShardLocks
from ..sampling.solution_labels import solution_row, solution_steps  # noqa: F401 - solution_steps: part of this module's interface

logger = logging.get_logger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-8B"
DEFAULT_PROMPT_TEMPLATE = (
    "Solve the following math problem step by step. Write each step as its own paragraph, separated "
    "from the next by a blank line, and end with the final answer in the form \\boxed{ANSWER}.\n\n{problem}"
)
PROBLEM_PLACEHOLDER = "{problem}"
LABEL_METHODS = ("consensus", "judge", "mc", "outcome")
# The label methods that run Monte Carlo rollouts (mc_search, mc_rollouts and mc_early_stop apply).
MC_LABEL_METHODS = ("consensus", "mc")
MC_SEARCHES = ("binary", "linear")
PROBLEM_SETS = ("gsm8k", "math500", "sample")
# Problems per shard: the unit of num_proc parallelism, of one pass over the cache files, and of
# the lock that builds sharing a generation cache take.
PROBLEMS_PER_SAMPLING_SHARD = 256
# Problems in progress at least, whatever the backend's queue target (cached problems cost no requests).
MIN_PROBLEMS_IN_PROGRESS = 32
# Bumped when the meaning of cached generations changes; part of every cache's identity.
# 2: the chat endpoint switches thinking off, and a reasoning-only answer is kept as <think>...
CACHE_FORMAT = 2

DESCRIPTION = (
    "Solutions sampled from a language model, split into steps, graded against the reference answer "
    "and labelled per step by Monte Carlo rollouts (Math-Shepherd hard estimate), by an LLM judge, by both "
    "where they agree (consensus), or by the outcome. `step_scores` holds each step's Monte Carlo successes over "
    "the rollouts made; with mc_early_stop (a `step_rollouts` column) a step's rollouts stop at the first success, "
    "so its score is not an estimate of the success rate: build with mc_early_stop=False for soft labels."
)
HOMEPAGE = "https://github.com/openai/prm800k"
LICENSE = "the problem set's (GSM8K: MIT, MATH500: MIT) and the sampled model's terms"
CITATION = citation("wang2024math", "luo2024improve", "zhang2025lessons", "zheng2024processbench")
FEATURES = with_extra_columns(
    # Monte Carlo success fraction per step (over the rollouts made: see step_rollouts); NaN where
    # binary search did not evaluate the step; empty for label_method="outcome".
    step_scores=List(Value("float32")),
    # How the sampled solution's own final answer graded: correct, incorrect or no_answer.
    outcome=Value("string"),
    # How the generation ended: "stop" (the model ended its answer) or "length" (cut at max_new_tokens).
    generation_end=Value("string"),
    model=Value("string"),
    sample_index=Value("int32"),
    temperature=Value("float32"),
    top_p=Value("float32"),
)
# Monte Carlo with early stop adds, per step, the rollouts made from its prefix (0 where the search
# did not evaluate it): a step's score is successes over these, not over mc_rollouts. Its presence
# is what tells prm-train that step_scores are not full estimates (label_type="soft" refuses them).
EARLY_STOP_FEATURES = with_extra_columns(**{**{k: v for k, v in FEATURES.items() if k not in CORE_FEATURES},
                                            "step_rollouts": List(Value("int32"))})  # fmt: skip


# Rows labelled by a judge (label_method judge or consensus) carry its verdict and Monte Carlo's.
JUDGE_FEATURES = datasets.Features({**FEATURES, **judge_labels.COLUMNS})


def features(config: "ModelSampledConfig") -> datasets.Features:
    """The row schema of this build: early-stopped Monte Carlo adds `step_rollouts`, a judge three columns."""
    schema = EARLY_STOP_FEATURES if config.early_stopped else FEATURES
    return datasets.Features({**schema, **judge_labels.COLUMNS}) if config.label_method in judge_labels.METHODS else schema


@dataclasses.dataclass
class ModelSampledConfig(PRMBuilderConfig):
    """Options of the `model_sampled` config.

    Parameters:
        model: Hub name or local folder of the model; for backend="openai", the name the server serves.
        model_revision: Hub revision (branch, tag or commit) of the model; None for the default branch.
        backend: "transformers" (in process), "vllm" (in process, `pip install 'prm-builder[vllm]'`)
            or "openai" (any OpenAI-compatible server at base_url).
        base_url: URL of an OpenAI-compatible server, or a list (or comma-separated string) of them,
            used round-robin; "http://host:8000" means "http://host:8000/v1".
        problems: "gsm8k" (the Hub's openai/gsm8k, train and test), "math500" (PRM800K's 500 MATH
            test problems), "sample" (GSM8K problems bundled with the package), or a local .jsonl file (or a folder of train/validation/test.jsonl)
            with `question` or `problem`, and `answer` (a bare answer, or a GSM8K solution ending
            in `#### N`, graded numerically).
        num_samples_per_problem: solutions sampled per problem.
        temperature, top_p, max_new_tokens: sampling, for solutions and rollouts alike.
        prompt_template: the user message; `{problem}` is replaced by the problem text. The chat
            template is applied when the tokenizer has one.
        step_separator: splits a solution into steps ("\\n\\n": one step per paragraph).
        label_method: "mc" (Monte Carlo rollouts per step), "outcome" (the answer's correctness),
            "judge" (an LLM judge's first error) or "consensus" (judge and mc, kept where they agree).
        mc_rollouts: continuations per step prefix.
        mc_search: "binary" (first failing step by binary search, assuming monotone labels) or
            "linear" (every step).
        mc_early_stop: ask for a prefix's rollouts in waves of growing size (1, 1, 1, 2, 3 for 8) and stop
            at the first success: the same hard labels for a fraction of the rollouts. Step scores
            are then successes over the rollouts made (column `step_rollouts`), not estimates over
            mc_rollouts: build with False for soft labels.
        judge_model: the judge (Hub name, local folder, or the name a server serves); required by
            label_method "judge" and "consensus".
        judge_backend: backend of the judge (None: `backend`).
        judge_base_url: OpenAI-compatible server(s) of the judge (None: `base_url`).
        judge_samples: verdicts per solution; the index more than half of them name is the label
            (a tie or no majority drops the solution).
        judge_max_new_tokens, judge_temperature: the judge's sampling (top_p 1); thinking is allowed.
        judge_prompt_template: the judge's user message; `{problem}` and `{steps}` (the steps,
            each tagged with its index) are replaced.
        max_problems: cap on the problems of each split (None: all).
        seed: seed of the sampling; part of the generation cache's identity.
        force_regenerate: discard every cached generation of this model, prompt and sampling
            options (for all problem sets), and generate again.
        generation_cache_dir: where generation caches live (default
            <HF_DATASETS_CACHE>/prm_builder_generations).
        concurrency: requests in flight (openai) or sequences per batch (transformers).
        request_timeout: seconds an openai request may take, its whole answer included, before it is retried.
        max_retries: new verdicts for a judge's unparsable one (label_method judge, consensus), and
            retries of an openai request that failed (connection, timeout, HTTP 429/5xx,
            an unusable answer) before the build stops.
    """

    # Options that change how rows are made, never which rows: a build with other values of
    # these reuses the Arrow cache (force_regenerate forces a rebuild through the epoch).
    OPTIONS_NOT_IN_CACHE_KEY: ClassVar[frozenset] = frozenset(
        {
            "backend", "base_url", "concurrency", "generation_cache_dir", "force_regenerate", "request_timeout",
            "max_retries", "judge_backend", "judge_base_url",
        }  # fmt: skip
    )

    model: str = dataclasses.field(default=DEFAULT_MODEL, metadata={"help": "Hub name or local folder of the model"})
    model_revision: str | None = dataclasses.field(default=None, metadata={"help": "Hub revision of the model"})
    backend: str = dataclasses.field(default="transformers", metadata={"help": "transformers, vllm or openai"})
    base_url: str | list[str] | None = dataclasses.field(
        default=None, metadata={"help": "OpenAI-compatible server URL(s), used round-robin (backend openai)"}
    )
    problems: str = dataclasses.field(
        default="gsm8k", metadata={"help": "'gsm8k', 'math500', 'sample' or a local .jsonl file/folder"}
    )
    num_samples_per_problem: int = dataclasses.field(default=8, metadata={"help": "solutions sampled per problem"})
    temperature: float = dataclasses.field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = dataclasses.field(default=1.0, metadata={"help": "nucleus sampling threshold"})
    max_new_tokens: int = dataclasses.field(default=1024, metadata={"help": "tokens per generation at most"})
    prompt_template: str = dataclasses.field(
        default=DEFAULT_PROMPT_TEMPLATE, metadata={"help": "user message; {problem} is replaced by the problem"}
    )
    step_separator: str = dataclasses.field(
        default="\n\n", metadata={"help": "splits a solution into steps; escapes such as \\n are read (default: a blank line)"}
    )
    label_method: str = dataclasses.field(
        default="mc", metadata={"help": "mc (rollouts per step), outcome, judge (an LLM judge) or consensus (judge and mc agree)"}
    )
    mc_rollouts: int = dataclasses.field(default=8, metadata={"help": "rollouts per step prefix"})
    mc_search: str = dataclasses.field(default="binary", metadata={"help": "binary or linear"})
    mc_early_stop: bool = dataclasses.field(
        default=True, metadata={"help": "stop a prefix's rollouts at the first success (hard labels; False for soft)"}
    )
    judge_model: str | None = dataclasses.field(
        default=None, metadata={"help": "the judge model (label_method judge or consensus)"}
    )
    judge_backend: str | None = dataclasses.field(default=None, metadata={"help": "the judge's backend; unset: the policy's"})
    judge_base_url: str | list[str] | None = dataclasses.field(
        default=None, metadata={"help": "the judge's OpenAI-compatible server URL(s); unset: base_url"}
    )
    judge_samples: int = dataclasses.field(default=1, metadata={"help": "verdicts per solution, majority vote"})
    judge_max_new_tokens: int = dataclasses.field(default=8192, metadata={"help": "tokens per verdict at most (thinking included)"})
    judge_temperature: float = dataclasses.field(default=0.6, metadata={"help": "the judge's sampling temperature"})
    judge_prompt_template: str = dataclasses.field(
        default=DEFAULT_JUDGE_PROMPT_TEMPLATE, metadata={"help": "the judge's user message; {problem} and {steps} are replaced"}
    )
    max_problems: int | None = dataclasses.field(default=None, metadata={"help": "cap on the problems of each split"})
    seed: int = dataclasses.field(default=0, metadata={"help": "sampling seed"})
    force_regenerate: bool = dataclasses.field(
        default=False, metadata={"help": "discard the cached generations and generate again"}
    )
    generation_cache_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "root of the generation caches"}
    )
    concurrency: int = dataclasses.field(
        default=32, metadata={"help": "requests in flight (openai) or sequences per batch (transformers)"}
    )
    request_timeout: float = dataclasses.field(
        default=REQUEST_TIMEOUT_S, metadata={"help": "seconds before an openai request is retried"}
    )
    max_retries: int = dataclasses.field(
        default=MAX_RETRIES, metadata={"help": "retries of a failed openai request before the build stops"}
    )

    def validate(self) -> None:
        super().validate()
        for option in ("model", "prompt_template", "step_separator"):
            setattr(self, option, check_string(option, getattr(self, option)))
        self.problems = check_string("problems", self.problems, "'gsm8k', 'math500', 'sample' or a local path")
        self.model_revision = check_string("model_revision", self.model_revision, "a branch, tag or commit", allow_none=True)
        check_choice("backend", self.backend, list(BACKENDS))
        self.base_url = check_urls("base_url", self.base_url)
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend='openai' needs base_url (e.g. 'http://localhost:8000/v1'), got None")
        if self.backend != "openai" and self.base_url:
            raise ValueError(f"base_url is only used with backend='openai', got backend={self.backend!r}")
        if self.problems not in PROBLEM_SETS and not Path(self.problems).exists():
            raise ValueError(
                f"problems must be 'gsm8k', 'math500', 'sample' or an existing local .jsonl file or folder, "
                f"got {self.problems!r}: no such file or folder"
            )
        for option in ("num_samples_per_problem", "max_new_tokens", "mc_rollouts", "concurrency"):
            check_int(option, getattr(self, option), minimum=1)
        check_int("max_problems", self.max_problems, minimum=1, allow_none=True)
        check_int("seed", self.seed)
        check_int("max_retries", self.max_retries, minimum=0)
        self.temperature = check_number("temperature", self.temperature, minimum=0)
        self.top_p = check_number("top_p", self.top_p, minimum=0, maximum=1, above_minimum=True)
        self.request_timeout = check_number("request_timeout", self.request_timeout, minimum=0, above_minimum=True)
        if PROBLEM_PLACEHOLDER not in self.prompt_template:
            raise ValueError(f"prompt_template must contain {PROBLEM_PLACEHOLDER}, got {self.prompt_template!r}")
        if "\\" in self.step_separator:
            # From the command line "\n\n" arrives as backslash-n: read escapes as Python would.
            self.step_separator = self.step_separator.encode("latin-1", "backslashreplace").decode("unicode_escape")
        check_choice("label_method", self.label_method, list(LABEL_METHODS))
        check_choice("mc_search", self.mc_search, list(MC_SEARCHES))
        judge_labels.validate_options(self)
        check_bool("force_regenerate", self.force_regenerate)
        check_bool("mc_early_stop", self.mc_early_stop)
        if self.generation_cache_dir is not None:
            folder = check_string("generation_cache_dir", self.generation_cache_dir, "a folder path", allow_none=True)
            self.generation_cache_dir = os.path.abspath(os.path.expanduser(folder))

    @property
    def runs_monte_carlo(self) -> bool:
        return self.label_method in MC_LABEL_METHODS

    @property
    def early_stopped(self) -> bool:
        """Whether rows carry early-stopped Monte Carlo scores (and the step_rollouts column)."""
        return self.runs_monte_carlo and self.mc_early_stop

    @property
    def model_name(self) -> str:
        """The model as rows name it: a local folder by its last part, never its path on this machine."""
        return _public_model_name(self.model)

    @property
    def judge_model_name(self) -> str:
        return _public_model_name(self.judge_model)

    def judge_sampling(self) -> Sampling:
        return Sampling(temperature=self.judge_temperature, top_p=1.0, max_new_tokens=self.judge_max_new_tokens)

    def local_inputs(self) -> list[str]:
        return [] if self.problems in PROBLEM_SETS else [self.problems]

    def create_config_id(self, config_kwargs: dict, custom_features=None) -> str:
        config_id = super().create_config_id(config_kwargs, custom_features)
        # Rows are a function of the cached generations, which force_regenerate replaces by
        # starting a new epoch: the epoch joins the key, so a forced build never finds the old
        # Arrow files, and neither does any build after it (even one whose forced run was killed).
        epoch = self.generation_cache().epoch + (1 if self.force_regenerate else 0)
        config_id = config_id if epoch == 0 else f"{config_id}-epoch{epoch}"
        # A judge's unparsable verdicts are sampled again up to max_retries times: there it decides
        # which rows are kept, so it joins the key (it only says how requests are made otherwise).
        judged = self.label_method in judge_labels.METHODS and self.max_retries != MAX_RETRIES
        return f"{config_id}-retries{self.max_retries}" if judged else config_id

    def generation_cache(self) -> GenerationCache:
        """This build's generation cache: its identity is what a generation depends on, nothing else.

        Not the problem set: generations are keyed by a hash of each problem's text, so a moved or
        extended problem file, or the same problem in two sets, finds its generations again.
        """
        identity = {
            "format": CACHE_FORMAT,
            "model": self.model,
            "revision": self.model_revision,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "prompt_template": self.prompt_template,
            "seed": self.seed,
        }
        return GenerationCache(self.generation_cache_dir or default_root(), identity)

    def user_message(self, problem: str) -> str:
        return self.prompt_template.replace(PROBLEM_PLACEHOLDER, problem)

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)



def _public_model_name(model: str) -> str:
    """A local folder by its last part, never its path on this machine."""
    if os.path.isabs(model) or model.startswith((".", "~")) or os.path.isdir(model):
        return os.path.basename(os.path.normpath(model))
    return model




# -- splits and rows ----------------------------------------------------------------------------------


def split_generators(config: ModelSampledConfig, dl_manager) -> list[datasets.SplitGenerator]:
    if config.force_regenerate:
        # Once, here, before any worker generates: see ModelSampledConfig.create_config_id.
        epoch = config.generation_cache().start_new_epoch()
        logger.warning(f"force_regenerate: discarded the cached generations of {config.model}, now at epoch {epoch}")
    generators = []
    for split, problems in load_problems(config.problems, dl_manager).items():
        problems = problems[: config.max_problems]
        size = PROBLEMS_PER_SAMPLING_SHARD
        shards = [problems[start : start + size] for start in range(0, len(problems), size)]
        generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "shards": shards}))
    return generators


def generate_rows(config: ModelSampledConfig, drops: Counter, split: str, shards: list[list[Problem]]) -> Iterator[dict]:
    """Stream problems through one scheduler: new problems join while earlier ones are still being
    labelled, so the backend never idles between batches; rows come out in problem order."""
    cache = config.generation_cache()
    waiting = deque((number, problem) for number, shard in enumerate(shards) for problem in shard)
    loaded_shards = set()
    target = BACKENDS[config.backend].queue_target(config.concurrency)
    # Rows leave in problem order, so problems finished behind a slow one wait in memory; room for
    # twice the queue keeps the backend fed meanwhile without holding a whole split.
    most_in_progress = 2 * max(target, MIN_PROBLEMS_IN_PROGRESS)
    backend = LazyBackend(
        config.backend, config.model, config.model_revision, config.sampling(),
        concurrency=config.concurrency, base_urls=config.base_url,
        **({"timeout": config.request_timeout, "max_retries": config.max_retries} if config.backend == "openai" else {}),
    )  # fmt: skip
    judge = judge_labels.backend(config)  # None without a judge
    solutions = len(waiting) * config.num_samples_per_problem
    logger.warning(plan(config, split, len(waiting)))
    with (
        cache.writer() as writer, Progress(split, solutions) as progress, backend, ShardLocks(cache, shards) as locks,
        judge or contextlib.nullcontext(),
    ):  # fmt: skip
        scheduler = Scheduler(writer, backend, progress, config.seed, backends={"judge": judge} if judge else {})
        rows = RowsInOrder(scheduler, drops)

        def admit():
            while waiting and len(scheduler.queue) < target and rows.in_progress < most_in_progress:
                number, problem = waiting[0]
                if number not in loaded_shards:
                    # Another build on this shard: finish what is in progress, then wait for it.
                    if not locks.take(number, wait=not rows.in_progress):
                        return
                    scheduler.add_cached(cache.load({p.key for p in shards[number]}))  # one pass per shard
                    loaded_shards.add(number)
                elif problem.key in scheduler.forgotten:  # the same problem text again, further down
                    scheduler.add_cached(cache.load({problem.key}))
                waiting.popleft()
                if grading.reference_is_gradable(problem.reference, problem.style):
                    rows.admit(problem, [solution_row(config, problem, i) for i in range(config.num_samples_per_problem)])
                else:
                    drops["ungradable_reference"] += 1
                    rows.admit(problem, [])
                    progress.solutions_done(config.num_samples_per_problem)

        def hand_out():
            yield from rows.ready()
            locks.release_done(rows.next_position)

        while True:
            admit()
            for _ in scheduler.pump():
                admit()
                yield from hand_out()
            yield from hand_out()
            if not waiting and not scheduler.busy:
                break
    if rows.in_progress:  # every request came back, so every problem must be complete
        raise RuntimeError(f"{rows.in_progress} problems left unfinished")
    outcomes = rows.outcomes
    if outcomes:
        logger.info(
            f"{split}: {sum(outcomes.values())} solutions: {outcomes[grading.CORRECT]} correct, "
            f"{outcomes[grading.INCORRECT]} incorrect, {outcomes[grading.NO_ANSWER]} without a final answer "
            f"(graded incorrect)"
        )
    if progress.requests:
        logger.info(f"{split}: generated {progress.describe()}")


SPEC = ConfigSpec(
    config_class=ModelSampledConfig,
    features=FEATURES,
    description=DESCRIPTION,
    homepage=HOMEPAGE,
    license=LICENSE,
    citation=CITATION,
    split_generators=split_generators,
    generate_rows=generate_rows,
    features_for=features,
)
