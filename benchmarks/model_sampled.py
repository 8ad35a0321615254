"""model_sampled's pipeline against the bare backend call on the same requests, and the rollouts
binary search saves over linear Monte Carlo labelling.

1. transformers, tiny model on CPU: `load_dataset(..., label_method="outcome")` end to end
   (cache lookups and writes, grading, rows, Arrow) against `TransformersBackend.generate` on the
   same sampling requests, backend construction included in both.
2. openai, a local OpenAI-compatible server (tests/openai_stub_server.py) that answers every
   request after a fixed delay, as a GPU server would: the pipeline (outcome, then Monte Carlo with
   binary search) against the bare `OpenAIBackend.generate` replaying the very requests the
   pipeline made, all queued at once (no search dependencies: the lower bound). Also the
   pipeline at concurrency 1, to show what the window of requests in flight buys.
   The same for consensus labels (judge, then Monte Carlo), with a second server as the judge: the
   bare run replays both servers' requests at the same time (`generate_together`), each server
   with its window, as the pipeline runs them; the note says how much of the time both were busy.
3. Rollout requests of binary search against linear search on scripted solutions of 8 to 12 steps
   with one wrong step each (counted at the server).
4. Rollouts generated per labelled solution for linear, binary and binary + early stop
   (mc_early_stop), and other wave sizes, on a server whose rollouts from a good prefix succeed with
   probability 0.7 and from a bad one 0.05, each rollout's outcome fixed by a hash of its prefix and
   index: 10-step solutions, half fully correct, half with one first error (counted at the server).
5. Requests and generations per solution of each label method (outcome, mc linear and binary,
   judge, consensus), counted at the policy's and the judge's servers.

Every pair runs in this process, alternating, best of --repeats. Two overheads are reported:
wall-clock (1 - bare / pipeline; on a shared machine the noise of generation itself shows here)
and the time the pipeline spends outside the backend (its own work: everything but building the
backend and generating), as a fraction of its wall time.

    python benchmarks/model_sampled.py [--repeats 3] [--delay 0.05] [--sections transformers,openai,search,early-stop,costs]
"""

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from datasets import load_dataset
from datasets.utils.logging import disable_progress_bar, set_verbosity_error

import prm_builder  # registers the builder
from prm_builder.sampling import mc_search
from prm_builder.sampling.backends import BACKENDS, Request
from prm_builder.sampling.backends.openai import OpenAIBackend
from prm_builder.sampling.backends.transformers import TransformersBackend
from prm_builder.configs.model_sampled import ModelSampledConfig
from prm_builder.readers.problems import problem_key, read_problem_file
from prm_builder.sampling.scheduler import request_seed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root, for its tests package
from prm_builder.tiny_model import build_tiny_model  # noqa: E402
from tests.openai_stub_server import StubServer, busy_seconds  # noqa: E402


def scripted_judge(request) -> list:
    """The index of the step marked [ERR] (or -1), one verdict in five off by one step, one in
    eight unparsable: agreement with Monte Carlo is high, not total, as with a real judge."""
    steps = request.user.split("[Solution]\n", 1)[1].split("</step_")
    wrong = next((i for i, step in enumerate(steps) if "[ERR]" in step), -1)
    verdicts = []
    for choice in range(request.n):
        draw = (request.seed + 31 * choice) % 40
        if draw % 8 == 0:
            verdicts.append("I cannot decide.")
        else:
            off = draw % 5 == 1 and wrong > 0
            verdicts.append(f"<think>Checking each step.</think>The earliest wrong step is \\boxed{{{wrong - 1 if off else wrong}}}.")
    return verdicts


def scripted_world(problems: list) -> callable:
    """Solutions of 8-12 steps, the wrong one (if any) chosen by the request seed; rollouts succeed
    exactly when their prefix holds no wrong step."""
    answers = {p.text: p.reference for p in problems}

    def responder(request):
        answer = next(a for text, a in answers.items() if text in request.user)
        if request.prefix:
            good = "[ERR]" not in request.prefix
            return [f"So \\boxed{{{answer if good else -1}}}." for _ in range(request.n)]
        texts = []
        for choice in range(request.n):
            draw = request.seed + 7919 * choice
            steps, bad = 8 + draw % 5, (draw // 5) % 13  # bad >= steps: a correct solution
            # Each solution words its steps its own way (no shared prefixes between solutions).
            lines = [f"Step {i}: {'[ERR] ' if i == bad else ''}work out part {i} of draw {draw}." for i in range(steps - 1)]
            texts.append("\n\n".join([*lines, f"So the answer is \\boxed{{{answer if bad >= steps else -1}}}."]))
        return texts

    return responder


@contextlib.contextmanager
def backend_clock(name: str):
    """Time spent inside `BACKENDS[name]`: building it (loading the model or tokenizer) and each
    step of its `generate` iterator, or of its `generate_together` (several backends at once),
    whoever calls them; a build inside a step is counted once."""
    spent, depth = [0.0], [0]
    backend_class = BACKENDS[name]
    original, original_init = backend_class.generate, backend_class.__init__
    original_together = backend_class.__dict__.get("generate_together")

    @contextlib.contextmanager
    def inside():
        depth[0] += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            depth[0] -= 1
            if not depth[0]:
                spent[0] += time.perf_counter() - start

    def init(self, *args, **kwargs):
        with inside():
            original_init(self, *args, **kwargs)

    def steps(iterator):
        while True:
            with inside():
                try:
                    result = next(iterator)
                except StopIteration:
                    return
            yield result

    def generate(self, queue):
        yield from steps(original(self, queue))

    def together(lanes):
        yield from steps(original_together.__func__(lanes))

    backend_class.generate, backend_class.__init__ = generate, init
    if original_together is not None:
        backend_class.generate_together = staticmethod(together)
    try:
        yield spent
    finally:
        backend_class.generate, backend_class.__init__ = original, original_init
        if original_together is not None:
            backend_class.generate_together = original_together


def measure(repeats: int, backend: str, pipeline, bare) -> dict:
    """Best of `repeats`, alternating: pipeline and bare wall times, and the pipeline's time outside the backend."""
    best = {"pipeline": float("inf"), "bare": float("inf"), "outside": float("inf")}
    for _ in range(repeats):
        with backend_clock(backend) as inside:
            start = time.perf_counter()
            pipeline()
            wall = time.perf_counter() - start
        if wall < best["pipeline"]:
            best["pipeline"], best["outside"] = wall, wall - inside[0]
        start = time.perf_counter()
        bare()
        best["bare"] = min(best["bare"], time.perf_counter() - start)
    return best


def row(name: str, times: dict, note: str = "") -> str:
    wall = 1 - times["bare"] / times["pipeline"]
    outside = times["outside"] / times["pipeline"]
    return f"| {name} | {times['bare']:.2f} | {times['pipeline']:.2f} | {wall:+.1%} | {outside:.1%} | {note} |"


def transformers_rows(args, work: Path, problems_file: Path) -> list[str]:
    model = build_tiny_model(work / "tiny", with_chat_template=True)
    options = {
        "model": str(model),
        "problems": str(problems_file),
        "max_problems": args.problems,
        "num_samples_per_problem": args.samples,
        "max_new_tokens": args.tokens,
        "label_method": "outcome",
        "concurrency": 32,
    }
    config = ModelSampledConfig(name="model_sampled", **options)
    problems = read_problem_file(problems_file, "test")[: args.problems]
    runs = iter(range(10**6))

    def pipeline():
        run = next(runs)
        load_dataset("prm_builder", "model_sampled", cache_dir=str(work / f"arrow{run}"),
                     generation_cache_dir=str(work / f"gen{run}"), **options)  # fmt: skip

    def bare():
        backend = TransformersBackend(str(model), None, config.sampling(), concurrency=32)
        # The pipeline's own requests: same prompts, sizes, order and seeds, so the same batches.
        queue = deque(
            Request(config.prompt_template.replace("{problem}", p.text), "", args.samples, request_seed(0, f"sample:{p.key}", 0))
            for p in problems
        )
        for _ in backend.generate(queue):
            pass

    times = measure(args.repeats, "transformers", pipeline, bare)
    # Everything but generation: the same build again with every generation in the cache.
    cached = {**options, "generation_cache_dir": str(work / "gen0")}
    rebuild = min(
        timed(lambda i=i: load_dataset("prm_builder", "model_sampled", cache_dir=str(work / f"rebuild{i}"), **cached))
        for i in range(args.repeats)
    )
    return [
        row(f"transformers, tiny model, CPU: {args.problems * args.samples} samples x {args.tokens} tokens", times),
        f"| the same build with every generation cached (a rebuild: all the pipeline does but generating) | | {rebuild:.2f} | | | |",
    ]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def openai_rows(args, work: Path, problems_file: Path) -> list[str]:
    problems = read_problem_file(problems_file, "test")
    model = build_tiny_model(work / "tiny-openai", with_chat_template=True)
    lines = []
    with StubServer(scripted_world(problems), delay=args.delay) as server, StubServer(scripted_judge, delay=args.delay) as judge:
        base = {
            "model": str(model), "backend": "openai", "base_url": server.url, "problems": str(problems_file),
            "num_samples_per_problem": args.samples, "concurrency": args.concurrency,
        }  # fmt: skip
        config = ModelSampledConfig(name="model_sampled", **base)
        runs = iter(range(10**6))

        def build(**extra):
            run = next(runs)
            load_dataset("prm_builder", "model_sampled", cache_dir=str(work / f"arrow{run}"),
                         generation_cache_dir=str(work / f"gen{run}"), **{**base, **extra})  # fmt: skip

        # Outcome labels make one request per problem: 8 times the problems, for half the requests
        # the Monte Carlo run makes with its ~15 per problem.
        for label, extra in (
            ("outcome", {"label_method": "outcome", "max_problems": args.problems * 8}),
            ("mc, binary search", {"mc_search": "binary", "mc_early_stop": False, "max_problems": args.problems}),
            # Early stop: more, smaller requests (one per wave), and more for the pipeline to do per rollout.
            ("mc, binary search + early stop", {"mc_search": "binary", "mc_early_stop": True, "max_problems": args.problems}),
            ("consensus (judge, then mc binary + early stop)", {"label_method": "consensus", "max_problems": args.problems,
                                                                "judge_model": str(model), "judge_base_url": judge.url}),
        ):
            server.reset_counts()
            judge.reset_counts()
            build(**extra)  # learn the requests the bare run replays
            served, judged = list(server.served), list(judge.served)
            in_flight = f"{server.max_in_flight}" + (f" (policy), {judge.max_in_flight} (judge)" if judged else "")
            judge_busy, both_busy = busy_seconds(judge, server)

            def bare(served=served, judged=judged):
                # Both servers' requests at once, each server with its own window, as the pipeline runs them.
                backends, lanes = [], []
                for url, requests, thinking in ((server.url, served, False), (judge.url, judged, True)):
                    if requests:
                        backends.append(OpenAIBackend(str(model), None, config.sampling(), concurrency=args.concurrency,
                                                      base_urls=[url], thinking=thinking))  # fmt: skip
                        queue = deque(Request(r.user, r.prefix, r.n, r.seed) for r in requests)
                        lanes.append((lambda backend=backends[-1]: backend, queue))
                for _ in OpenAIBackend.generate_together(lanes):
                    pass
                for backend in backends:
                    backend.close()

            times = measure(args.repeats, "openai", lambda extra=extra: build(**extra), bare)
            lines.append(
                row(f"openai, {args.delay * 1000:.0f} ms/request, concurrency {args.concurrency}: {label}", times,
                    f"{len(served) + len(judged)} requests, {in_flight} in flight at most"
                    + (f"; the judge's server busy {judge_busy:.1f} s, {both_busy / judge_busy:.0%} of it while the "
                       f"policy's was too" if judged else ""))  # fmt: skip
            )
            if judged:
                # The same build with the two backends taking turns, as before they ran together.
                together = OpenAIBackend.__dict__["generate_together"]
                OpenAIBackend.generate_together = None
                try:
                    in_turns = timed(lambda extra=extra: build(**extra))
                finally:
                    OpenAIBackend.generate_together = together
                lines.append(
                    f"| openai: consensus with the policy and the judge taking turns | | {in_turns:.2f} | | | running them "
                    f"together is {in_turns / times['pipeline']:.2f}x faster |"
                )
            if label == "outcome":
                serial = timed(lambda: build(**{**extra, "concurrency": 1}))
                lines.append(
                    f"| openai: outcome at concurrency 1 | | {serial:.2f} | | | concurrency {args.concurrency} is "
                    f"{serial / times['pipeline']:.1f}x faster |"
                )
    return lines


def search_rows(args, work: Path, problems_file: Path) -> list[str]:
    problems = read_problem_file(problems_file, "test")[: args.problems]
    model = build_tiny_model(work / "tiny-search", with_chat_template=True)
    counts = {}
    with StubServer(scripted_world(problems)) as server:
        for search in ("linear", "binary"):
            server.reset_counts()
            dataset = load_dataset(
                "prm_builder", "model_sampled", model=str(model), backend="openai", base_url=server.url,
                problems=str(problems_file), max_problems=args.problems, num_samples_per_problem=args.samples,
                mc_search=search, mc_rollouts=8, mc_early_stop=False, concurrency=64,
                generation_cache_dir=str(work / f"search-{search}"),
                cache_dir=str(work / f"search-arrow-{search}"),
            )["test"]  # fmt: skip
            rollouts = sum(1 for r in server.served if r.prefix)
            steps = sum(len(c) for c in dataset["completions"])
            counts[search] = (rollouts, steps, dataset["first_error"])
    (linear, steps, linear_errors), (binary, _, binary_errors) = counts["linear"], counts["binary"]
    assert linear_errors == binary_errors, "binary search must find the same first errors on monotone labels"
    return [
        "",
        "| rollout requests (8 rollouts each) | linear | binary | saving | notes |",
        "| --- | --- | --- | --- | --- |",
        f"| {len(linear_errors)} scripted solutions, {steps / len(linear_errors):.1f} steps on average, at most one "
        f"wrong step | {linear:,} | {binary:,} | {linear / binary:.2f}x fewer | same first_error on every solution |",
    ]


def cost_rows(args, work: Path, problems_file: Path) -> list[str]:
    """Requests and generations per labelled solution for each label method, on one problem set."""
    problems = read_problem_file(problems_file, "test")[: args.problems]
    model = build_tiny_model(work / "tiny-cost", with_chat_template=True)
    methods = {
        "outcome": {"label_method": "outcome"},
        "mc, linear": {"mc_search": "linear", "mc_early_stop": False},
        "mc, binary": {"mc_search": "binary", "mc_early_stop": False},
        "mc, binary + early stop": {"mc_search": "binary"},
        "judge": {"label_method": "judge"},
        "consensus (mc binary + early stop)": {"label_method": "consensus"},
    }
    lines = [
        "",
        f"| label method ({args.samples} samples per problem, 8 rollouts, 1 verdict) | policy requests / solution | "
        "policy generations / solution | judge requests / solution | rows kept per solution | dropped |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    with StubServer(scripted_world(problems)) as server, StubServer(scripted_judge) as judge:
        for number, (name, extra) in enumerate(methods.items()):
            server.reset_counts()
            judge.reset_counts()
            judged = extra.get("label_method") in ("judge", "consensus")
            options = {"judge_model": str(model), "judge_base_url": judge.url} if judged else {}
            dataset = load_dataset(
                "prm_builder", "model_sampled", model=str(model), backend="openai", base_url=server.url,
                problems=str(problems_file), max_problems=args.problems, num_samples_per_problem=args.samples,
                mc_rollouts=8, concurrency=64, generation_cache_dir=str(work / f"cost-{number}"),
                cache_dir=str(work / f"cost-arrow-{number}"), **extra, **options,
            )  # fmt: skip
            solutions = len(problems) * args.samples
            generations = sum(r.n for r in server.served)
            drops = prm_builder.load_drops(Path(dataset["test"].cache_files[0]["filename"]).parent).get("test", {})
            dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(drops.items())) or "none"
            lines.append(
                f"| {name} | {server.count() / solutions:.2f} | {generations / solutions:.1f} | "
                f"{judge.count() / solutions:.2f} | {len(dataset['test']) / solutions:.2f} | {dropped} |"
            )
    return lines


STEPS, ROLLOUTS, SAMPLES = 10, 8, 4
P_GOOD, P_BAD = 0.7, 0.05


def chance_world(problems: list) -> callable:
    """10-step solutions, even samples fully correct, odd ones with a first error ([ERR]) spread over
    the 10 positions; a rollout from a prefix without [ERR] succeeds with probability P_GOOD, with
    it P_BAD, its outcome fixed by a hash of the prefix and the rollout's index (read back from the
    request's seed, which derives from the prefix's group and the first index: scheduler.request_seed)."""
    numbers = {p.text: number for number, p in enumerate(problems)}
    answers = {p.text: p.reference for p in problems}

    def responder(request):
        text = next(t for t in answers if t in request.user)
        answer, number = answers[text], numbers[text]
        if not request.prefix:
            solutions = []
            for sample in range(request.n):
                bad = -1 if sample % 2 == 0 else (number * SAMPLES // 2 + sample // 2) % STEPS
                marks = [" [ERR]" if i == bad else "" for i in range(STEPS)]
                lines = [f"Step {i} of solution {number}/{sample}{marks[i]}." for i in range(STEPS - 1)]
                final = f"So the answer is \\boxed{{{answer if bad < 0 else -1}}}{marks[-1]}."
                solutions.append("\n\n".join([*lines, final]))
            return solutions
        group = f"rollout:{problem_key(text)}:{hashlib.sha256(request.prefix.encode()).hexdigest()[:16]}"
        first = next(k for k in range(ROLLOUTS) if request_seed(0, group, k) == request.seed)
        chance = P_BAD if "[ERR]" in request.prefix else P_GOOD
        outcomes = []
        for index in range(first, first + request.n):
            draw = int.from_bytes(hashlib.sha256(f"{request.prefix}|{index}".encode()).digest()[:8], "big") / 2**64
            outcomes.append(f"So \\boxed{{{answer if draw < chance else -1}}}.")
        return outcomes

    return responder


@contextlib.contextmanager
def waves(ends):
    """Other wave sizes than the shipped ones, for the tuning rows."""
    original = mc_search.wave_ends
    mc_search.wave_ends = lambda rollouts, early_stop: ends if early_stop else [rollouts]
    try:
        yield
    finally:
        mc_search.wave_ends = original


def early_stop_rows(args, work: Path) -> list[str]:
    problems = read_problem_file(args.gsm8k / "test.jsonl", "test")[: args.early_stop_problems]
    problems_file = work / "early-stop" / "test.jsonl"
    problems_file.parent.mkdir()
    lines = [json.dumps({"question": p.text, "answer": f"#### {p.reference}"}) + "\n" for p in problems]
    problems_file.write_text("".join(lines))
    model = build_tiny_model(work / "tiny-early-stop", with_chat_template=True)
    shipped = mc_search.wave_ends(ROLLOUTS, True)
    runs = [
        ("linear", "linear", False, None),
        ("linear + early stop", "linear", True, None),
        ("binary", "binary", False, None),
        ("binary + early stop (shipped)", "binary", True, None),
        ("binary + early stop, doubling", "binary", True, [1, 2, 4, 8]),
        ("binary + early stop, one then the rest", "binary", True, [1, 8]),
        ("binary + early stop, one at a time", "binary", True, list(range(1, ROLLOUTS + 1))),
    ]
    results = {}
    with StubServer(chance_world(problems)) as server:
        for name, search, early_stop, ends in runs:
            server.reset_counts()
            with waves(ends) if ends else contextlib.nullcontext():
                dataset = load_dataset(
                    "prm_builder", "model_sampled", model=str(model), backend="openai", base_url=server.url,
                    problems=str(problems_file), num_samples_per_problem=SAMPLES, mc_rollouts=ROLLOUTS,
                    mc_search=search, mc_early_stop=early_stop, concurrency=64,
                    generation_cache_dir=str(work / f"es-gen-{len(results)}"),
                    cache_dir=str(work / f"es-arrow-{len(results)}"),
                )["test"]  # fmt: skip
            requests = [r for r in server.served if r.prefix]
            ends = ends or (shipped if early_stop else [ROLLOUTS])
            results[name] = (sum(r.n for r in requests), len(requests), dataset["first_error"], ends)
    solutions = len(results["linear"][2])
    linear = results["linear"][0]
    lines = [
        "",
        f"| {solutions} scripted solutions of {STEPS} steps (half correct, half with one first error), {ROLLOUTS} "
        f"rollouts per prefix, P(success) {P_GOOD} from a good prefix, {P_BAD} from a bad one | waves | rollouts per "
        f"solution | rollout requests per solution | rollouts vs linear | first_error as binary |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, (rollouts, requests, errors, ends) in results.items():
        sizes = ", ".join(str(end - start) for start, end in zip([0, *ends], ends))
        differ = sum(a != b for a, b in zip(errors, results["binary"][2]))
        same = f"{differ} differ" if differ else "yes"
        per_solution = f"{rollouts / solutions:.2f} | {requests / solutions:.2f}"
        lines.append(f"| {name} | {sizes} | {per_solution} | {rollouts / linear:.3f}x | {same} |")
    rollouts, _, errors, _ = results["binary + early stop (shipped)"]
    assert errors == results["binary"][2], "early stop must give binary search's first error on every solution"
    assert results["linear + early stop"][2] == results["linear"][2], "early stop must not change linear labels"
    assert rollouts <= 0.15 * linear, f"binary + early stop made {rollouts / linear:.3f}x the rollouts of linear"
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", type=Path, default=ROOT / "tests" / "data" / "gsm8k")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128, help="max_new_tokens of the tiny model")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the local server takes per request")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--early-stop-problems", type=int, default=64, help="problems of the early stop table (x4)")
    parser.add_argument("--sections", default="transformers,openai,search,early-stop,costs", help="tables, comma-separated")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    disable_progress_bar()
    set_verbosity_error()
    logging.getLogger("prm_builder").setLevel(logging.ERROR)  # the plan line of every build
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        problems_file = work / "test.jsonl"
        with open(args.gsm8k / "test.jsonl", encoding="utf-8") as source:
            problems_file.write_text("".join(source.readlines()[: args.problems * 8]))
        if sections & {"transformers", "openai"}:
            print("| run | bare backend (s) | pipeline (s) | wall-clock overhead | pipeline time outside the backend | notes |")
            print("| --- | --- | --- | --- | --- | --- |")
            for name, rows in (("transformers", transformers_rows), ("openai", openai_rows)):
                for line in rows(args, work, problems_file) if name in sections else []:
                    print(line, flush=True)
        for name, rows in (("search", search_rows), ("early-stop", early_stop_rows), ("costs", cost_rows)):
            if name in sections:
                for line in rows(args, work) if name == "early-stop" else rows(args, work, problems_file):
                    print(line, flush=True)


if __name__ == "__main__":
    main()
