"""model_sampled's judge and consensus labels against two real HTTP servers on 127.0.0.1, a policy
(the tiny chat model's name, on the completions endpoint) and a judge (a served name, on the chat
endpoint, answering with reasoning_content like a reasoning model): exact rows and drops,
verdicts cached like generations (rebuilds ask nothing, other judge options ask again), server
faults, two builds sharing a cache, and resuming after kill -9."""

import json
import math
import os
import threading

import pytest
from datasets import DatasetDict, load_dataset

import prm_builder  # noqa: F401 - registers the builder
from prm_builder.configs import model_sampled
from prm_builder.sampling.generation_cache import describe_cache, list_caches
from prm_builder.publishing.stats import summarize_splits

from tests.openai_stub_server import ScriptedRequest, StubServer, busy_seconds, most_in_flight
from tests.test_backends_openai import GSM8K_PROBLEMS, _gsm8k_world, cached_indices, kill_9_build

JUDGE = "judge-model"  # no tokenizer under this name: the chat endpoint, as for a served reasoning model

# Five problems of two solutions each. [ERR] marks a wrong step (every rollout from a prefix with
# it fails), [HALF] a step from which half the rollouts succeed (still a good step for Monte Carlo).
PROBLEMS = [
    ("Ann has 2 apples and buys 3 more. How many apples does she have?", "5"),
    ("Tom has 4 pens and loses 1. How many pens are left?", "3"),
    ("What is $\\frac{1}{2} + \\frac{1}{4}$?", "\\frac{3}{4}"),
    ("What is 6 times 7?", "42"),
    ("What is 10 minus 4?", "6"),
]
WRONG = {"5": "7", "3": "9", "\\frac{3}{4}": "1", "42": "41", "6": "60"}
SOLUTIONS = [
    ["Ann starts with 2 apples.\n\nShe buys 3 more, so 2 + 3 = 5.\n\nThe answer is \\boxed{5}.",
     "Ann starts with 2 apples.\n\nShe buys 3 more, so 2 + 3 = 6. [ERR]\n\nSo she has 6 apples.\n\nThe answer is \\boxed{6}."],
    ["Tom starts with 4 minus 2 pens [ERR].\n\nNo, 4 - 1 = 3.\n\n\\boxed{3}",
     "Tom starts with 4 pens.\n\nHe loses 1, so 4 - 1 = 2 [ERR].\n\nThat makes \\boxed{2}."],
    ["Write both over 4 [HALF].\n\n\\frac{2}{4} + \\frac{1}{4} = \\frac{3}{4}.\n\n\\boxed{\\frac{3}{4}}",
     "Write \\frac{1}{2} as \\frac{2}{4}.\n\nAdd: \\frac{3}{4}.\n\n\\boxed{\\frac{3}{4}}"],
    ["6 times 7 is 42.\n\n\\boxed{42}", "Six sevens make 42.\n\n\\boxed{42}"],
    ["10 minus 4 is 5 [ERR].\n\nSo \\boxed{5}.", "10 minus 4 is 6.\n\nSo \\boxed{6}."],
]  # fmt: skip
CUT = {"content": None, "reasoning_content": "Let me check step 0 very carefully, and then", "finish_reason": "length"}
# What the judge answers about each solution, verdict after verdict (the last one repeats).
VERDICTS = {
    "so 2 + 3 = 5.": ["\\boxed{-1}", {"content": "All steps hold: \\boxed{-1}", "reasoning_content": "Step 0, maybe \\boxed{0}? No."}],
    "2 + 3 = 6. [ERR]": ["<think>Step 0 is fine: \\boxed{0}?</think>The first error is step 1: \\boxed{1}", "\\boxed{1}"],
    "4 minus 2 pens": ["\\boxed{-1}"],  # judge: all right; Monte Carlo: step 0
    "4 - 1 = 2 [ERR]": ["\\boxed{0}"],  # judge earlier than Monte Carlo (1)
    "[HALF]": ["I am not sure.", "\\boxed{2}"],  # unparsable, sampled again; MC: all right
    "Add: \\frac{3}{4}": ["\\boxed{0}", "\\boxed{1}"],  # a tie
    "6 times 7 is 42": ["\\boxed{7}", "\\boxed{-3}"],  # out of range, then again: unparsable
    "Six sevens": [CUT, "\\boxed{-1}"],  # cut off while thinking
    "is 5 [ERR]": ["\\boxed{1}"],  # judge later than Monte Carlo (0)
    "10 minus 4 is 6": ["\\boxed{-1}"],
}


def policy(request: ScriptedRequest) -> list:
    number = next(i for i, (text, _) in enumerate(PROBLEMS) if text in request.user)
    reference = PROBLEMS[number][1]
    if not request.prefix:
        return SOLUTIONS[number][: request.n]
    answers = []
    for choice in range(request.n):
        good = "[ERR]" not in request.prefix and ("[HALF]" not in request.prefix or choice % 2 == 0)
        answers.append(f"So the answer is \\boxed{{{reference if good else WRONG[reference]}}}.")
    return answers


class ScriptedJudge:
    """Answers each solution's verdict requests from VERDICTS in order; can answer null content once."""

    def __init__(self):
        self.served = {marker: 0 for marker in VERDICTS}
        self.null_next = 0
        self.lock = threading.Lock()

    def __call__(self, request: ScriptedRequest) -> list:
        with self.lock:
            if self.null_next:
                self.null_next -= 1
                return [{"content": None}] * request.n
            marker = next(m for m in VERDICTS if m in request.user)
            script, first = VERDICTS[marker], self.served[marker]
            self.served[marker] += request.n
        return [script[min(index, len(script) - 1)] for index in range(first, first + request.n)]


@pytest.fixture
def problems_file(tmp_path):
    path = tmp_path / "problems" / "test.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"problem": text, "answer": answer}) + "\n" for text, answer in PROBLEMS))
    return path


def build(model, problems_file, policy_server, judge_url, tmp_path, **options):
    options = {
        "model": str(model),
        "backend": "openai",
        "base_url": policy_server.url,
        "problems": str(problems_file),
        "num_samples_per_problem": 2,
        "mc_rollouts": 2,
        "label_method": "consensus",
        "judge_model": JUDGE,
        "judge_base_url": judge_url,
        "judge_samples": 2,
        "judge_max_new_tokens": 512,
        "judge_temperature": 0.7,
        "max_retries": 1,
        "generation_cache_dir": str(tmp_path / "generations"),
        "concurrency": 4,
        **options,
    }
    return load_dataset("prm_builder", "model_sampled", **options)["test"]


def drops_of(dataset) -> dict:
    return dict(prm_builder.load_drops(os.path.dirname(dataset.cache_files[0]["filename"]))["test"])


def summary(dataset) -> dict:
    """id -> (labels, first_error, judge_first_error, mc_first_error)."""
    return {
        row["id"]: (row["labels"], row["first_error"], row["judge_first_error"], row["mc_first_error"])
        for row in dataset
    }


T, F = True, False
CONSENSUS_ROWS = {
    "test-00000/sample-0": ([T, T, T], -1, -1, -1),
    "test-00000/sample-1": ([T, F, F, F], 1, 1, 1),
    "test-00004/sample-1": ([T, T], -1, -1, -1),
}
CONSENSUS_DROPS = {
    "disagree_judge_all_right": 1, "disagree_judge_earlier": 1, "disagree_judge_later": 1, "disagree_mc_all_right": 1,
    "judge_tie": 1, "judge_unparsable": 1, "judge_truncated_while_thinking": 1,
}  # fmt: skip
JUDGE_ROWS = {
    "test-00000/sample-0": ([T, T, T], -1, -1, -2),
    "test-00000/sample-1": ([T, F, F, F], 1, 1, -2),
    "test-00001/sample-0": ([T, T, T], -1, -1, -2),  # Monte Carlo would have said step 0
    "test-00001/sample-1": ([F, F, F], 0, 0, -2),
    "test-00002/sample-0": ([T, T, F], 2, 2, -2),
    "test-00004/sample-0": ([T, F], 1, 1, -2),
    "test-00004/sample-1": ([T, T], -1, -1, -2),
}
JUDGE_DROPS = {"judge_tie": 1, "judge_unparsable": 1, "judge_truncated_while_thinking": 1}
# Verdict requests: one per solution of n=2, one more of n=1 for [HALF]'s retried verdict.
JUDGE_REQUESTS = 11


def test_consensus_and_judge_rows_drops_and_cached_verdicts(tiny_chat_model_path, problems_file, tmp_path):
    judge = ScriptedJudge()
    judge.null_next = 1  # the server's first answer has null content: retried, like a 5xx
    with StubServer(policy) as policy_server, StubServer(judge, model=JUDGE) as judge_server:
        rows = build(tiny_chat_model_path, problems_file, policy_server, judge_server.url, tmp_path)
        assert summary(rows) == CONSENSUS_ROWS
        assert drops_of(rows) == CONSENSUS_DROPS
        assert judge_server.count() == JUDGE_REQUESTS + 1 and judge_server.count("completions") == 0
        kept = rows[1]
        assert kept["judge_model"] == JUDGE and kept["source"] == f"model_sampled/{tiny_chat_model_path.name}"
        assert [round(s, 2) if not math.isnan(s) else "nan" for s in kept["step_scores"]] == [1.0, 0.0, 0.0, "nan"]
        assert kept["step_rollouts"] == [1, 2, 2, 0]  # Monte Carlo's early stop, as for label_method="mc"
        assert rows.features["judge_first_error"].dtype == "int32" and rows.features["mc_first_error"].dtype == "int32"
        agreement = summarize_splits(DatasetDict({"test": rows}), {"test": drops_of(rows)})["test"]["agreement"]
        assert (agreement["judge_labelled"], agreement["both_labelled"], agreement["agreed"]) == (7, 7, 3)

        # The judge's requests: thinking left on, the steps tagged, the judge's own sampling.
        verdict_request = next(r for r in judge_server.served if "2 + 3 = 6. [ERR]" in r.user)
        assert "chat_template_kwargs" not in verdict_request.body
        assert verdict_request.body["max_tokens"] == 512 and verdict_request.body["temperature"] == 0.7
        assert "<step_1>\nShe buys 3 more, so 2 + 3 = 6. [ERR]\n</step_1>" in verdict_request.user
        # Monte Carlo ran only on the solutions the judge labelled: none from a dropped one.
        rollouts = [r.prefix for r in policy_server.served if r.prefix]
        assert rollouts and not any(marker in prefix for prefix in rollouts for marker in ("Add:", "6 times", "Six sevens"))
        policy_requests = policy_server.count()

        # Judge labels from the same cache: every sample and verdict is there, nothing is asked.
        policy_server.reset_counts()
        judge_server.reset_counts()
        judged = build(tiny_chat_model_path, problems_file, policy_server, judge_server.url, tmp_path, label_method="judge")
        assert summary(judged) == JUDGE_ROWS and drops_of(judged) == JUDGE_DROPS
        assert policy_server.count() == 0 and judge_server.count() == 0
        assert judged.features == model_sampled.JUDGE_FEATURES

        # A rebuild into a new Arrow cache with every generation and verdict cached: no request at all.
        again = build(tiny_chat_model_path, problems_file, policy_server, judge_server.url, tmp_path,
                      cache_dir=str(tmp_path / "arrow2"))  # fmt: skip
        assert summary(again) == CONSENSUS_ROWS and policy_server.count() == 0 and judge_server.count() == 0

        # Another prompt, sample count or seed never reuses a verdict.
        for changed in ({"judge_prompt_template": "Check.\n{problem}\n{steps}\nAnswer \\boxed{i}."}, {"judge_samples": 1}):
            judge_server.reset_counts()
            build(tiny_chat_model_path, problems_file, policy_server, judge_server.url, tmp_path,
                  label_method="judge", **changed)  # fmt: skip
            assert judge_server.count() >= 10, changed  # every solution judged again
        assert policy_server.count() == 0
    (cache,) = list_caches(tmp_path / "generations")
    assert cache.generations["sample"] == 10 and cache.generations["verdict"] > 0
    assert "10 samples, 21 rollouts, " in describe_cache(cache) and " verdicts" in describe_cache(cache)
    # 5 sample requests; binary search over the 7 solutions the judge labelled evaluates 14 prefixes
    # (S0 2, S1 3, S2 2, S3 2, T0 2, U0 2, U1 1), with early stop in waves of 1 and 1 rollout: one
    # request for each of the 7 that succeed at once, two for each of the 7 that fail.
    assert policy_requests == 5 + 7 + 2 * 7


def test_one_server_serving_policy_and_judge(tiny_chat_model_path, problems_file, tmp_path):
    # judge_base_url left out: the judge is asked at base_url, under its own model name.
    judge = ScriptedJudge()
    with StubServer(lambda request: judge(request) if request.body["model"] == JUDGE else policy(request)) as server:
        rows = build(tiny_chat_model_path, problems_file, server, None, tmp_path)
        models = {r.body["model"] for r in server.served}
    assert summary(rows) == CONSENSUS_ROWS and drops_of(rows) == CONSENSUS_DROPS
    assert models == {JUDGE, str(tiny_chat_model_path)}


def test_outcome_and_mc_rows_have_no_judge_columns_and_judge_options_need_a_judge_method(tmp_path):
    assert "judge_first_error" not in model_sampled.FEATURES
    with pytest.raises(ValueError, match=r"label_method='judge' needs judge_model"):
        model_sampled.ModelSampledConfig(name="model_sampled", label_method="judge", problems="sample")
    with pytest.raises(ValueError, match=r"judge_model is only used with label_method='judge' or 'consensus', got label_method='mc'"):
        model_sampled.ModelSampledConfig(name="model_sampled", judge_model="m", problems="sample")
    for option, value in {"judge_samples": 3, "judge_temperature": 0.1, "judge_max_new_tokens": 64,
                          "judge_prompt_template": "{problem}\n{steps}\nAnswer \\boxed{{i}}."}.items():
        with pytest.raises(ValueError, match=rf"{option} is only used with label_method='judge' or 'consensus'"):
            model_sampled.ModelSampledConfig(name="model_sampled", label_method="outcome", problems="sample", **{option: value})
    with pytest.raises(ValueError, match=r"judge_backend='openai' needs judge_base_url \(or base_url\)"):
        model_sampled.ModelSampledConfig(name="model_sampled", label_method="judge", judge_model="m", judge_backend="openai", problems="sample")
    with pytest.raises(ValueError, match=r"judge_base_url must be http\(s\) URLs"):
        model_sampled.ModelSampledConfig(name="model_sampled", label_method="judge", judge_model="m", judge_backend="openai",
                                         judge_base_url="localhost:8001", problems="sample")  # fmt: skip
    config = model_sampled.ModelSampledConfig(
        name="model_sampled", label_method="consensus", judge_model="m", backend="openai", base_url="http://h:8000", problems="sample"
    )
    assert (config.judge_backend, config.judge_base_url) == ("openai", ["http://h:8000/v1"])  # the policy's by default

    # max_retries decides which judged rows are kept (unparsable verdicts sampled again): part of
    # the Arrow cache key there, and only there.
    def config_id(**options):
        options = {"problems": "sample", "generation_cache_dir": str(tmp_path / "g"), **options}
        return model_sampled.ModelSampledConfig(name="model_sampled", **options).create_config_id({})

    judged = {"label_method": "judge", "judge_model": "m"}
    assert config_id(**judged, max_retries=1) != config_id(**judged) == config_id(**judged, max_retries=3)
    assert config_id(max_retries=1) == config_id()

    # The schema: a judge's three columns, and early stop's step_rollouts where Monte Carlo ran with it.
    def columns(**options):
        config = model_sampled.ModelSampledConfig(name="model_sampled", problems="sample", **options)
        return [name for name in model_sampled.features(config) if name not in model_sampled.FEATURES]

    judge_columns = ["judge_first_error", "mc_first_error", "judge_model"]
    assert columns(**judged) == judge_columns
    assert columns(label_method="consensus", judge_model="m") == ["step_rollouts", *judge_columns]
    assert columns(label_method="consensus", judge_model="m", mc_early_stop=False) == judge_columns
    assert columns() == ["step_rollouts"] and columns(label_method="outcome") == []

    # The plan line before the first request says what the judge will be asked.
    config = model_sampled.ModelSampledConfig(name="model_sampled", problems="sample", label_method="judge",
                                              judge_model=str(tmp_path / "my-judge"), judge_samples=3)  # fmt: skip
    assert model_sampled.plan(config, "test", 2) == (
        "model_sampled test: 2 problems x 8 samples = 16 solutions: 2 sample requests at most; the judge (my-judge): "
        "one request of 3 verdict(s) per solution, one more per unparsable verdict; label_method='judge' makes no rollouts"
    )


def test_a_judge_answering_null_content_stops_the_build_and_caches_no_verdict(tiny_chat_model_path, problems_file, tmp_path):
    judge = ScriptedJudge()
    judge.null_next = 10**6
    with StubServer(policy) as policy_server, StubServer(judge, model=JUDGE) as judge_server:
        with pytest.raises(Exception) as caught:  # datasets wraps it: the backend's error is the cause
            build(tiny_chat_model_path, problems_file, policy_server, judge_server.url, tmp_path)
    cause = str(caught.value.__cause__)
    assert "gave no usable answer for model 'judge-model' (tried 2 times)" in cause
    assert "expected a string message content, got None" in cause
    (cache,) = list_caches(tmp_path / "generations")
    assert cache.generations["verdict"] == 0 and cache.damage is None


def _judge_world(gsm8k_dir):
    """A stateless judge: the index of the step marked [ERR] (or -1), but unparsable for some seeds."""

    def responder(request: ScriptedRequest) -> list:
        steps = request.user.split("[Solution]\n", 1)[1].split("</step_")
        wrong = next((i for i, step in enumerate(steps) if "[ERR]" in step), -1)
        return [("I cannot tell." if (request.seed + choice) % 4 == 0 else f"\\boxed{{{wrong}}}") for choice in range(request.n)]

    return responder


def _consensus_options(gsm8k_dir, tiny_chat_model_path, policy_url, judge_url) -> dict:
    return {
        "model": str(tiny_chat_model_path), "backend": "openai", "base_url": policy_url,
        "problems": str(gsm8k_dir / "test.jsonl"), "max_problems": GSM8K_PROBLEMS, "num_samples_per_problem": 2,
        "mc_rollouts": 2, "mc_search": "linear", "concurrency": 2, "label_method": "consensus",
        "judge_model": JUDGE, "judge_base_url": judge_url, "judge_samples": 1,
    }  # fmt: skip


def test_two_builds_sharing_a_cache_judge_each_solution_once(gsm8k_dir, tiny_chat_model_path, tmp_path):
    with StubServer(_gsm8k_world(gsm8k_dir), delay=0.02) as policy_server, StubServer(_judge_world(gsm8k_dir), delay=0.02) as judge_server:
        options = _consensus_options(gsm8k_dir, tiny_chat_model_path, policy_server.url, judge_server.url)
        clean = load_dataset("prm_builder", "model_sampled", **options, generation_cache_dir=str(tmp_path / "clean"),
                             cache_dir=str(tmp_path / "clean_arrow"))["test"].to_list()  # fmt: skip
        one_build = (policy_server.count(), judge_server.count())
        policy_server.reset_counts()
        judge_server.reset_counts()
        results, errors = {}, []

        def run(name):
            try:
                results[name] = load_dataset("prm_builder", "model_sampled", **options, cache_dir=str(tmp_path / name),
                                             generation_cache_dir=str(tmp_path / "shared"))["test"].to_list()  # fmt: skip
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(name,)) for name in ("first", "second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    assert (policy_server.count(), judge_server.count()) == one_build
    assert results["first"] == clean and results["second"] == clean
    # Every distinct solution judged (two samples of one request can be the same text: one verdict
    # group), some more than once (an unparsable verdict is sampled again).
    assert judge_server.count() > len({(row["prompt"], tuple(row["completions"])) for row in clean}) >= GSM8K_PROBLEMS
    assert {row["judge_first_error"] for row in clean} >= {-1} and all(
        row["judge_first_error"] == row["mc_first_error"] == row["first_error"] for row in clean
    )


def test_policy_and_judge_servers_work_at_the_same_time_each_with_its_window_full(
    gsm8k_dir, tiny_chat_model_path, tmp_path, monkeypatch
):
    # A consensus build keeps both servers busy: verdicts go out while samples and rollouts are in
    # flight, each server with its own window of `concurrency` requests; the rows are those of a
    # build whose backends take turns (as the in-process backends still do).
    from prm_builder.sampling.backends.openai import OpenAIBackend

    def build_into(name):
        return load_dataset("prm_builder", "model_sampled", **options, generation_cache_dir=str(tmp_path / name),
                            cache_dir=str(tmp_path / f"{name}_arrow"))["test"].to_list()  # fmt: skip

    with StubServer(_gsm8k_world(gsm8k_dir), delay=0.05) as policy_server, StubServer(_judge_world(gsm8k_dir), delay=0.05) as judge_server:
        servers = (policy_server, judge_server)
        options = {**_consensus_options(gsm8k_dir, tiny_chat_model_path, policy_server.url, judge_server.url), "concurrency": 3}
        together = build_into("together")
        requests = [server.count() for server in servers]
        windows = [server.max_in_flight for server in servers]
        (judge_busy, both_busy), most = busy_seconds(judge_server, policy_server), most_in_flight(*servers)

        for server in servers:
            server.reset_counts()
        with monkeypatch.context() as patch:
            patch.setattr(OpenAIBackend, "generate_together", None)  # one backend at a time
            in_turns = build_into("turns")
        assert [server.count() for server in servers] == requests
        assert busy_seconds(judge_server, policy_server)[1] == 0 and most_in_flight(*servers) <= 3  # one server idles

        # The cache the concurrent build wrote serves a rebuild alone, with the same rows.
        for server in servers:
            server.reset_counts()
        rebuilt = load_dataset("prm_builder", "model_sampled", **options, generation_cache_dir=str(tmp_path / "together"),
                               cache_dir=str(tmp_path / "rebuilt_arrow"))["test"].to_list()  # fmt: skip
        assert [server.count() for server in servers] == [0, 0]
    assert together == in_turns == rebuilt and len(together) >= GSM8K_PROBLEMS
    assert windows == [3, 3]  # each server's window filled, never more
    # Both servers worked at once, with more than one window in flight in all (taking turns: never).
    # How much of the judge's time overlaps depends on timing (40 to 95% of it in our runs): a
    # solution's rollouts wait for its verdicts, so the last verdicts can run alone.
    assert 0 < both_busy <= judge_busy and 3 < most <= 6


def test_a_failing_judge_server_stops_both_backends_once_the_policys_requests_in_flight_are_cached(
    gsm8k_dir, tiny_chat_model_path, tmp_path
):
    # Samples take 0.5 s; the judge answers 500 at once. The first two sample requests come back,
    # their verdicts fail while the next two samples are in flight: those finish and are cached,
    # nothing new starts on either server. (Taking turns, all 8 sample requests ran before any verdict.)
    with StubServer(_gsm8k_world(gsm8k_dir), delay=0.5) as policy_server, StubServer(_judge_world(gsm8k_dir)) as judge_server:
        judge_server.fail_next(*[500] * 100)
        options = {**_consensus_options(gsm8k_dir, tiny_chat_model_path, policy_server.url, judge_server.url), "max_retries": 0}
        with pytest.raises(Exception) as caught:  # datasets wraps it: the backend's error is the cause
            load_dataset("prm_builder", "model_sampled", **options, generation_cache_dir=str(tmp_path / "generations"))
        policy_server.wait_idle()
    assert f"the server at {judge_server.url} still answered HTTP 500 after 0 retries" in str(caught.value.__cause__)
    assert policy_server.count() == 4 and judge_server.count() == 0 and judge_server.failed
    (cache,) = list_caches(tmp_path / "generations")
    assert cache.generations["sample"] == 2 * 4 and cache.generations["verdict"] == 0 and cache.damage is None


@pytest.mark.slow  # kill -9 of a real build process
def test_consensus_resumes_after_kill_9_with_identical_rows(gsm8k_dir, tiny_chat_model_path, tmp_path, isolated_hf_cache):
    with StubServer(_gsm8k_world(gsm8k_dir), delay=0.05) as policy_server, StubServer(_judge_world(gsm8k_dir), delay=0.05) as judge_server:
        options = _consensus_options(gsm8k_dir, tiny_chat_model_path, policy_server.url, judge_server.url)
        killed_root = tmp_path / "killed"
        env = {**os.environ, "HF_DATASETS_CACHE": str(isolated_hf_cache), "HF_HOME": str(tmp_path / "hf_home")}

        def verdicts_cached(lines):
            return sum(1 for line in lines if b'"k":"verdict:' in line) >= 4

        done_at_kill = kill_9_build(options, killed_root, env, verdicts_cached, "verdicts")

        for server in (policy_server, judge_server):
            server.wait_idle()
            server.reset_counts()
        resumed = load_dataset("prm_builder", "model_sampled", **options, generation_cache_dir=str(killed_root))["test"]
        resumed_requests = policy_server.count() + judge_server.count()

        policy_server.reset_counts()
        judge_server.reset_counts()
        clean = load_dataset("prm_builder", "model_sampled", **options, generation_cache_dir=str(tmp_path / "clean"),
                             cache_dir=str(tmp_path / "clean_arrow"))["test"]  # fmt: skip
        all_requests = policy_server.count() + judge_server.count()

    assert resumed.to_list() == clean.to_list() and len(clean) > 0
    assert resumed_requests == all_requests - done_at_kill
    indices = cached_indices(killed_root)
    assert len(indices) == len(set(indices))


def _judged_rows(pairs: list[tuple[int, int]]):
    from datasets import Dataset

    rows = []
    for number, (judge_error, mc_error) in enumerate(pairs):
        labels = [judge_error == -1 or step < judge_error for step in range(3)]
        rows.append({
            "id": f"p/sample-{number}", "prompt": "p", "completions": ["a", "b", "c"], "labels": labels,
            "first_error": judge_error, "final_answer": "1", "reference_answer": "1", "source": "model_sampled/m",
            "step_scores": [], "outcome": "correct", "generation_end": "stop", "model": "m", "sample_index": number,
            "temperature": 1.0, "top_p": 1.0, "judge_first_error": judge_error, "mc_first_error": mc_error, "judge_model": JUDGE,
        })  # fmt: skip
    return Dataset.from_list(rows, features=model_sampled.JUDGE_FEATURES)


def test_stats_and_card_show_how_often_judge_and_monte_carlo_agree():
    from collections import Counter

    from datasets import DatasetDict

    from prm_builder.publishing import card
    from prm_builder.publishing.stats import format_summary, summarize_splits

    data = DatasetDict({"test": _judged_rows([(-1, -1), (1, 1), (-1, -1)])})
    drops = {"test": Counter({**CONSENSUS_DROPS, "disagree_judge_earlier": 2})}
    agreement = summarize_splits(data, drops)["test"]["agreement"]
    assert agreement == {
        "judge_labelled": 8,
        "judge_dropped": {"judge_unparsable": 1, "judge_truncated_while_thinking": 1, "judge_tie": 1},
        "both_labelled": 8,
        "agreed": 3,
        "agreement": 3 / 8,
        "confusion": {"both_all_right": 2, "same_wrong_step": 1, "judge_earlier": 2, "judge_later": 1,
                      "only_judge_all_right": 1, "only_mc_all_right": 1},
    }  # fmt: skip
    text = format_summary(summarize_splits(data, drops))
    assert "  judge: 8 solutions labelled; dropped without a verdict: 1 judge_unparsable, 1 judge_truncated_while_thinking, 1 judge_tie" in text
    assert "  judge vs Monte Carlo: 8 labelled by both, 3 agree (37.5%)" in text
    assert "    MC: a wrong step                   1  1 same step, 2 judge earlier, 1 judge later" in text
    section = card.render_section(data, "model_sampled", "org/prm-data", {"label_method": "consensus"}, drops, None)
    assert "#### Judge and Monte Carlo" in section
    assert "| test | 8 | 1 judge_unparsable, 1 judge_truncated_while_thinking, 1 judge_tie | 8 | 3 (37.5%) | 2 | 1 | 2 | 1 | 1 | 1 |" in section

    # Judge labels alone: no Monte Carlo ran (mc_first_error -2), so no agreement to show.
    judged = DatasetDict({"test": _judged_rows([(-1, -2), (2, -2)])})
    alone = summarize_splits(judged, {"test": Counter({"judge_tie": 2})})["test"]["agreement"]
    assert (alone["judge_labelled"], alone["both_labelled"], alone["agreement"]) == (2, 0, None)
    assert "judge vs Monte Carlo" not in format_summary(summarize_splits(judged, {}))
    assert "| test | 2 | 2 judge_tie | 0 | - | - |" in card.render_section(judged, "model_sampled", "org/prm-data", None, {"test": Counter({"judge_tie": 2})}, None)
    # Rows of outcome or mc labels have no judge columns: nothing is shown.
    assert "Judge and Monte Carlo" not in card.render_section(
        DatasetDict({"test": judged["test"].remove_columns(["judge_first_error", "mc_first_error", "judge_model"])}),
        "model_sampled", "org/prm-data", None, {}, None,
    )
