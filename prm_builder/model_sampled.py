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

Every generation (solution or rollout) goes through the generation cache (generation_cache.py)
before it is used, so an interrupted build resumes where it stopped, changing only labelling
options generates nothing but the new rollouts, and the Arrow cache then serves the rows as for
any config. Work is scheduled as a stream: the next prefix of a search is asked for as soon as
the previous one's rollouts are in, so a backend is never idle waiting for a slow request.
"""

import dataclasses
import hashlib
import math
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import datasets
from datasets import List, Value
from datasets.utils import logging
from datasets.utils.tqdm import tqdm

from . import grading, prm800k_download, problems
from .backends import BACKENDS, Generation, Request, Sampling
from .features import first_error, with_extra_columns
from .generation_cache import GenerationCache, default_root, problem_key
from .jsonl import read_objects
from .options import PRMBuilderConfig, as_list, check_choice, check_int

logger = logging.get_logger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-8B"
DEFAULT_PROMPT_TEMPLATE = (
    "Solve the following math problem step by step. Write each step as its own paragraph, separated "
    "from the next by a blank line, and end with the final answer in the form \\boxed{ANSWER}.\n\n{problem}"
)
PROBLEM_PLACEHOLDER = "{problem}"
LABEL_METHODS = ("mc", "outcome")
MC_SEARCHES = ("binary", "linear")
PROBLEM_SETS = ("gsm8k", "math500")
# A local file's split is its name when that is a split name (test.jsonl -> "test"), else "train".
LOCAL_SPLITS = ("train", "validation", "test")
# Problems per shard: the unit of num_proc parallelism and of one pass over the cache files.
PROBLEMS_PER_SHARD = 256
# Problems in progress at least, whatever the backend's queue target (cached problems cost no requests).
MIN_PROBLEMS_IN_PROGRESS = 32
# Bumped when the meaning of cached generations changes; part of every cache's identity.
CACHE_FORMAT = 1

DESCRIPTION = (
    "Solutions sampled from a language model, split into steps, graded against the reference answer "
    "and labelled per step by Monte Carlo rollouts (Math-Shepherd hard estimate) or by the outcome."
)
HOMEPAGE = "https://github.com/openai/prm800k"
LICENSE = "the problem set's (GSM8K: MIT, MATH500: MIT) and the sampled model's terms"
CITATION = """@inproceedings{wang2024math,
  title={Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations},
  author={Wang, Peiyi and Li, Lei and Shao, Zhihong and Xu, Runxin and Dai, Damai and Li, Yifei and Chen, Deli and Wu, Yu and Sui, Zhifang},
  booktitle={ACL},
  year={2024}
}
@article{luo2024improve,
  title={Improve Mathematical Reasoning in Language Models by Automated Process Supervision},
  author={Luo, Liangchen and Liu, Yinxiao and Liu, Rosanne and Phatale, Samrat and Lara, Harsh and Li, Yunxuan and Shu, Lei and Zhu, Yun and Meng, Lei and Sun, Jiao and Rastogi, Abhinav},
  journal={arXiv preprint arXiv:2406.06592},
  year={2024}
}"""
FEATURES = with_extra_columns(
    # Monte Carlo success fraction per step; NaN where binary search did not evaluate the step;
    # empty for label_method="outcome".
    step_scores=List(Value("float32")),
    # How the sampled solution's own final answer graded: correct, incorrect or no_answer.
    outcome=Value("string"),
    # "stop" (the model ended its answer) or "length" (cut at max_new_tokens).
    finish_reason=Value("string"),
    model=Value("string"),
    sample_index=Value("int32"),
    temperature=Value("float32"),
    top_p=Value("float32"),
)


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
            test problems), or a local .jsonl file (or a folder of train/validation/test.jsonl)
            with `question` or `problem`, and `answer` (a bare answer, or a GSM8K solution ending
            in `#### N`, graded numerically).
        num_samples_per_problem: solutions sampled per problem.
        temperature, top_p, max_new_tokens: sampling, for solutions and rollouts alike.
        prompt_template: the user message; `{problem}` is replaced by the problem text. The chat
            template is applied when the tokenizer has one.
        step_separator: splits a solution into steps ("\\n\\n": one step per paragraph).
        label_method: "mc" (Monte Carlo rollouts per step) or "outcome" (the answer's correctness).
        mc_rollouts: continuations per step prefix.
        mc_search: "binary" (first failing step by binary search, assuming monotone labels) or
            "linear" (every step).
        max_problems: cap on the problems of each split (None: all).
        seed: seed of the sampling; part of the generation cache's identity.
        force_regenerate: discard every cached generation of this model, prompt and sampling
            options (for all problem sets), and generate again.
        generation_cache_dir: where generation caches live (default
            <HF_DATASETS_CACHE>/prm_builder_generations).
        concurrency: requests in flight (openai) or sequences per batch (transformers).
    """

    # Options that change how rows are made, never which rows: a build with other values of
    # these reuses the Arrow cache (force_regenerate forces a rebuild through the epoch).
    OPTIONS_NOT_IN_CACHE_KEY: ClassVar[frozenset] = frozenset(
        {"backend", "base_url", "concurrency", "generation_cache_dir", "force_regenerate"}
    )

    model: str = dataclasses.field(default=DEFAULT_MODEL, metadata={"help": "Hub name or local folder of the model"})
    model_revision: str | None = dataclasses.field(default=None, metadata={"help": "Hub revision of the model"})
    backend: str = dataclasses.field(default="transformers", metadata={"help": "transformers, vllm or openai"})
    base_url: str | list[str] | None = dataclasses.field(
        default=None, metadata={"help": "OpenAI-compatible server URL(s), used round-robin (backend openai)"}
    )
    problems: str = dataclasses.field(
        default="gsm8k", metadata={"help": "'gsm8k', 'math500' or a local .jsonl file/folder"}
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
    label_method: str = dataclasses.field(default="mc", metadata={"help": "mc (rollouts per step) or outcome"})
    mc_rollouts: int = dataclasses.field(default=8, metadata={"help": "rollouts per step prefix"})
    mc_search: str = dataclasses.field(default="binary", metadata={"help": "binary or linear"})
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

    def validate(self) -> None:
        super().validate()
        for option in ("model", "problems", "prompt_template", "step_separator"):
            value = getattr(self, option)
            if isinstance(value, Path):
                value = str(value)
                setattr(self, option, value)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{option} must be a non-empty string, got {value!r}")
        if self.model_revision is not None and not isinstance(self.model_revision, str):
            raise ValueError(f"model_revision must be a string or None, got {self.model_revision!r}")
        check_choice("backend", self.backend, list(BACKENDS))
        self.base_url = _base_urls(self.base_url)
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend='openai' needs base_url (e.g. 'http://localhost:8000/v1'), got None")
        if self.backend != "openai" and self.base_url:
            raise ValueError(f"base_url is only used with backend='openai', got backend={self.backend!r}")
        if self.problems not in PROBLEM_SETS and not Path(self.problems).exists():
            raise ValueError(
                f"problems must be 'gsm8k', 'math500' or an existing local .jsonl file or folder, "
                f"got {self.problems!r}: no such file or folder"
            )
        check_int("num_samples_per_problem", self.num_samples_per_problem, minimum=1)
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        check_int("mc_rollouts", self.mc_rollouts, minimum=1)
        check_int("max_problems", self.max_problems, minimum=1, allow_none=True)
        check_int("seed", self.seed)
        check_int("concurrency", self.concurrency, minimum=1)
        self.temperature = _number("temperature", self.temperature, lambda t: t >= 0, ">= 0")
        self.top_p = _number("top_p", self.top_p, lambda p: 0 < p <= 1, "in (0, 1]")
        if PROBLEM_PLACEHOLDER not in self.prompt_template:
            raise ValueError(f"prompt_template must contain {PROBLEM_PLACEHOLDER}, got {self.prompt_template!r}")
        if "\\" in self.step_separator:
            # From the command line "\n\n" arrives as backslash-n: read escapes as Python would.
            self.step_separator = self.step_separator.encode("latin-1", "backslashreplace").decode("unicode_escape")
        check_choice("label_method", self.label_method, list(LABEL_METHODS))
        check_choice("mc_search", self.mc_search, list(MC_SEARCHES))
        if not isinstance(self.force_regenerate, bool):
            raise ValueError(f"force_regenerate must be True or False, got {self.force_regenerate!r}")
        if self.generation_cache_dir is not None:
            if not isinstance(self.generation_cache_dir, (str, Path)) or not str(self.generation_cache_dir):
                raise ValueError(f"generation_cache_dir must be a folder path or None, got {self.generation_cache_dir!r}")
            self.generation_cache_dir = os.path.abspath(os.path.expanduser(str(self.generation_cache_dir)))

    def local_inputs(self) -> list[str]:
        return [] if self.problems in PROBLEM_SETS else [self.problems]

    def create_config_id(self, config_kwargs: dict, custom_features=None) -> str:
        config_id = super().create_config_id(config_kwargs, custom_features)
        # Rows are a function of the cached generations, which force_regenerate replaces by
        # starting a new epoch: the epoch joins the key, so a forced build never finds the old
        # Arrow files, and neither does any build after it (even one whose forced run was killed).
        epoch = self.generation_cache().epoch + (1 if self.force_regenerate else 0)
        return config_id if epoch == 0 else f"{config_id}-epoch{epoch}"

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

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)


CONFIG_CLASS = ModelSampledConfig


def _base_urls(value) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    urls = []
    for url in as_list("base_url", value):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be http(s) URLs, e.g. 'http://localhost:8000/v1', got {url!r}")
        url = url.rstrip("/")
        if url.count("/") == 2:  # no path: vLLM, SGLang and TGI serve the API under /v1
            url += "/v1"
        urls.append(url)
    return urls


def _number(option: str, value, accept: Callable[[float], bool], expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not accept(float(value)):
        raise ValueError(f"{option} must be a number {expected}, got {value!r}")
    return float(value)


# -- problems ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    id: str  # stable row id prefix: "test-00012", or the source's own id ("test/precalculus/807.json")
    text: str
    reference: str
    style: str  # grading.NUMERIC for GSM8K-style references, grading.MATH otherwise
    key: str  # generation cache key: a hash of the text


def make_problem(problem_id: str, text: str, answer: str) -> Problem:
    """A problem from its text and answer; a GSM8K solution (`... #### 72`) is graded numerically."""
    if "####" in answer:
        reference, style = answer.rsplit("####", 1)[1].strip().replace(",", ""), grading.NUMERIC
    else:
        reference, style = answer.strip(), grading.MATH
    return Problem(problem_id, text, reference, style, problem_key(text))


def split_generators(config: ModelSampledConfig, dl_manager) -> list[datasets.SplitGenerator]:
    if config.force_regenerate:
        # Once, here, before any worker generates: see ModelSampledConfig.create_config_id.
        epoch = config.generation_cache().start_new_epoch()
        logger.warning(f"force_regenerate: discarded the cached generations of {config.model}, now at epoch {epoch}")
    generators = []
    for split, problems in _problems(config, dl_manager).items():
        problems = problems[: config.max_problems]
        shards = [problems[start : start + PROBLEMS_PER_SHARD] for start in range(0, len(problems), PROBLEMS_PER_SHARD)]
        generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "shards": shards}))
    return generators


def _problems(config: ModelSampledConfig, dl_manager) -> dict[str, list[Problem]]:
    if config.problems == "gsm8k":
        files = dl_manager.download(problems.GSM8K_FILES)
        return {
            split: [
                make_problem(f"{split}-{p['index']:05d}", p["question"], p["answer"])
                for p in problems.read_gsm8k_problems(path)
            ]
            for split, path in files.items()
        }
    if config.problems == "math500":
        path = prm800k_download.download_verified(dl_manager, {"math500": prm800k_download.MATH500_FILE})["math500"]
        return {"test": read_problem_file(path, "test")}
    path = Path(config.problems)
    if path.is_file():
        return {_split_of(path): read_problem_file(path, _split_of(path))}
    found = {
        split: read_problem_file(path / f"{split}.jsonl", split)
        for split in LOCAL_SPLITS
        if (path / f"{split}.jsonl").is_file()
    }
    if not found:
        expected = ", ".join(f"{split}.jsonl" for split in LOCAL_SPLITS)
        raise FileNotFoundError(f"problems={config.problems!r}: expected {expected} in this folder, found none")
    return found


def _split_of(path: Path) -> str:
    return path.stem if path.stem in LOCAL_SPLITS else "train"


def read_problem_file(path: str | Path, split: str) -> list[Problem]:
    """Problems of a .jsonl file: `question` or `problem`, `answer`, and optionally `unique_id`."""
    problems, seen = [], {}
    for number, row in read_objects(path):
        text = row.get("question", row.get("problem"))
        answer = row.get("answer")
        if not isinstance(text, str) or not isinstance(answer, str):
            raise ValueError(
                f"{path}, line {number}: expected a JSON object with a string 'question' (or 'problem') "
                f"and a string 'answer', got keys {sorted(row)}"
            )
        problem_id = str(row.get("unique_id") or f"{split}-{len(problems):05d}")
        if problem_id in seen:
            raise ValueError(f"{path}, line {number}: unique_id {problem_id!r} already used on line {seen[problem_id]}")
        seen[problem_id] = number
        problems.append(make_problem(problem_id, text, answer))
    return problems


# -- rows ------------------------------------------------------------------------------------------


def generate_rows(config: ModelSampledConfig, drops: Counter, split: str, shards: list[list[Problem]]) -> Iterator[dict]:
    """Stream problems through one scheduler: new problems join while earlier ones are still being
    labelled, so the backend never idles between batches; rows come out in problem order."""
    cache = config.generation_cache()
    waiting = deque((number, problem) for number, shard in enumerate(shards) for problem in shard)
    loaded_shards = set()
    outcomes = Counter()
    target = BACKENDS[config.backend].queue_target(config.concurrency)
    # Rows leave in problem order, so problems finished behind a slow one wait in memory; room for
    # twice the queue keeps the backend fed meanwhile without holding a whole split.
    most_in_progress = 2 * max(target, MIN_PROBLEMS_IN_PROGRESS)
    with cache.writer() as writer, _Progress(split) as progress, _LazyBackend(config) as backend:
        scheduler = Scheduler(writer, backend.get, progress, config.seed)
        labeller = Labeller(config, scheduler, drops)

        def admit():
            while waiting and len(scheduler.queue) < target and labeller.in_progress < most_in_progress:
                number, problem = waiting.popleft()
                if number not in loaded_shards:  # one pass over the cache files per shard
                    scheduler.add_cached(cache.load({p.key for p in shards[number]}))
                    loaded_shards.add(number)
                elif problem.key in scheduler.forgotten:  # the same problem text again, further down
                    scheduler.add_cached(cache.load({problem.key}))
                labeller.admit(problem)

        def finished_rows():
            for row in labeller.ready_rows():
                outcomes[row["outcome"]] += 1
                yield row

        while True:
            admit()
            for _ in scheduler.pump():
                admit()
                yield from finished_rows()
            yield from finished_rows()
            if not waiting and not scheduler.queue:
                break
    if labeller.in_progress:  # every request came back, so every problem must be complete
        raise RuntimeError(f"{labeller.in_progress} problems left unfinished")
    if outcomes:
        logger.info(
            f"{split}: {sum(outcomes.values())} solutions: {outcomes[grading.CORRECT]} correct, "
            f"{outcomes[grading.INCORRECT]} incorrect, {outcomes[grading.NO_ANSWER]} without a final answer "
            f"(graded incorrect)"
        )


class _LazyBackend:
    """The backend, built on first use only: a build whose generations are all cached loads no model."""

    def __init__(self, config: ModelSampledConfig):
        self.config = config
        self.backend = None

    def get(self):
        if self.backend is None:
            config = self.config
            self.backend = BACKENDS[config.backend](
                config.model,
                config.model_revision,
                config.sampling(),
                concurrency=config.concurrency,
                base_urls=config.base_url,
            )
        return self.backend

    def __enter__(self) -> "_LazyBackend":
        return self

    def __exit__(self, *exc) -> None:
        if self.backend is not None:
            self.backend.close()


class _Progress:
    """A generations/s bar whose total grows as the searches ask for more; shown once there is work."""

    def __init__(self, split: str):
        self.split = split
        self.bar = None

    def add(self, count: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=0, unit="gen", desc=f"Sampling {self.split}", dynamic_ncols=True)
        self.bar.total += count
        self.bar.refresh()

    def update(self, count: int) -> None:
        self.bar.update(count)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


class Scheduler:
    """Asks the backend only for what the cache lacks; calls back whoever waits on a group once it is complete.

    A group is the generations of one prompt (`sample:<problem>` or `rollout:<problem>:<prefix>`),
    indexed from 0. Asking for the first `count` of a group requests just the missing indices,
    once, however many solutions wait on it (two solutions can share a step prefix).
    """

    def __init__(self, writer, open_backend: Callable, progress: _Progress, seed: int):
        self.writer = writer
        self.open_backend = open_backend
        self.progress = progress
        self.seed = seed
        # problem key -> group key -> {index: generation}: what is cached, and what came back since.
        self.entries: dict[str, dict[str, dict[int, Generation]]] = {}
        self.queue: deque[Request] = deque()
        self.waiting: dict[str, list[tuple[int, Callable]]] = {}
        self.in_flight: dict[str, set[int]] = {}
        self.forgotten: set[str] = set()

    def add_cached(self, entries: dict[str, dict[str, dict[int, Generation]]]) -> None:
        for problem, groups in entries.items():
            known = self.entries.setdefault(problem, {})
            for key, group in groups.items():
                known.setdefault(key, {}).update(group)

    def forget(self, problem: str) -> None:
        """Drop a finished problem's generations from memory (they stay on disk)."""
        self.entries.pop(problem, None)
        self.forgotten.add(problem)

    def want(self, problem: str, key: str, count: int, user: str, prefix: str, on_ready: Callable) -> None:
        have = self.entries.setdefault(problem, {}).setdefault(key, {})
        missing = [index for index in range(count) if index not in have]
        if not missing:
            on_ready([have[index] for index in range(count)])
            return
        self.waiting.setdefault(key, []).append((count, on_ready))
        asked = self.in_flight.setdefault(key, set())
        for first, n in _runs([index for index in missing if index not in asked]):
            self.queue.append(Request(user, prefix, n, _request_seed(self.seed, key, first), tag=(problem, key, first)))
            asked.update(range(first, first + n))
            self.progress.add(n)

    def pump(self) -> Iterator[None]:
        """Run the queue (which callers may extend meanwhile); yields after each result is stored and handed out."""
        if not self.queue:
            return
        for request, generations in self.open_backend().generate(self.queue):
            problem, key, first = request.tag
            self.writer.append(problem, key, first, generations)
            have = self.entries.setdefault(problem, {}).setdefault(key, {})
            for offset, generation in enumerate(generations):
                have.setdefault(first + offset, generation)
            self.in_flight[key].difference_update(range(first, first + request.n))
            if not self.in_flight[key]:
                del self.in_flight[key]
            self.progress.update(request.n)
            self._wake(key, have)
            yield

    def _wake(self, key: str, have: dict[int, Generation]) -> None:
        ready, still = [], []
        for count, on_ready in self.waiting.pop(key, []):
            (ready if all(index in have for index in range(count)) else still).append((count, on_ready))
        if still:
            self.waiting[key] = still
        for count, on_ready in ready:
            on_ready([have[index] for index in range(count)])


def _runs(indices: list[int]) -> Iterator[tuple[int, int]]:
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


def _request_seed(seed: int, key: str, first: int) -> int:
    # From what the request is, never from when it runs: the same request draws the same text.
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}:{first}".encode()).digest()[:4], "big") >> 1


# -- labelling ---------------------------------------------------------------------------------------


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


def split_steps(text: str, separator: str) -> list[str]:
    return [step.strip() for step in text.split(separator) if step.strip()]


@dataclass
class _Solution:
    problem: Problem
    position: int
    index: int
    generation: Generation
    steps: list[str]
    grade: grading.Grade
    search: LinearSearch | BinarySearch | None = None


class Labeller:
    """Turns problems into rows: sample, grade, then search each solution for its first bad step.

    Problems are admitted one by one; `ready_rows` hands out the rows of the earliest admitted
    problems once they are complete, so rows keep the problems' order whatever order the
    generations come back in.
    """

    def __init__(self, config: ModelSampledConfig, scheduler: Scheduler, drops: Counter):
        self.config = config
        self.scheduler = scheduler
        self.drops = drops
        self.admitted: deque[Problem] = deque()  # admitted and not yet handed out, in order
        self.unfinished: dict[int, int] = {}  # position -> solutions (or samples) still being labelled
        self.finished: dict[int, list[dict]] = {}  # position -> its rows, by sample index
        self.users: Counter = Counter()  # problem key -> admitted positions using its generations
        self.next_position = 0

    @property
    def in_progress(self) -> int:
        return len(self.admitted)

    def admit(self, problem: Problem) -> None:
        position = self.next_position + len(self.admitted)
        self.admitted.append(problem)
        self.users[problem.key] += 1
        self.finished[position] = []
        if not grading.reference_is_gradable(problem.reference, problem.style):
            self.drops["ungradable_reference"] += 1
            self.unfinished[position] = 0
            return
        self.unfinished[position] = 1  # the samples
        self.scheduler.want(
            problem.key,
            f"sample:{problem.key}",
            self.config.num_samples_per_problem,
            self._user_message(problem),
            "",
            lambda generations: self._on_samples(position, problem, generations),
        )

    def ready_rows(self) -> Iterator[dict]:
        while self.admitted and self.unfinished[self.next_position] == 0:
            problem = self.admitted.popleft()
            del self.unfinished[self.next_position]
            yield from sorted(self.finished.pop(self.next_position), key=lambda row: row["sample_index"])
            self.next_position += 1
            self.users[problem.key] -= 1
            if not self.users[problem.key]:
                del self.users[problem.key]
                self.scheduler.forget(problem.key)

    def _user_message(self, problem: Problem) -> str:
        return self.config.prompt_template.replace(PROBLEM_PLACEHOLDER, problem.text)

    def _on_samples(self, position: int, problem: Problem, generations: list[Generation]) -> None:
        # Counted before any search starts: a fully cached search finishes during this loop.
        self.unfinished[position] += len(generations)
        for index, generation in enumerate(generations):
            steps = split_steps(generation.text, self.config.step_separator)
            if not steps:
                self.drops["empty_solution"] += 1
                self._done(position)
                continue
            grade = grading.grade(generation.text, problem.reference, problem.style)
            solution = _Solution(problem, position, index, generation, steps, grade)
            if self.config.label_method == "outcome":
                self._finish(solution, [grade.correct] * len(steps), [])
            else:
                solution.search = SEARCHES[self.config.mc_search](len(steps))
                self._ask(solution)
        self._done(position)  # the samples themselves

    def _ask(self, solution: _Solution) -> None:
        separator = self.config.step_separator
        for step in solution.search.next_steps():
            prefix = separator.join(solution.steps[: step + 1]) + separator
            prefix_hash = hashlib.sha256(prefix.encode("utf-8")).hexdigest()[:16]
            self.scheduler.want(
                solution.problem.key,
                f"rollout:{solution.problem.key}:{prefix_hash}",
                self.config.mc_rollouts,
                self._user_message(solution.problem),
                prefix,
                lambda rollouts, step=step, prefix=prefix: self._on_rollouts(solution, step, prefix, rollouts),
            )

    def _on_rollouts(self, solution: _Solution, step: int, prefix: str, rollouts: list[Generation]) -> None:
        problem = solution.problem
        successes = sum(grading.grade(prefix + r.text, problem.reference, problem.style).correct for r in rollouts)
        solution.search.record(step, successes / len(rollouts))
        if solution.search.done:
            self._finish(solution, solution.search.labels(), solution.search.scores)
        else:
            self._ask(solution)

    def _done(self, position: int) -> None:
        self.unfinished[position] -= 1

    def _finish(self, solution: _Solution, labels: list[bool], scores: list[float]) -> None:
        config = self.config
        self.finished[solution.position].append(
            {
                "id": f"{solution.problem.id}/sample-{solution.index}",
                "prompt": solution.problem.text,
                "completions": solution.steps,
                "labels": labels,
                "first_error": first_error(labels),
                "final_answer": solution.grade.answer,
                "reference_answer": solution.problem.reference,
                "source": f"model_sampled/{config.model}",
                "step_scores": scores,
                "outcome": solution.grade.outcome,
                "finish_reason": solution.generation.finish_reason,
                "model": config.model,
                "sample_index": solution.index,
                "temperature": config.temperature,
                "top_p": config.top_p,
            }
        )
        self._done(solution.position)
