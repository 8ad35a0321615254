"""mc_early_stop: a prefix's rollouts in waves, stopped at the first success.

Against a real HTTP server on 127.0.0.1 whose k-th rollout from a prefix succeeds by a rule this
test knows (the tag <kN> on the prefix's last step: rollouts N, N + 3, N + 6 succeed), so the
labels, scores, rollout counts and request counts below are computed by hand from the rule and
the documented waves (1, 1, 1, 2, 3 for 8 rollouts): exact, for both searches, against the same
builds without early stop; then the generation cache (either way round), the window of
requests in flight, the plan and the progress bar, and prm-train's refusal of soft labels.
"""

import hashlib
import json
import math
import re
from types import SimpleNamespace

import datasets
import numpy
import pytest
from datasets import load_dataset

import prm_builder  # noqa: F401 - registers the builder
from prm_builder import mc_search, model_sampled, scheduler
from prm_builder.backends import BACKENDS, Backend, Generation
from prm_builder.mc_search import BinarySearch, LinearSearch, wave_ends
from prm_builder.problems import problem_key

from tests.openai_stub_server import ScriptedRequest, StubServer

ROLLOUTS = 8
WAVE_ENDS = [1, 2, 3, 5, 8]  # the documented waves: 1, 1, 1, 2, 3
NEVER = 99
APPLES = "Ann has 2 apples and buys 3 more. How many apples does she have?"
PENS = "A box holds 4 pens. How many pens are in 3 boxes?"
ANSWERS = {APPLES: "5", PENS: "12"}
# Each solution as the tags of its steps; steps with the same text id are the same text, so the
# two PENS solutions that start alike share their first two prefixes (and their rollouts).
SOLUTIONS = {
    APPLES: [
        [("a0", 0), ("a1", 0), ("a2", 1), ("a3", 0)],  # every step good
        [("a0", 0), ("b1", 2), ("b2", NEVER), ("b3", NEVER)],  # first error at step 2
        [("c0", 4), ("c1", 7), ("c2", NEVER)],  # late successes: waves 4 and 5
        [("d0", NEVER), ("d1", 0), ("d2", 3)],  # not monotone: linear and binary disagree
    ],
    PENS: [
        [("e0", 2), ("e1", 5), ("e2", 0)],
        [("e0", 2), ("e1", 5), ("f2", NEVER), ("f3", NEVER), ("f4", NEVER)],
        [(f"g{i}", 1) for i in range(6)],
        [("h0", NEVER)],
    ],
}


def successes(tag: int) -> set[int]:
    return {tag, tag + 3, tag + 6} & set(range(ROLLOUTS))


def tag_of(prefix: str) -> int:
    return int(re.findall(r"<k(\d+)>", prefix)[-1])


def solution_text(steps) -> str:
    return "\n\n".join(f"Line {name} <k{tag}>." for name, tag in steps)


def rollout_index(request: ScriptedRequest) -> int:
    """Which rollout of its prefix a request starts at, read back from its seed (the seed derives from
    the prefix's group and the first index, scheduler.request_seed)."""
    problem = next(p for p in ANSWERS if p in request.user)
    group = mc_search.rollouts_of(SimpleNamespace(key=problem_key(problem)), request.user, request.prefix, 1).group
    return {scheduler.request_seed(0, group, first): first for first in range(ROLLOUTS)}[request.seed]


def answers(user: str, prefix: str, first: int, n: int) -> list[str]:
    problem = next(p for p in ANSWERS if p in user)
    if not prefix:
        return [solution_text(steps) for steps in SOLUTIONS[problem][:n]]
    hits = successes(tag_of(prefix))
    return [f"So the answer is \\boxed{{{ANSWERS[problem] if k in hits else -1}}}." for k in range(first, first + n)]


def scripted(request: ScriptedRequest) -> list[str]:
    return answers(request.user, request.prefix, rollout_index(request) if request.prefix else 0, request.n)


@pytest.fixture
def problems_file(tmp_path):
    path = tmp_path / "problems" / "test.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"question": q, "answer": f"#### {a}"}) + "\n" for q, a in ANSWERS.items()))
    return path


def build(server, problems_file, cache, tmp_path, **options):
    options = {
        "model": "served-model", "backend": "openai", "base_url": server.url, "problems": str(problems_file),
        "num_samples_per_problem": 4, "mc_rollouts": ROLLOUTS, "concurrency": 4,
        "generation_cache_dir": str(tmp_path / cache), **options,
    }  # fmt: skip
    return load_dataset("prm_builder", "model_sampled", **options)["test"]


# -- what the rule gives, by hand ------------------------------------------------------------------


def made_with_early_stop(tag: int) -> int:
    """Rollouts made from a prefix: up to the end of the first wave holding a success, else all."""
    return next((end for end in WAVE_ENDS if min(successes(tag), default=ROLLOUTS) < end), ROLLOUTS)


def expected(search: str, early_stop: bool) -> tuple[dict, set]:
    """Row id -> (labels, scores, rollouts made per step); and the distinct prefixes evaluated."""
    rows, prefixes = {}, set()
    for number, problem in enumerate(ANSWERS):
        for index, steps in enumerate(SOLUTIONS[problem]):
            tags = [tag for _, tag in steps]
            good = [tag < ROLLOUTS for tag in tags]
            # Which steps the search evaluates follows from the labels alone (BinarySearch is
            # checked against every first error in test_model_sampled.py).
            driven = BinarySearch(len(tags)) if search == "binary" else LinearSearch(len(tags))
            evaluated = []
            while not driven.done:
                for step in driven.next_steps():
                    evaluated.append(step)
                    driven.record(step, 1.0 if good[step] else 0.0)
            made = [0] * len(tags)
            scores = [math.nan] * len(tags)
            for step in evaluated:
                made[step] = made_with_early_stop(tags[step]) if early_stop else ROLLOUTS
                scores[step] = len({k for k in successes(tags[step]) if k < made[step]}) / made[step]
                prefixes.add((problem, tuple(steps[: step + 1])))
            rows[f"test-{number:05d}/sample-{index}"] = (driven.labels(), scores, made)
    return rows, prefixes


def nan_as_text(scores):
    # NaN (not evaluated) never equals itself; scores are stored as float32.
    return ["nan" if math.isnan(score) else float(numpy.float32(score)) for score in scores]


def comparable(dataset) -> list[dict]:
    return [{**row, "step_scores": nan_as_text(row["step_scores"])} for row in dataset]


def test_waves():
    assert wave_ends(8, early_stop=True) == WAVE_ENDS
    assert wave_ends(8, early_stop=False) == [8]
    assert wave_ends(1, early_stop=True) == [1]
    assert wave_ends(2, early_stop=True) == [1, 2]
    assert wave_ends(16, early_stop=True) == [1, 2, 3, 5, 8, 12, 16]
    assert model_sampled.wave_sizes(8) == "1, 1, 1, 2, 3"


def test_rollout_labels_asks_for_the_waves_of_every_prefix_together():
    """The search alone, driven by hand: which wants each wave yields, and what comes back."""
    from prm_builder.backends import Generation
    from prm_builder.problems import make_problem

    problem = make_problem("p", APPLES, "#### 5")
    steps = [f"Line s{i} <k{tag}>." for i, tag in enumerate([0, 4, NEVER])]
    search = mc_search.rollout_labels(problem, "user", steps, "\n\n", ROLLOUTS, "linear", early_stop=True)
    asked, sent = [], None
    try:
        while True:
            wants = search.send(sent)
            asked.append([(tag_of(w.prefix), w.count) for w in wants])
            sent = [[Generation(text, "stop") for text in answers(APPLES, w.prefix, 0, w.count)] for w in wants]
    except StopIteration as stop:
        result = stop.value
    # Wave 1 for all three prefixes at once; then only those without a success, asking for more.
    assert asked == [[(0, 1), (4, 1), (NEVER, 1)], [(4, 2), (NEVER, 2)], [(4, 3), (NEVER, 3)], [(4, 5), (NEVER, 5)],
                     [(NEVER, 8)]]  # fmt: skip
    assert (result.labels, result.scores, result.rollouts) == ([True, True, False], [1.0, 0.2, 0.0], [1, 5, 8])


@pytest.mark.parametrize("search", ["binary", "linear"])
def test_early_stop_gives_the_labels_of_all_rollouts_for_the_rollouts_counted_by_hand(search, problems_file, tmp_path):
    with StubServer(scripted) as server:
        full = build(server, problems_file, "full", tmp_path, mc_search=search, mc_early_stop=False)
        full_rollouts = sum(r.n for r in server.served if r.prefix)
        server.reset_counts()
        early = build(server, problems_file, "early", tmp_path, mc_search=search)  # early stop is the default
        rollout_requests = [r for r in server.served if r.prefix]

    rows, prefixes = expected(search, early_stop=True)
    full_rows, _ = expected(search, early_stop=False)
    assert "step_rollouts" in early.column_names and "step_rollouts" not in full.column_names
    assert early["id"] == full["id"] == list(rows)
    assert early["labels"] == full["labels"] == [labels for labels, _, _ in rows.values()]
    assert early["first_error"] == full["first_error"]
    assert [nan_as_text(s) for s in early["step_scores"]] == [nan_as_text(s) for _, s, _ in rows.values()]
    assert [nan_as_text(s) for s in full["step_scores"]] == [nan_as_text(s) for _, s, _ in full_rows.values()]
    assert early["step_rollouts"] == [made for _, _, made in rows.values()]

    # Generated: each distinct prefix once, as many rollouts as its waves made, one request per wave.
    tags = [steps[-1][1] for _, steps in prefixes]
    assert full_rollouts == ROLLOUTS * len(prefixes)
    assert sum(r.n for r in rollout_requests) == sum(made_with_early_stop(tag) for tag in tags)
    assert len(rollout_requests) == sum(WAVE_ENDS.index(made_with_early_stop(tag)) + 1 for tag in tags)
    assert sorted(r.n for r in rollout_requests if tag_of(r.prefix) == NEVER) == sorted(
        [1, 1, 1, 2, 3] * sum(tag == NEVER for tag in tags)
    )
    if search == "binary":  # the figures this test pins, so that a change of the rule shows
        assert (full_rollouts, sum(r.n for r in rollout_requests), len(prefixes)) == (112, 65, 14)


def test_a_wave_is_cached_like_any_generation(problems_file, tmp_path):
    rows, prefixes = expected("binary", early_stop=True)
    made = {prefix: made_with_early_stop(prefix[1][-1][1]) for prefix in prefixes}
    with StubServer(scripted) as server:
        early = build(server, problems_file, "shared", tmp_path)
        # All rollouts on top: only the ones early stop did not make, one request per prefix.
        server.reset_counts()
        full = build(server, problems_file, "shared", tmp_path, mc_early_stop=False)
        topped_up = sorted(r.n for r in server.served)
        assert topped_up == sorted(ROLLOUTS - n for n in made.values() if n < ROLLOUTS)
        assert all(r.prefix for r in server.served)
        # And early stop again, on a cache holding every rollout: nothing to generate, the same rows.
        server.reset_counts()
        again = build(server, problems_file, "shared", tmp_path, cache_dir=str(tmp_path / "arrow2"))
        assert server.count() == 0
    assert comparable(again) == comparable(early)
    assert full["labels"] == early["labels"]


class WindowBackend(Backend):
    """An in-process backend with a window of `concurrency` requests in flight, answering the
    oldest first by the same rule as the server; it records how full the window was at each answer."""

    trace: list = []

    def generate(self, queue):
        in_flight = []
        while queue or in_flight:
            while queue and len(in_flight) < self.concurrency:
                in_flight.append(queue.popleft())
            request = in_flight.pop(0)
            WindowBackend.trace.append((len(in_flight) + 1, request))
            problem, key, first = request.tag
            texts = answers(request.user, request.prefix, first, request.n)
            yield request, [Generation(text, "stop") for text in texts]


def test_the_window_never_drains_while_waves_wait(tmp_path, monkeypatch):
    # Many problems, each solution waiting on its waves: the window stays full until the last
    # problem is admitted, however few requests each solution has in flight.
    problems = {f"{APPLES} (case {i})": "5" for i in range(24)}
    monkeypatch.setitem(globals(), "ANSWERS", problems)
    monkeypatch.setitem(globals(), "SOLUTIONS", {p: SOLUTIONS[APPLES] for p in problems})
    monkeypatch.setitem(BACKENDS, "transformers", WindowBackend)
    monkeypatch.setattr(WindowBackend, "trace", [])
    path = tmp_path / "many" / "test.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"question": q, "answer": "#### 5"}) + "\n" for q in problems))
    rows = load_dataset("prm_builder", "model_sampled", model="scripted", problems=str(path), num_samples_per_problem=4,
                        concurrency=6, generation_cache_dir=str(tmp_path / "gen"))["test"]  # fmt: skip
    first_four = [labels for labels, _, _ in expected("binary", True)[0].values()][:4]
    assert len(rows) == 24 * 4 and rows["labels"][:4] == first_four
    trace = WindowBackend.trace
    last = list(problems)[-1]
    last_sample = next(i for i, (_, request) in enumerate(trace) if not request.prefix and last in request.user)
    assert last_sample > len(trace) // 2  # most of the build ran while problems waited for admission
    assert [full for full, _ in trace[:last_sample]] == [6] * last_sample


def test_plan_is_printed_before_the_first_request_and_the_bar_total_is_stable(problems_file, tmp_path, monkeypatch):
    said, bars = [], []

    class Bar:  # stands in for tqdm: records the total at every update
        def __init__(self, total, initial, **kwargs):
            self.total, self.n, self.totals = total, initial, []
            bars.append(self)

        def update(self, count):
            self.n += count
            self.totals.append(self.total)

        def set_postfix_str(self, text, refresh):
            self.postfix = text

        def close(self):
            pass

    monkeypatch.setattr(scheduler, "tqdm", Bar)
    monkeypatch.setattr(model_sampled.logger, "warning", lambda line: said.append(line))
    with StubServer(scripted) as server:
        original = server.handle
        server.handle = lambda path, body: (said.append("request"), original(path, body))[1]
        build(server, problems_file, "plan", tmp_path)
        rollouts = sum(r.n for r in server.served if r.prefix)
        requests = server.count()
    assert said[0] == (
        "model_sampled test: 2 problems x 4 samples = 8 solutions: 2 sample requests at most; Monte Carlo (binary "
        "search): at most 8 rollouts for each of ceil(log2(n + 1)) step prefixes of an n-step solution (32 for 10 "
        "steps), in waves of 1, 1, 1, 2, 3 stopped at the first success (mc_early_stop): an upper bound, since the "
        "rollouts made are known only as they come back; cached generations are not requested again"
    )
    assert said[1] == "request"
    (bar,) = bars
    assert bar.totals == [8] * 8 and bar.n == 8
    assert bar.postfix == f"{rollouts + 8:,} generations in {requests:,} requests"
    config = model_sampled.ModelSampledConfig(name="model_sampled", mc_search="linear", mc_early_stop=False)
    assert model_sampled.plan(config, "train", 3).endswith(
        "Monte Carlo (linear search): 8 rollouts for each step prefix (80 for 10 steps), one request per prefix; "
        "cached generations are not requested again"
    )
    outcome = model_sampled.ModelSampledConfig(name="model_sampled", label_method="outcome")
    assert model_sampled.plan(outcome, "train", 3) == (
        "model_sampled train: 3 problems x 8 samples = 24 solutions: 3 sample requests at most; "
        "label_method='outcome' makes no rollouts"
    )


def test_prm_train_refuses_soft_labels_from_early_stop(problems_file, tmp_path, tiny_model_path):
    from prm_trainer.cli import main, make_parser
    from prm_trainer.tokenization import check_rows

    with StubServer(scripted) as server:
        early = build(server, problems_file, "gen", tmp_path)
        full = build(server, problems_file, "gen", tmp_path, mc_early_stop=False)
    check_rows(full, "train", "step_scores", soft=True)  # full estimates: accepted
    check_rows(early, "train")  # hard labels: accepted
    saved = tmp_path / "early"
    datasets.DatasetDict({"train": early, "test": early}).save_to_disk(str(saved))
    with pytest.raises(ValueError, match=(
        r"the train split was built with model_sampled's mc_early_stop=True \(it has a `step_rollouts` column\): "
        r".*rebuild with mc_early_stop=False for soft labels .* or train with label_type='hard'"
    )):  # fmt: skip
        main(*make_parser().parse_args_and_config([
            "--dataset_name", str(saved), "--model_name_or_path", str(tiny_model_path), "--label_type", "soft",
            "--output_dir", str(tmp_path / "out"), "--report_to", "none",
        ]))  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_prefix_hash_names_the_group():
    # The rule above reads a request's rollout index back through the group name: keep it honest.
    prefix = "Line a0 <k0>.\n\n"
    want = mc_search.rollouts_of(SimpleNamespace(key="abc"), "u", prefix, 3)
    assert want.group == f"rollout:abc:{hashlib.sha256(prefix.encode()).hexdigest()[:16]}" and want.count == 3
