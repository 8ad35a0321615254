"""prm-eval end to end with a tiny PRM: ProcessBench from a folder and from a Hub stood up on 127.0.0.1, built splits,
best-of-N, LoRA adapters, charts, the model card section, and the errors a user meets first."""

import functools
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from tests.test_evaluation import GSM8K_CASES, MATH_CASES, ROWS

from prm_trainer.eval_cli import main

PRM_EVAL = Path(sys.executable).with_name("prm-eval")
COMMIT = "3bdcd53" + "0" * 33  # any 40-hex commit: huggingface_hub files the download under it


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory, tiny_model_path):
    """A tiny, untrained PRM saved as `prm-train` saves one: weights, config and tokenizer in one folder."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("prm")
    torch.manual_seed(0)
    AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(folder)
    return folder


@pytest.fixture
def processbench_files(tmp_path):
    folder = tmp_path / "processbench"
    folder.mkdir()
    (folder / "gsm8k.json").write_text(json.dumps(GSM8K_CASES))
    (folder / "math.json").write_text(json.dumps(MATH_CASES))
    return folder


def run_main(capsys, *argv) -> dict:
    main([*map(str, argv), "--json", "--no_progress"])
    return json.loads(capsys.readouterr().out)


def test_help_starts_without_heavy_imports():
    code = ("import sys; from prm_trainer.eval_cli import make_parser; make_parser().format_help(); "
            "print([m for m in ('torch', 'transformers', 'datasets', 'trl', 'numpy') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    shown = subprocess.run([PRM_EVAL, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--benchmark {processbench,built,best_of_n}" in shown and "--calibrate SUBSET" in shown


# ---------------------------------------------------------------- ProcessBench from the Hub, served on 127.0.0.1


class HubFiles(http.server.BaseHTTPRequestHandler):
    """Answers `/datasets/Qwen/ProcessBench/resolve/<revision>/<file>` as the Hub does: the file, with the commit and
    ETag headers huggingface_hub reads from the HEAD request; 404 with the Hub's error code for anything else."""

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def answer(self, body: bool):
        self.server.requests.append((self.command, self.path))
        match = re.fullmatch(r"/datasets/Qwen/ProcessBench/resolve/main/(\w+\.json)", self.path)
        path = self.server.root / match[1] if match else None
        if path is None or not path.is_file():
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(processbench_files, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubFiles)
    server.root, server.requests = processbench_files, []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_hub_download_goes_through_the_hub_cache(hub, processbench_files, tmp_path, monkeypatch):
    import huggingface_hub

    from prm_trainer.processbench import load_processbench

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    endpoint = f"http://127.0.0.1:{hub.server_port}"
    assert load_processbench(["gsm8k", "math"], endpoint=endpoint) == {"gsm8k": GSM8K_CASES, "math": MATH_CASES}
    snapshot = tmp_path / "hub_cache" / "datasets--Qwen--ProcessBench" / "snapshots" / COMMIT
    assert sorted(path.name for path in snapshot.iterdir()) == ["gsm8k.json", "math.json"]
    assert ("GET", "/datasets/Qwen/ProcessBench/resolve/main/gsm8k.json") in hub.requests
    # A second load is served from the cache: the server only answers the HEAD that checks the file is current.
    hub.requests.clear()
    assert load_processbench(["gsm8k"], endpoint=endpoint)["gsm8k"] == GSM8K_CASES
    assert hub.requests == [("HEAD", "/datasets/Qwen/ProcessBench/resolve/main/gsm8k.json")]


@pytest.mark.slow
def test_prm_eval_reads_hf_endpoint_and_matches_the_local_folder(hub, processbench_files, prm_dir, tmp_path, capsys):
    """The console script as a user runs it, pointed at the Hub by HF_ENDPOINT (a new process: read at import)."""
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_port}", "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf_home")}
    command = [PRM_EVAL, "--model", prm_dir, "--benchmark", "processbench", "--subsets", "gsm8k,math", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from_hub = json.loads(done.stdout)
    assert ("GET", "/datasets/Qwen/ProcessBench/resolve/main/gsm8k.json") in hub.requests
    assert ("GET", "/datasets/Qwen/ProcessBench/resolve/main/math.json") in hub.requests
    assert list((tmp_path / "hf_home" / "hub" / "datasets--Qwen--ProcessBench" / "snapshots" / COMMIT).iterdir())

    local = run_main(capsys, "--model", prm_dir, "--benchmark", "processbench", "--subsets", "gsm8k,math",
                     "--data", processbench_files)
    assert from_hub["subsets"] == local["subsets"] and from_hub["average"] == local["average"]
    assert local["subsets"]["gsm8k"]["num_erroneous"] == 6 and local["subsets"]["math"]["num_correct"] == 4


def test_hub_without_the_file_fails_naming_it(hub, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from prm_trainer.processbench import load_processbench

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(EntryNotFoundError):
        load_processbench(["omnimath"], endpoint=f"http://127.0.0.1:{hub.server_port}")
    assert ("HEAD", "/datasets/Qwen/ProcessBench/resolve/main/omnimath.json") in hub.requests


# ---------------------------------------------------------------- the three benchmarks through the command


def test_table_chart_and_calibration(processbench_files, prm_dir, tmp_path, capsys):
    main(["--model", str(prm_dir), "--benchmark", "processbench", "--subsets", "gsm8k,math", "--data",
          str(processbench_files), "--calibrate", "gsm8k", "--plot", str(tmp_path / "pb.png"), "--no_progress"])
    out = capsys.readouterr().out
    assert re.search(r"threshold 0\.\d{4}, calibrated on gsm8k \(F1 \d+\.\d there\)", out)
    assert re.search(r"^gsm8k +\d+\.\d +\d+\.\d +\d+\.\d +8$", out, re.MULTILINE)
    assert re.search(r"^average +(\d+\.\d +){3}16$", out, re.MULTILINE)
    assert "Qwen2.5-Math-PRM-7B 73.5" in out
    assert (tmp_path / "pb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flag", ["--no_progress", "--no-progress"])
def test_no_progress_hides_every_bar_loading_included(prm_dir, processbench_files, capfd, flag):
    from transformers.utils import logging as transformers_logging

    argv = ["--model", str(prm_dir), "--benchmark", "processbench", "--subsets", "gsm8k", "--data",
            str(processbench_files), "--json"]
    main(argv)
    shown = capfd.readouterr().err
    assert "Loading weights" in shown and "Scoring" in shown  # the bars this run draws, by default

    main([*argv, flag])
    out, err = capfd.readouterr()
    assert json.loads(out)["subsets"]["gsm8k"]["num_erroneous"] == 6  # the run itself is unchanged
    assert "Loading weights" not in err and "it/s" not in err and "\r" not in err, err
    assert transformers_logging.is_progress_bar_enabled()  # a global switch, put back as it was


def test_built_split_and_best_of_n(prm_dir, tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    rows = [dict(row, source=source) for row, source in zip(ROWS, ["synthetic/a", "synthetic/a", "prm800k"])]
    DatasetDict({"test": Dataset.from_list(rows)}).save_to_disk(tmp_path / "built")
    built = run_main(capsys, "--model", prm_dir, "--benchmark", "built", "--dataset", tmp_path / "built")
    assert built["overall"]["num_steps"] == 7 and set(built["sources"]) == {"synthetic/a", "prm800k"}
    assert built["sources"]["prm800k"]["num_rows"] == 1

    candidates = tmp_path / "candidates.jsonl"
    lines = [{"prompt": f"Natalia sold {n} clips.", "reference_answer": str(n),
              "candidates": [f"She sold {n}.\n\\boxed{{{n}}}", ["Wrong.", f"\\boxed{{{n + 1}}}"], "No answer."]}
             for n in (48, 72)]
    candidates.write_text("\n".join(json.dumps(line) for line in lines))
    result = run_main(capsys, "--model", prm_dir, "--benchmark", "best_of_n", "--candidates", candidates,
                      "--aggregations", "min,last", "--plot", tmp_path / "bon.svg")
    assert list(result["by_n"]) == ["1", "2", "3"] and result["max_n"] == 3
    assert set(result["by_n"]["3"]) == {"prm_min", "prm_last", "majority_vote", "pass_at_n", "random", "groups",
                                        "unscored"}
    # One right candidate of three per problem, whatever the PRM thinks; the vote is a tie of the two stated answers
    # (the third states none and does not vote).
    assert result["by_n"]["1"]["random"] == result["by_n"]["3"]["random"] == pytest.approx(1 / 3)
    assert result["by_n"]["3"]["pass_at_n"] == 1.0 and result["by_n"]["3"]["majority_vote"] == 0.5
    assert (tmp_path / "bon.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.filterwarnings("error::FutureWarning")  # loading the adapter shows none of PEFT's warnings
def test_lora_adapter_loads_its_base_and_scores_as_in_memory(tiny_model_path, processbench_files, tmp_path, capsys):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from prm_trainer import evaluate
    from prm_trainer.loading import peft_reading_deprecated_checkpointing_flag

    torch.manual_seed(1)
    base = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    with peft_reading_deprecated_checkpointing_flag():  # PEFT's own warning, as PRMTrainer hides it
        model = get_peft_model(base, LoraConfig(task_type=TaskType.TOKEN_CLS, r=4, target_modules=["q_proj", "v_proj"]))
    for name, parameter in model.named_parameters():  # a trained adapter: LoRA B and the head away from their init
        if "lora_B" in name or "score" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    model.save_pretrained(tmp_path / "adapter")  # no tokenizer there: it comes from the base
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]

    loaded = run_main(capsys, "--model", tmp_path / "adapter", "--benchmark", "processbench", "--subsets", "gsm8k",
                      "--data", processbench_files)
    in_memory = evaluate(model, AutoTokenizer.from_pretrained(tiny_model_path), "processbench", subsets=["gsm8k"],
                         data=processbench_files, progress=False)
    assert loaded["subsets"] == in_memory["subsets"]
    assert loaded["model"] == str(tmp_path / "adapter")


# ---------------------------------------------------------------- the model card


def test_update_card_replaces_only_its_own_section(prm_dir, processbench_files, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(prm_dir, folder)
    trainer_text = "---\ntags: [prm]\n---\n\n# model\n\n## Training data\n\nprm_builder:synthetic, problems=gsm8k\n"
    (folder / "README.md").write_text(trainer_text)
    base = ["--model", folder, "--benchmark", "processbench", "--data", processbench_files, "--update-card"]
    run_main(capsys, *base, "--subsets", "gsm8k", "--threshold", "0.3")
    run_main(capsys, *base, "--subsets", "gsm8k,math", "--threshold", "0.7")
    card = (folder / "README.md").read_text()
    assert card.startswith(trainer_text)
    assert card.count("<!-- prm-eval:processbench:begin -->") == card.count("<!-- prm-eval:processbench:end -->") == 1
    assert "threshold 0.7" in card and "threshold 0.3" not in card
    assert re.search(r"^\| math \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 8 \|$", card, re.MULTILINE)

    rows = [dict(row, source="synthetic/a") for row in ROWS]
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(tmp_path / "flat")  # a single Dataset: its split is "train"
    run_main(capsys, "--model", folder, "--benchmark", "built", "--dataset", tmp_path / "flat", "--split", "train",
             "--update-card")
    card = (folder / "README.md").read_text()
    assert "<!-- prm-eval:built:begin -->" in card and "threshold 0.7" in card  # both sections kept


# ---------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--benchmark", "built"], "--benchmark built needs --dataset"),
        (["--benchmark", "best_of_n"], "--benchmark best_of_n needs --candidates"),
        (["--benchmark", "best_of_n", "--candidates", "c.jsonl", "--data", "d"], "--data does not apply to"),
        (["--benchmark", "processbench", "--subsets", "gsm8k,aime"], "expected a comma-separated list from gsm8k"),
        (["--benchmark", "processbench", "--threshold", "2"], "expected a number between 0 and 1, got 2"),
        (["--benchmark", "processbench", "--update-card"], "Qwen/some-prm is not a local folder"),
    ],
)
def test_mistakes_are_named(capsys, argv, message):
    with pytest.raises(SystemExit) as raised:
        main(["--model", "Qwen/some-prm", *argv])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_step_separator_escapes_are_read_and_scores_kept(prm_dir, processbench_files, tmp_path, capsys):
    argv = ["--model", prm_dir, "--benchmark", "processbench", "--subsets", "gsm8k", "--data", processbench_files,
            "--step_separator", "\\n\\n", "--max_length", "512", "--scores_dir", tmp_path / "scores"]
    result = run_main(capsys, *argv)
    assert result["scoring"] == {"step_separator": "\n\n", "max_length": 512, "max_prompt_length": None,
                                 "max_completion_length": None}
    kept = (tmp_path / "scores" / "gsm8k.jsonl").read_text().splitlines()
    assert json.loads(kept[0])["settings"]["step_separator"] == "\n\n" and len(kept) == 1 + len(GSM8K_CASES)
    assert run_main(capsys, *argv)["subsets"] == result["subsets"]  # the second run reads the kept scores


def test_cases_cut_by_truncation_are_counted_and_said(prm_dir, processbench_files, capsys, tmp_path):
    from transformers import AutoTokenizer

    from prm_trainer.evaluation import predicted_first_error
    from prm_trainer.tokenization import StepFormat, Truncation, tokenize_for_scoring

    tokenizer = AutoTokenizer.from_pretrained(prm_dir)
    step_format = StepFormat("\n", Truncation(max_length=22))
    scored = [tokenize_for_scoring(c["problem"], c["steps"], tokenizer, step_format)[1] for c in GSM8K_CASES]
    cut = sum(len(positions) < len(c["steps"]) for positions, c in zip(scored, GSM8K_CASES))
    assert 0 < cut < len(GSM8K_CASES)  # 22 tokens hold the shorter cases only
    argv = ["--model", str(prm_dir), "--benchmark", "processbench", "--subsets", "gsm8k", "--data",
            str(processbench_files), "--max_length", "22", "--no_progress", "--scores_dir", str(tmp_path / "scores")]
    main(argv)
    out = capsys.readouterr().out
    # Unscored: a cut case whose scored steps flag nothing (its prediction is unknown). Each counts as a miss.
    lines = (tmp_path / "scores" / "gsm8k.jsonl").read_text().splitlines()[1:]
    scores = [json.loads(line)["scores"] for line in lines]
    unscored = sum(predicted_first_error(row, 0.5) is None for row in scores)
    assert 0 < unscored <= cut
    assert (f"Counted as misses, unscored (a step cut by truncation before any flagged step; raise --max_length): "
            f"{unscored} in gsm8k cases.") in out
    result = run_main(capsys, *argv)["subsets"]["gsm8k"]
    assert result["unscored"] == unscored and result["num_erroneous"] + result["num_correct"] == len(GSM8K_CASES)


def test_input_errors_are_one_line_not_a_traceback(tiny_model_path, prm_dir, processbench_files, capsys):
    argv = ["--benchmark", "processbench", "--data", str(processbench_files), "--no_progress"]
    assert main(["--model", str(tiny_model_path), *argv]) == 1  # a causal LM, not a PRM
    err = capsys.readouterr().err
    assert "prm-eval: error: " in err and "is not a trained PRM" in err and "Traceback" not in err
    (processbench_files / "math.json").write_text('[{"id": "m7", "problem": "q", "steps": ["s"], "label": 3}]')
    assert main(["--model", str(prm_dir), *argv, "--subsets", "math"]) == 1
    assert "math.json, case 0 (id 'm7'): 'label' must be -1 or a step index below 1, got 3" in capsys.readouterr().err
