"""model_sampled against a misbehaving OpenAI-compatible server (a real HTTP server on 127.0.0.1):
no bad answer ever becomes a cache record or a row, a fixed server then gives a clean run's rows,
reasoning models' thinking is switched off, stripped or counted as a drop, and a hung server is
reported while the build waits."""

import json
import logging
import threading
from collections import deque

import pytest
from datasets import load_dataset

import prm_builder  # noqa: F401 - registers the builder
from prm_builder import cli
from prm_builder.backends import Request, Sampling, without_thinking
from prm_builder.backends.openai import BadAnswerError, OpenAIBackend, parse_answer
from prm_builder.generation_cache import list_caches

from tests.openai_stub_server import Raw, StubServer
from tests.test_backends_openai import APPLES, _nan_as_text, assert_rows, build, problems_file, scripted  # noqa: F401 - fixture

SAMPLING = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8)
HTML = "<html><head><title>502 Bad Gateway</title></head><body>" + "nginx " * 100 + "</body></html>"
# What a broken server answers, and what the error must quote of it.
BAD_ANSWERS = {
    "null text": ([None], "expected a string text, got None"),
    "number": ([12345], "expected a string text, got 12345"),
    "lone surrogate": (["ok \ud800"], "expected UTF-8 text, got the lone surrogate \\ud800 at character 3"),
    "unknown finish": ([("fine", "content_filter")], "expected finish_reason stop or length, got 'content_filter'"),
    "too few choices": ([], "expected 1 choices, got 0"),
    "HTML": (Raw(HTML), "expected a JSON body, got '<html><head><title>502 Bad Gateway"),
    "empty body": (Raw(""), "expected a JSON body, got an empty answer"),
    "not OpenAI": (Raw('{"error": "overloaded"}', "application/json"), "with a list of choices, got '{\"error\": \"overloaded\"}'"),
}


@pytest.mark.parametrize("kind", BAD_ANSWERS)
def test_a_bad_answer_is_retried_then_fails_with_one_line(tiny_chat_model_path, kind):
    answer, quoted = BAD_ANSWERS[kind]
    with StubServer(lambda request: answer) as server:
        url = server.url.replace("http://", "http://user:pAsSw0rd@")
        backend = OpenAIBackend(str(tiny_chat_model_path), None, SAMPLING, base_urls=[url], max_retries=1)
        with pytest.raises(BadAnswerError) as caught:
            list(backend.generate(deque([Request(APPLES, "", 1, 0)])))
        backend.close()
        assert server.count() == 2  # retried once, like a 5xx
    message = str(caught.value)
    assert "\n" not in message and "pAsSw0rd" not in message
    assert f"the server at {server.url.replace('http://', 'http://***@')} gave no usable answer" in message
    assert f"model {str(tiny_chat_model_path)!r}" in message and quoted in message
    assert len(message) < 600  # the first 200 characters of what came back, not all of it


def test_parse_answer_reads_reasoning_when_content_is_empty():
    def chat(message, finish="stop"):
        return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": finish}]})

    assert parse_answer(chat({"content": "Step 1"}), "chat", 1)[0].text == "Step 1"
    cut = parse_answer(chat({"content": None, "reasoning_content": "Hmm, 2 + 3"}, "length"), "chat", 1)[0]
    assert (cut.text, cut.finish_reason) == ("<think>Hmm, 2 + 3", "length")
    assert without_thinking(cut.text) is None  # thinking never ended: a drop, not a row
    closed = parse_answer(chat({"content": "", "reasoning": "Hmm"}), "chat", 1)[0]
    assert closed.text == "<think>Hmm</think>" and without_thinking(closed.text) == ""
    assert parse_answer(chat({"content": "x"}, "eos_token"), "chat", 1)[0].finish_reason == "stop"  # TGI
    with pytest.raises(BadAnswerError, match="expected a string message content, got None"):
        parse_answer(chat({"content": None}), "chat", 1)


def test_without_thinking_strips_thinking():
    assert without_thinking("<think>a\n\nb</think>\n\nStep 1\n\nStep 2") == "\n\nStep 1\n\nStep 2"
    assert without_thinking("a<think>x</think>b<think>y</think>c") == "abc"
    assert without_thinking("thinking opened by the prompt</think>Step 1") == "Step 1"
    assert without_thinking("Step 1 <think>cut off") is None
    assert without_thinking("no thinking at all") == "no thinking at all"


def test_bad_answers_never_reach_the_cache_and_a_fixed_server_gives_a_clean_run(tiny_chat_model_path, problems_file, tmp_path, capsys):  # noqa: F811
    model = str(tiny_chat_model_path)
    broken = {"on": True}

    def flaky(request):
        if not broken["on"]:
            return scripted(request)
        if request.prefix:  # rollouts: an HTML error page with status 200
            return Raw(HTML)
        return [None] * request.n  # samples: null text

    with StubServer(flaky) as server:
        generations = str(tmp_path / "generations")
        argv = ["build", "model_sampled", "--model", model, "--backend", "openai", "--base-url", server.url,
                "--problems", str(problems_file), "--num-samples-per-problem", "3", "--max-retries", "1",
                "--generation-cache-dir", generations, "--output-dir", str(tmp_path / "out")]  # fmt: skip
        assert cli.main(argv) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
        # In CLI words (failures.cli_wording): the option is named as its flag.
        assert line.startswith(f"prm-builder: error: the server at {server.url} gave no usable answer for --model {model!r}")
        assert "expected a string text, got None" in line
        # Nothing invalid was written: no cache record at all.
        assert [summary.generations for summary in list_caches(tmp_path / "generations")] in ([], [{}])

        # Samples fixed, rollouts still broken: the samples are cached, no rollout is.
        broken["on"] = False
        server.responder = lambda request: Raw(HTML) if request.prefix else scripted(request)
        with pytest.raises(Exception):
            build(model, problems_file, server, tmp_path, max_retries=0)
        (summary,) = list_caches(tmp_path / "generations")
        assert summary.generations == {"sample": 6} and summary.damage is None

        server.responder = scripted
        server.reset_counts()
        assert_rows(build(model, problems_file, server, tmp_path), model, "binary")
        assert server.count() == 10  # the rollouts only: 12 requests of a clean run less the 2 sample requests


def test_chat_endpoint_switches_thinking_off_and_drops_answers_cut_while_thinking(problems_file, tmp_path):  # noqa: F811
    def thinking(request):
        answers = scripted(request)
        if not request.prefix and APPLES in request.user:
            # The second solution ran out of tokens while thinking; the first thought, then answered.
            answers[0] = {"content": answers[0], "reasoning_content": "Let me think."}
            answers[1] = {"content": None, "reasoning_content": "Let me think about 2 + 3 for a long", "finish_reason": "length"}
        return answers

    with StubServer(thinking) as server:
        rows = build("served-model", problems_file, server, tmp_path)
        assert all(r.body["chat_template_kwargs"] == {"enable_thinking": False} for r in server.served)
    ids = [row["id"] for row in rows]
    assert "test-00000/sample-1" not in ids and "test-00000/sample-0" in ids
    drops = prm_builder.load_drops(rows.cache_files[0]["filename"].rsplit("/", 1)[0])
    assert drops["test"] == {"truncated_while_thinking": 1, "empty_solution": 1}


def test_a_slow_request_is_reported_while_waiting(tiny_chat_model_path, monkeypatch, caplog):
    from prm_builder.backends import openai as openai_backend

    monkeypatch.setattr(openai_backend, "WAIT_NOTICE_S", 0.1)
    with StubServer(scripted, delay=0.35) as server:
        backend = OpenAIBackend(str(tiny_chat_model_path), None, SAMPLING, base_urls=[server.url], timeout=30)
        with caplog.at_level(logging.WARNING, logger=openai_backend.logger.name):
            results = list(backend.generate(deque([Request(APPLES, "", 1, 0)])))
        backend.close()
    assert len(results) == 1
    waits = [r.getMessage() for r in caplog.records if "waiting for 1 request(s)" in r.getMessage()]
    assert waits and f"to {server.url}, the oldest sent 0 s ago" in waits[0]
    assert "request_timeout=30 s and max_retries=3" in waits[0]


def test_a_hung_server_times_out_with_one_line(tiny_chat_model_path):
    release = threading.Event()

    def hung(request):
        release.wait(5)
        return scripted(request)

    with StubServer(hung) as server:
        backend = OpenAIBackend(str(tiny_chat_model_path), None, SAMPLING, base_urls=[server.url], timeout=0.2, max_retries=0)
        with pytest.raises(ConnectionError, match=r"did not answer within request_timeout=0.2 s \(tried 1 times\)"):
            list(backend.generate(deque([Request(APPLES, "", 1, 0)])))
        backend.close()
        release.set()


def test_two_concurrent_builds_sharing_a_cache_generate_everything_once(tiny_chat_model_path, problems_file, tmp_path):  # noqa: F811
    model = str(tiny_chat_model_path)
    with StubServer(scripted, delay=0.05) as server:
        clean = comparable(build(model, problems_file, server, tmp_path / "clean"))
        one_build = server.count()
        server.reset_counts()
        results, errors = {}, []

        def run(name):
            try:
                # Their own Arrow caches, one generation cache.
                results[name] = comparable(build(model, problems_file, server, tmp_path, cache_dir=str(tmp_path / name)))
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(name,)) for name in ("first", "second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    assert server.count() == one_build == 12
    assert results["first"] == clean and results["second"] == clean
    # And the rows can be rebuilt from the cache alone: a third build generates nothing.
    server_gone = ["http://127.0.0.1:9/v1"]
    assert comparable(build(model, problems_file, server_gone, tmp_path, cache_dir=str(tmp_path / "third"))) == clean


def comparable(dataset) -> list[dict]:
    return [{**row, "step_scores": _nan_as_text(row["step_scores"])} for row in dataset]


def test_a_shard_another_build_holds_is_waited_for_and_said_so(tmp_path, monkeypatch, caplog):
    from filelock import FileLock, Timeout

    from prm_builder import scheduler
    from prm_builder.generation_cache import GenerationCache
    from prm_builder.problems import make_problem

    monkeypatch.setattr(scheduler, "LOCK_NOTICE_S", 0.1)
    cache = GenerationCache(tmp_path, {"model": "m"})
    shard = [make_problem("p", "What is 2 + 3?", "5")]
    other_build = FileLock(cache.shard_lock(shard[0].key).lock_file, thread_local=False)  # released by a timer thread
    other_build.acquire()
    with scheduler.ShardLocks(cache, [shard]) as locks, caplog.at_level(logging.WARNING, logger=scheduler.logger.name):
        assert not locks.take(0, wait=False)  # work in progress: do not wait, finish it first
        threading.Timer(0.3, other_build.release).start()
        assert locks.take(0, wait=True)
        with pytest.raises(Timeout):  # now this build holds it
            other_build.acquire(timeout=0)
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for another build")]
    assert waits and f"generation cache {cache.path} (" in waits[0] and waits[0].endswith(f"{shard[0].key}.lock)")
    other_build.acquire(timeout=0)  # released when the build's locks closed
    other_build.release()


def test_any_backend_answer_is_checked_before_it_is_cached(tmp_path):
    from prm_builder.backends import Generation, invalid_generations
    from prm_builder.generation_cache import GenerationCache
    from prm_builder.problems import problem_key
    from prm_builder.scheduler import Progress, Scheduler, Want

    assert invalid_generations([Generation("a", "stop")], 1) is None
    assert invalid_generations([Generation("a", "abort")], 1) == "finish reason 'abort', expected one of ('stop', 'length')"
    assert invalid_generations([Generation(None, "stop")], 1).startswith("a generation without text")
    assert invalid_generations([], 2) == "0 generations, expected n=2"

    class AbortingBackend:  # e.g. vLLM reporting an aborted request
        def generate(self, queue):
            while queue:
                request = queue.popleft()
                yield request, [Generation("partial", "abort")] * request.n

    cache = GenerationCache(tmp_path, {"model": "m"})
    key = problem_key("What is 2 + 3?")

    def task():
        yield [Want(key, f"sample:{key}", 2, "What is 2 + 3?", "")]

    with cache.writer() as writer, Progress("test", 1) as progress:
        scheduler = Scheduler(writer, AbortingBackend, progress, seed=0)
        scheduler.start(task(), "tag")
        with pytest.raises(RuntimeError, match=r"the backend returned finish reason 'abort'.*; nothing was cached"):
            list(scheduler.pump())
    assert not cache.path.exists()
