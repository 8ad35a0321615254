"""model_sampled through the openai backend against a real HTTP server on 127.0.0.1 with scripted
answers: exact rows (grading, Monte Carlo labels, binary search), request counts (nothing twice),
retries, concurrency, round-robin, errors, force_regenerate, and resuming after kill -9."""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

import pytest
from datasets import load_dataset

import prm_builder  # noqa: F401 - registers the builder
from prm_builder import cli
from prm_builder.configs import model_sampled
from prm_builder.sampling.backends import Request, Sampling
from prm_builder.sampling.backends.openai import OpenAIBackend
from prm_builder.sampling.generation_cache import list_caches

from tests.openai_stub_server import ScriptedRequest, StubServer, most_in_flight

NAN = math.nan
APPLES = "Ann has 2 apples and buys 3 more. How many apples does she have?"
FRACTIONS = "What is $\\frac{1}{2} + \\frac{1}{4}$?"

# The "model": three solutions per problem. [ERR] marks a wrong step, [HALF] a step from which
# only half the rollouts succeed; the rollout rules below make the expected labels exact.
A = "Ann starts with 2 apples.\n\nShe buys 3 more, so 2 + 3 = 5.\n\nThe answer is \\boxed{5}."
B = "Ann starts with 2 apples.\n\nShe buys 3 more, so 2 + 3 = 6. [ERR]\n\nSo she has 6 apples.\n\nThe answer is \\boxed{6}."
C = "Ann starts with 2 minus 3 apples [ERR].\n\nNo, she has 2 + 3 = 5.\n\n\\boxed{5}"  # right answer, wrong step
D = "Write both over 4 [HALF].\n\n\\frac{2}{4} + \\frac{1}{4} = \\frac{3}{4}.\n\n\\boxed{\\frac{3}{4}}"
E = ("I need to think about this.\n\nLet me", "length")  # cut off: no final answer
F = "   "  # nothing: dropped as empty_solution
SOLUTIONS = {APPLES: [A, B, C], FRACTIONS: [D, E, F]}
RIGHT = {APPLES: "\\boxed{5}", FRACTIONS: "\\boxed{0.75}"}  # 0.75 == \frac{3}{4} under math-verify
WRONG = {APPLES: "\\boxed{7}", FRACTIONS: "\\boxed{1}"}


def problem_of(user: str) -> str:
    return APPLES if APPLES in user else FRACTIONS


def scripted(request: ScriptedRequest) -> list:
    problem = problem_of(request.user)
    if not request.prefix:
        return SOLUTIONS[problem][: request.n]
    answers = []
    for choice in range(request.n):
        good = "[ERR]" not in request.prefix and ("[HALF]" not in request.prefix or choice % 2 == 0)
        answers.append(f"So the answer is {RIGHT[problem] if good else WRONG[problem]}.")
    return answers


@pytest.fixture
def problems_file(tmp_path):
    path = tmp_path / "problems" / "test.jsonl"
    path.parent.mkdir()
    rows = [
        {"question": APPLES, "answer": "Ann has 2 + 3 = <<2+3=5>>5 apples.\n#### 5"},
        {"problem": FRACTIONS, "answer": "\\frac{3}{4}", "unique_id": "test/algebra/1.json"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def server():
    with StubServer(scripted) as running:
        yield running


def build(model, problems_file, server_or_urls, tmp_path, **options):
    urls = server_or_urls if isinstance(server_or_urls, list) else server_or_urls.url
    options = {
        "model": str(model),
        "backend": "openai",
        "base_url": urls,
        "problems": str(problems_file),
        "num_samples_per_problem": 3,
        "mc_rollouts": 4,
        # All rollouts at once: these tests count requests; early stop has its own (test_mc_early_stop.py).
        "mc_early_stop": False,
        "generation_cache_dir": str(tmp_path / "generations"),
        "concurrency": 4,
        **options,
    }
    return load_dataset("prm_builder", "model_sampled", **options)["test"]


def _rows(dataset) -> dict:
    return {row["id"]: row for row in dataset}


def _nan_as_text(scores: list[float]) -> list:
    # NaN (a step binary search did not evaluate) never equals itself; compare it as a marker.
    return ["nan" if math.isnan(score) else score for score in scores]


def expected_rows(model: str, search: str) -> dict:
    """id -> the row's labels, step_scores (NaN: not evaluated), first_error, outcome, final answer."""
    if search == "linear":
        scores = {"A": [1, 1, 1], "B": [1, 0, 0, 0], "C": [0, 0, 0], "D": [0.5, 0.5, 0.5], "E": [1, 1]}
    else:
        scores = {"A": [NAN, 1, 1], "B": [1, 0, 0, NAN], "C": [0, 0, NAN], "D": [NAN, 0.5, 0.5], "E": [NAN, 1]}
    labels = {"A": [True] * 3, "B": [True, False, False, False], "C": [False] * 3, "D": [True] * 3, "E": [True] * 2}
    return {
        "test-00000/sample-0": ("A", labels["A"], scores["A"], -1, "correct", "5", "stop"),
        "test-00000/sample-1": ("B", labels["B"], scores["B"], 1, "incorrect", "6", "stop"),
        "test-00000/sample-2": ("C", labels["C"], scores["C"], 0, "correct", "5", "stop"),
        "test/algebra/1.json/sample-0": ("D", labels["D"], scores["D"], -1, "correct", "\\frac{3}{4}", "stop"),
        "test/algebra/1.json/sample-1": ("E", labels["E"], scores["E"], -1, "no_answer", "", "length"),
    }


def assert_rows(dataset, model: str, search: str):
    texts = {"A": A, "B": B, "C": C, "D": D, "E": E[0]}
    rows = _rows(dataset)
    expected = expected_rows(model, search)
    assert list(rows) == list(expected)  # problem order, then sample order; F was dropped
    for row_id, (name, labels, scores, first_error, outcome, final, finish) in expected.items():
        row = rows[row_id]
        assert row["completions"] == [step.strip() for step in texts[name].split("\n\n")]
        assert row["labels"] == labels
        assert _nan_as_text(row["step_scores"]) == _nan_as_text(scores), row_id
        assert (row["first_error"], row["outcome"], row["final_answer"], row["generation_end"]) == (
            first_error, outcome, final, finish
        )
        assert row["prompt"] == (APPLES if row_id.startswith("test-00000") else FRACTIONS)
        assert row["reference_answer"] == ("5" if row_id.startswith("test-00000") else "\\frac{3}{4}")
        # A local model is named by its folder: no path of this machine reaches the rows.
        name = os.path.basename(model)
        assert row["source"] == f"model_sampled/{name}" and row["model"] == name
        assert (row["sample_index"], row["temperature"], row["top_p"]) == (int(row_id[-1]), 1.0, 1.0)


def test_exact_rows_and_no_generation_twice(tiny_chat_model_path, problems_file, server, tmp_path):
    model = str(tiny_chat_model_path)
    # Binary search: A 2 prefixes, B 3, C 2, D 2, E 1, plus one sample request per problem.
    assert_rows(build(model, problems_file, server, tmp_path), model, "binary")
    assert server.count() == 12 and server.count("chat") == 0
    sample_request = next(r for r in server.served if not r.prefix)
    assert "<|im_start|>user\nSolve the following math problem step by step" in sample_request.body["prompt"]
    assert sample_request.body["prompt"].endswith("<|im_start|>assistant\n")
    assert sample_request.body["temperature"] == 1.0 and sample_request.body["max_tokens"] == 1024

    server.reset_counts()
    assert_rows(build(model, problems_file, server, tmp_path), model, "binary")
    assert server.count() == 0  # Arrow cache hit

    # Linear search needs 14 distinct prefixes (A and B share their first step); binary search
    # already evaluated 10 of them, so only 4 are new.
    assert_rows(build(model, problems_file, server, tmp_path, mc_search="linear"), model, "linear")
    assert server.count() == 4
    assert sorted(r.prefix.split("\n\n")[-2][-12:] for r in server.served) == sorted(
        [B.split("\n\n")[3][-12:], C.split("\n\n")[2][-12:], D.split("\n\n")[0][-12:], E[0].split("\n\n")[0][-12:]]
    )

    # More rollouts: only the missing ones, 2 more for each of the 14 prefixes.
    server.reset_counts()
    more = build(model, problems_file, server, tmp_path, mc_search="linear", mc_rollouts=6)
    assert server.count() == 14 and {r.n for r in server.served} == {2}
    assert _rows(more)["test-00000/sample-1"]["step_scores"] == [1, 0, 0, 0]

    # Outcome labels reuse the samples and need no rollouts at all; the server may even be gone.
    server.reset_counts()
    outcome = _rows(build(model, problems_file, ["http://127.0.0.1:9/v1"], tmp_path, label_method="outcome"))
    assert server.count() == 0
    assert outcome["test-00000/sample-2"]["labels"] == [True, True, True]  # C's wrong step goes unseen
    assert outcome["test-00000/sample-1"]["labels"] == [False] * 4
    assert outcome["test-00000/sample-1"]["step_scores"] == []


def test_rows_do_not_depend_on_shards_or_how_many_problems_run_at_once(
    tiny_chat_model_path, problems_file, server, tmp_path, monkeypatch
):
    # One problem per shard, two problems in progress at most, one request in flight.
    monkeypatch.setattr(model_sampled, "PROBLEMS_PER_SAMPLING_SHARD", 1)
    monkeypatch.setattr(model_sampled, "MIN_PROBLEMS_IN_PROGRESS", 1)
    model = str(tiny_chat_model_path)
    assert_rows(build(model, problems_file, server, tmp_path, concurrency=1), model, "binary")
    assert server.count() == 12 and server.max_in_flight == 1

    # The first problem again, admitted after its first copy left memory: read back, not regenerated.
    repeated = tmp_path / "repeated" / "test.jsonl"
    repeated.parent.mkdir()
    repeated.write_text(problems_file.read_text() + problems_file.read_text().splitlines()[0] + "\n")
    server.reset_counts()
    rows = _rows(build(model, repeated, server, tmp_path, concurrency=1))
    assert server.count() == 0
    assert [rows[f"test-00002/sample-{i}"]["completions"] for i in range(3)] == [
        rows[f"test-00000/sample-{i}"]["completions"] for i in range(3)
    ]


def test_chat_endpoint_when_the_tokenizer_is_unavailable(problems_file, server, tmp_path):
    # A served name that is no loadable model: the chat endpoint, continuing the assistant message.
    assert_rows(build("served-model", problems_file, server, tmp_path), "served-model", "binary")
    assert server.count("chat") == 12 and server.count("completions") == 0
    rollout = next(r for r in server.served if r.prefix)
    assert rollout.body["messages"][-1] == {"role": "assistant", "content": rollout.prefix}
    assert rollout.body["continue_final_message"] is True and rollout.body["add_generation_prompt"] is False
    sample = next(r for r in server.served if not r.prefix)
    assert [m["role"] for m in sample.body["messages"]] == ["user"] and "continue_final_message" not in sample.body


def test_retries_on_429_and_5xx(tiny_chat_model_path, problems_file, server, tmp_path):
    server.fail_next(429, 500, 503, 502)
    model = str(tiny_chat_model_path)
    assert_rows(build(model, problems_file, server, tmp_path), model, "binary")
    assert server.failed == [429, 500, 503, 502] and server.count() == 12


def test_force_regenerate_replaces_every_generation(tiny_chat_model_path, problems_file, tmp_path):
    version = {"tag": ""}

    def versioned(request):
        return [text + version["tag"] if isinstance(text, str) and text.strip() else text for text in scripted(request)]

    model = str(tiny_chat_model_path)
    with StubServer(versioned) as server:
        first = _rows(build(model, problems_file, server, tmp_path))
        assert server.count() == 12
        version["tag"] = " (v2)"
        server.reset_counts()
        forced = _rows(build(model, problems_file, server, tmp_path, force_regenerate=True))
        assert server.count() == 12
        assert forced["test-00000/sample-0"]["completions"][-1] == "The answer is \\boxed{5}. (v2)"
        assert first["test-00000/sample-0"]["completions"][-1] == "The answer is \\boxed{5}."
        # The forced build is now the build of these options: served from cache, nothing generated.
        server.reset_counts()
        again = _rows(build(model, problems_file, server, tmp_path))
        assert server.count() == 0
        for rows in (again, forced):
            for row in rows.values():
                row["step_scores"] = _nan_as_text(row["step_scores"])
        assert again == forced
    (summary,) = list_caches(tmp_path / "generations")
    assert summary.epoch == 1 and summary.generations["sample"] == 6


def test_concurrency_window_and_round_robin(tiny_chat_model_path):
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8)
    with StubServer(scripted, delay=0.1) as one, StubServer(scripted, delay=0.1) as two:
        backend = OpenAIBackend(str(tiny_chat_model_path), None, sampling, concurrency=4, base_urls=[one.url, two.url])
        queue = deque(Request(APPLES, "", 2, seed, tag=seed) for seed in range(6))
        results = {}
        try:
            for request, generations in backend.generate(queue):
                results[request.tag] = generations
                if request.tag == 0:  # the caller may add work while results stream in
                    queue.extend(Request(FRACTIONS, "", 1, seed, tag=seed) for seed in range(6, 12))
        finally:
            backend.close()
        assert sorted(results) == list(range(12))
        assert [g.text for g in results[0]] == [A, B] and [g.text for g in results[11]] == [D]
        assert one.count() == 6 and two.count() == 6
        assert most_in_flight(one, two) == 4  # the window filled, and never more
        assert {r.seed for r in one.served} | {r.seed for r in two.served} == set(range(12))


def test_two_backends_run_together_on_one_loop_each_with_its_window(tiny_chat_model_path):
    # A policy's backend and a judge's, each with its own server and window, on the loop of the
    # thread that built them; opened only once their queue holds a request; the loop closes with the last.
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8)
    with StubServer(scripted, delay=0.1) as one, StubServer(scripted, delay=0.1) as two:
        first = OpenAIBackend(str(tiny_chat_model_path), None, sampling, concurrency=2, base_urls=[one.url])
        second = OpenAIBackend(str(tiny_chat_model_path), None, sampling, concurrency=3, base_urls=[two.url])
        assert first.loop is second.loop
        queues = deque(Request(APPLES, "", 1, seed, tag=seed) for seed in range(4)), deque()
        opened, results = [], []

        def opener(backend):
            return lambda: opened.append(backend) or backend

        for request, _ in OpenAIBackend.generate_together([(opener(first), queues[0]), (opener(second), queues[1])]):
            results.append(request.tag)
            if request.tag == 0:  # the second lane's work arrives once the first is running
                queues[1].extend(Request(FRACTIONS, "", 1, seed, tag=seed) for seed in range(4, 10))
        assert sorted(results) == list(range(10)) and opened == [first, second]
        assert (one.count(), two.count(), one.max_in_flight, two.max_in_flight) == (4, 6, 2, 3)
        assert most_in_flight(one, two) == 5  # both windows full at once
        first.close()
        assert not second.loop.is_closed()  # still the second's
        second.close()
        assert second.loop.is_closed()

    # Backends built in two threads have two loops: they cannot run together.
    built = []
    thread = threading.Thread(
        target=lambda: built.append(OpenAIBackend(str(tiny_chat_model_path), None, sampling, base_urls=[one.url]))
    )
    thread.start()
    thread.join()
    here = OpenAIBackend(str(tiny_chat_model_path), None, sampling, base_urls=[one.url])
    lanes = [(lambda: here, deque([Request(APPLES, "", 1, 0)])), (lambda: built[0], deque([Request(APPLES, "", 1, 1)]))]
    with pytest.raises(RuntimeError, match="built in different threads"):
        list(OpenAIBackend.generate_together(lanes))
    here.close()
    built[0].close()


def test_unreachable_failing_or_wrong_server_fails_clearly(tiny_chat_model_path):
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8)
    url = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
    backend = OpenAIBackend(str(tiny_chat_model_path), None, sampling, base_urls=[url], max_retries=1)
    with pytest.raises(ConnectionError, match=r"cannot reach the OpenAI-compatible server at http://127.0.0.1:9/v1"):
        list(backend.generate(deque([Request(APPLES, "", 1, 0)])))
    backend.close()
    with StubServer(scripted) as server:
        server.fail_next(503, 503)
        backend = OpenAIBackend(str(tiny_chat_model_path), None, sampling, base_urls=[server.url], max_retries=1)
        with pytest.raises(ConnectionError, match=r"still answered HTTP 503 after 1 retries"):
            list(backend.generate(deque([Request(APPLES, "", 1, 0)])))
        backend.close()
        assert server.failed == [503, 503]
    with StubServer(scripted) as healthy:
        # One server down: what the healthy one answers still comes out before the error.
        backend = OpenAIBackend(str(tiny_chat_model_path), None, sampling, base_urls=[url, healthy.url], max_retries=0)
        results = []
        with pytest.raises(ConnectionError, match="127.0.0.1:9"):
            for request, _ in backend.generate(deque(Request(APPLES, "", 1, seed, tag=seed) for seed in range(4))):
                results.append(request.tag)
        backend.close()
        assert sorted(results) == [1, 3] and healthy.count() == 2
    with StubServer(scripted, model="Qwen/Qwen3-8B") as server:
        backend = OpenAIBackend(str(tiny_chat_model_path), None, sampling, base_urls=[server.url], max_retries=1)
        with pytest.raises(ValueError, match=r"refused a request for model '.*tiny.*': .*does not exist"):
            list(backend.generate(deque([Request(APPLES, "", 1, 0)])))
        backend.close()


def test_cache_command_lists_and_clears(tiny_chat_model_path, problems_file, server, tmp_path, capsys):
    build(str(tiny_chat_model_path), problems_file, server, tmp_path)
    root = str(tmp_path / "generations")
    assert cli.main(["cache", "list", "--generation-cache-dir", root]) == 0
    listing = capsys.readouterr().out
    (summary,) = list_caches(root)
    assert f"1 generation cache(s) in {root}" in listing and summary.name in listing
    assert f"model: {tiny_chat_model_path}" in listing
    assert "done: 2 problems, 6 samples, 40 rollouts" in listing  # 10 prefixes x 4 rollouts

    assert cli.main(["cache", "clear", "--generation-cache-dir", root]) == 1  # all, without --yes
    assert "without --yes" in capsys.readouterr().err
    assert cli.main(["cache", "clear", summary.name[:12], "--generation-cache-dir", root]) == 0
    assert list_caches(root) == []


# -- kill -9 and resume ----------------------------------------------------------------------------

GSM8K_PROBLEMS = 8


def _gsm8k_world(gsm8k_dir):
    with open(gsm8k_dir / "test.jsonl", encoding="utf-8") as file:
        rows = [json.loads(next(file)) for _ in range(GSM8K_PROBLEMS)]
    answers = {row["question"]: row["answer"].rsplit("####", 1)[1].strip() for row in rows}

    def responder(request: ScriptedRequest) -> list:
        answer = next(a for q, a in answers.items() if q in request.user)
        if not request.prefix:
            # Four steps, a wrong one somewhere (or none) chosen by the request's seed: the same
            # request always gets the same text, as from a seeded server.
            texts = []
            for choice in range(request.n):
                bad = (request.seed + choice) % 5
                steps = [f"Step {i} {'[ERR]' if i == bad else 'ok'} of seed {request.seed}." for i in range(3)]
                texts.append("\n\n".join([*steps, f"\\boxed{{{answer}}}"]))
            return texts
        good = "[ERR]" not in request.prefix
        return [f"So \\boxed{{{answer if good else -1}}}." for _ in range(request.n)]

    return responder


def _cache_lines(root) -> list[bytes]:
    lines = []
    for segment in sorted(root.glob("*/segments/*.jsonl")):
        lines += [line for line in segment.read_bytes().split(b"\n")[:-1]]
    return lines


def kill_9_build(options: dict, cache_root, env: dict, cached_enough, waiting_for: str) -> int:
    """Start a model_sampled build in a child process, kill -9 it as soon as `cached_enough(cache lines)` holds,
    and return how many cache lines it had written."""
    script = (
        "import json, sys, prm_builder; from datasets import load_dataset; "
        "load_dataset('prm_builder', 'model_sampled', **json.loads(sys.argv[1]))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps({**options, "generation_cache_dir": str(cache_root)})],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not cached_enough(_cache_lines(cache_root)):
            assert child.poll() is None, "the build finished before it could be killed"
            assert time.monotonic() < deadline, f"the build wrote no {waiting_for}"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return len(_cache_lines(cache_root))


def cached_indices(cache_root) -> list[tuple[str, int]]:
    """(group, index) of every generation in the cache, once per time it was written."""
    records = [json.loads(line) for line in _cache_lines(cache_root) if line.endswith(b"}")]
    return [(r["k"], r["i"] + offset) for r in records for offset in range(len(r["g"]))]


@pytest.mark.slow  # kill -9 of a real build process
def test_resume_after_kill_9_loses_and_duplicates_nothing(gsm8k_dir, tiny_chat_model_path, tmp_path, isolated_hf_cache):
    options = {
        "model": str(tiny_chat_model_path),
        "backend": "openai",
        "problems": str(gsm8k_dir / "test.jsonl"),
        "max_problems": GSM8K_PROBLEMS,
        "num_samples_per_problem": 2,
        "mc_rollouts": 4,
        "mc_search": "linear",
        "mc_early_stop": True,  # waves of 1, 1, 1, 1: a kill can fall between the waves of a prefix
        "concurrency": 2,
    }
    with StubServer(_gsm8k_world(gsm8k_dir), delay=0.05) as server:
        options["base_url"] = server.url
        killed_root = tmp_path / "killed"
        env = {**os.environ, "HF_DATASETS_CACHE": str(isolated_hf_cache), "HF_HOME": str(tmp_path / "hf_home")}
        done_at_kill = kill_9_build(options, killed_root, env, lambda lines: len(lines) >= 12, "generations")
        assert done_at_kill >= 12

        server.wait_idle()  # the killed build's last requests end unanswered; count none of them
        server.reset_counts()
        resumed = load_dataset("prm_builder", "model_sampled", **options, generation_cache_dir=str(killed_root))["test"]
        resumed_requests = server.count()

        server.reset_counts()
        clean = load_dataset(
            "prm_builder", "model_sampled", **options,
            generation_cache_dir=str(tmp_path / "clean"), cache_dir=str(tmp_path / "clean_arrow"),
        )["test"]  # fmt: skip
        all_requests = server.count()

    assert resumed.to_list() == clean.to_list()
    assert len(clean) == 2 * GSM8K_PROBLEMS
    # Nothing lost: every generation finished before the kill was reused, and only the rest was
    # asked for. Nothing duplicated: each (group, index) is in the cache once.
    assert resumed_requests == all_requests - done_at_kill
    indices = cached_indices(killed_root)
    assert len(indices) == len(set(indices))
    assert len([line for line in _cache_lines(killed_root) if line.endswith(b"}")]) == all_requests
