"""prm-eval --judge-model: an LLM judge behind a real OpenAI-compatible server on 127.0.0.1, scored as a critic on
ProcessBench-format cases and on a built split, with figures computed by hand."""

import json
import threading

import pytest
from datasets import Dataset, DatasetDict

from tests.openai_stub_server import ScriptedRequest, StubServer
from prm_trainer.eval_cli import main

JUDGE = "critic-model"
# (label, the judge's answers in order; the last repeats). max_retries 1: a second unparsable verdict is a miss.
CASES = [
    (-1, ["\\boxed{-1}"]),  # correct case, hit
    (-1, ["\\boxed{1}"]),  # correct case, a step flagged: miss
    (1, ["<think>Step 0 \\boxed{0}?</think>Step 1 is wrong: \\boxed{1}"]),  # erroneous, hit
    (0, ["\\boxed{2}"]),  # erroneous, the wrong step: miss
    (2, ["No verdict.", "\\boxed{9}"]),  # erroneous, unparsable twice: miss
    (-1, ["I am not sure.", "\\boxed{-1}"]),  # correct, unparsable then sampled again: hit
    (0, ["\\boxed{0}"]),  # erroneous, hit
    (1, [{"content": None, "reasoning_content": "Step 0 looks", "finish_reason": "length"}]),  # cut while thinking: miss
]
# Erroneous cases: 2 hits of 5 (0.4); correct cases: 2 of 3. F1 = 2 * 0.4 * 2/3 / (0.4 + 2/3) = 0.5.
F1 = 2 * 0.4 * (2 / 3) / (0.4 + 2 / 3)


def case(number: int, label: int) -> dict:
    steps = [f"Case {number}, step {i}: 2 + {i} = {2 + i}." for i in range(3)]
    return {"id": f"gsm8k-{number}", "generator": "scripted", "problem": f"Problem number {number}: add.",
            "steps": steps, "final_answer_correct": label == -1, "label": label}  # fmt: skip


class ScriptedCritic:
    def __init__(self):
        self.served = [0] * len(CASES)
        self.lock = threading.Lock()

    def __call__(self, request: ScriptedRequest) -> list:
        number = next(n for n in range(len(CASES)) if f"Problem number {n}:" in request.user)
        with self.lock:
            first = self.served[number]
            self.served[number] += request.n
        script = CASES[number][1]
        return [script[min(index, len(script) - 1)] for index in range(first, first + request.n)]


@pytest.fixture
def processbench_folder(tmp_path):
    folder = tmp_path / "processbench"
    folder.mkdir()
    (folder / "gsm8k.json").write_text(json.dumps([case(n, label) for n, (label, _) in enumerate(CASES)]))
    return folder


def run_critic(capsys, url, *argv) -> str:
    assert main(["--judge-model", JUDGE, "--base-url", url, "--max-retries", "1", *map(str, argv)]) == 0
    return capsys.readouterr().out


def test_processbench_f1_of_scripted_verdicts(processbench_folder, capsys):
    with StubServer(ScriptedCritic(), model=JUDGE) as server:
        result = json.loads(run_critic(capsys, server.url, "--benchmark", "processbench", "--subsets", "gsm8k",
                                       "--data", processbench_folder, "--judge_samples", "1", "--json"))  # fmt: skip
        first = next(r for r in server.served if "Problem number 2:" in r.user)
    gsm8k = result["subsets"]["gsm8k"]
    assert (gsm8k["num_erroneous"], gsm8k["num_correct"], gsm8k["unscored"]) == (5, 3, 0)
    assert gsm8k["accuracy_erroneous"] == pytest.approx(0.4) and gsm8k["accuracy_correct"] == pytest.approx(2 / 3)
    assert gsm8k["f1"] == pytest.approx(F1) and result["average"]["f1"] == pytest.approx(F1)
    assert result["model"] == JUDGE and result["threshold"] == 0.5
    assert result["critic"]["no_verdict"] == {"gsm8k": {"judge_unparsable": 1, "judge_truncated_while_thinking": 1}}
    assert result["critic"]["requests"] == len(CASES) + 2  # two cases sampled again
    # The judge's request: the same prompt model_sampled labels with, thinking left to the model.
    assert "<step_1>\nCase 2, step 1: 2 + 1 = 3.\n</step_1>" in first.user and "chat_template_kwargs" not in first.body
    assert first.body["max_tokens"] == 8192


def test_table_and_built_split(tmp_path, processbench_folder, capsys):
    with StubServer(ScriptedCritic(), model=JUDGE) as server:
        table = run_critic(capsys, server.url, "--benchmark", "processbench", "--subsets", "gsm8k",
                           "--data", processbench_folder)  # fmt: skip
    assert f"ProcessBench of {JUDGE}" in table and "no verdict (counted as a miss): 1 judge_truncated_while_thinking, 1 judge_unparsable" in table
    assert f"{100 * F1:.1f}" in table

    # A built split: the same verdicts; a miss is wrong at every step.
    rows = [{"prompt": c["problem"], "completions": c["steps"], "labels": [c["label"] == -1 or i < c["label"] for i in range(3)],
             "source": "s"} for c in json.loads((processbench_folder / "gsm8k.json").read_text())]  # fmt: skip
    DatasetDict({"test": Dataset.from_list(rows)}).save_to_disk(tmp_path / "built")
    with StubServer(ScriptedCritic(), model=JUDGE) as server:
        result = json.loads(run_critic(capsys, server.url, "--benchmark", "built", "--dataset", tmp_path / "built", "--json"))
    overall = result["overall"]
    assert overall["first_error_f1"] == pytest.approx(F1)
    # Steps predicted right, case by case: 3; 1 (flagged from step 1); 3; 1 (all wrong, flagged from 2: only step
    # 2 right); 0 (a miss); 3; 3; 0 (a miss): 14 of 24.
    assert overall["num_steps"] == 24 and overall["step_accuracy"] == pytest.approx(14 / 24)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "m", "--judge-model", "j", "--base-url", "http://h:1/v1", "--benchmark", "processbench"], "either --model"),
        (["--judge-model", "j", "--benchmark", "processbench"], "--judge-model needs --base-url"),
        (["--judge-model", "j", "--base-url", "http://h:1/v1", "--benchmark", "best_of_n", "--candidates", "c"], "not best_of_n"),
        (["--judge-model", "j", "--base-url", "http://h:1/v1", "--benchmark", "processbench", "--calibrate", "gsm8k"], "--calibrate does not apply to --judge-model"),
        (["--judge-model", "j", "--base-url", "http://h:1/v1", "--benchmark", "processbench", "--step_separator", "\\n\\n"], "--step_separator does not apply to --judge-model: the judge reads the steps as given"),
        (["--judge-model", "j", "--base-url", "http://h:1/v1", "--benchmark", "processbench", "--max-length", "512"], "--max_length does not apply to --judge-model"),
        (["--model", "m", "--base-url", "http://h:1/v1", "--benchmark", "processbench"], "--base-url is the judge's server"),
    ],
)
def test_critic_mistakes_are_named(capsys, argv, message):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2 and message in capsys.readouterr().err
