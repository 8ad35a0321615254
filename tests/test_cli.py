"""`prm-builder build` and `stats`, through the real console script and through main(), and its failures."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset, load_from_disk

import prm_builder  # noqa: F401 - registers the builder
from prm_builder import failures
from prm_builder.cli import main


def test_build_saves_loads_and_summarizes(tmp_path, capsys, gsm8k_dir):
    out = tmp_path / "built"
    code = main(
        [
            "build", "synthetic", "--problems", str(gsm8k_dir), "--max-examples", "40",
            "--strategies", "flip_number,wrong_final_answer", "--num-incorrect-per-problem", "2",
            "--no-include-correct", "--output-dir", str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    saved = load_from_disk(str(out))
    assert {split: len(data) for split, data in saved.items()} == {"train": 40, "test": 40}
    assert set(saved["train"]["source"]) == {"synthetic/flip_number", "synthetic/wrong_final_answer"}
    assert "== train: 40 rows" in printed and "synthetic/flip_number" in printed and "label balance" in printed
    options = json.loads((out / "prm_builder_options.json").read_text())
    assert options == {
        "config": "synthetic",
        "options": {
            "problems": str(gsm8k_dir), "num_incorrect_per_problem": 2, "max_examples": 40,
            "strategies": ["flip_number", "wrong_final_answer"], "include_correct": False,
        },
    }


def test_stats_reports_drops_and_plots(tmp_path, capsys):
    problems = tmp_path / "problems"
    problems.mkdir()
    (problems / "train.jsonl").write_text(
        json.dumps({"question": "q1", "answer": "She has 2 * 3 = <<2*3=6>>6 pens.\nThen 6 - 1 = <<6-1=5>>5.\n#### 5"}) + "\n"
        + json.dumps({"question": "q2", "answer": "no final answer here"}) + "\n"
    )
    out = tmp_path / "built"
    assert main(["build", "synthetic", "--problems", str(problems), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    plot = tmp_path / "dist.png"
    assert main(["stats", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "== train: 4 rows" in printed
    assert "dropped 1 items: 1 no_final_answer" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["stats", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["rows"] == 4 and summary["train"]["dropped"] == {"no_final_answer": 1}
    assert summary["train"]["rows_per_source"]["synthetic/correct"] == 1


def test_errors_are_one_line_and_exit_nonzero(tmp_path, capsys):
    assert main(["build", "synthetic", "--problems", "nowhere", "--output-dir", str(tmp_path / "x")]) == 1
    assert "prm-builder: error: --problems must be" in capsys.readouterr().err
    assert main(["stats", str(tmp_path)]) == 1
    assert "is not a folder saved by `prm-builder build`" in capsys.readouterr().err


def test_console_script_runs_the_main_job(tmp_path):
    # The console script that `pip install` put beside this interpreter (the venv's bin may not be on PATH).
    script = Path(sys.executable).parent / "prm-builder"
    assert script.is_file(), f"prm-builder console script not installed beside {sys.executable}"
    out = tmp_path / "sample"
    result = subprocess.run(
        [script, "build", "synthetic", "--problems", "sample", "--output-dir", str(out)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "== train:" in result.stdout and "== test:" in result.stdout
    assert len(load_from_disk(str(out))["train"]) > 0


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "prm_builder.cli", "build", "synthetic", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--num-incorrect-per-problem" in result.stdout and "--keep-calculator-annotations" in result.stdout


# -- one clear line per failure ------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:  # bound and closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def no_network(monkeypatch):
    """The Hub endpoint and GSM8K's files on a port nothing listens on, with offline mode off: a dead network."""
    import datasets
    from huggingface_hub import constants

    from prm_builder import problems

    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    for split, url in problems.GSM8K_FILES.items():
        monkeypatch.setitem(problems.GSM8K_FILES, split, url.replace("https://huggingface.co", endpoint))
    return endpoint


def test_no_network_is_one_line_with_the_url_and_the_ways_out(no_network, tmp_path, capsys):
    assert main(["build", "synthetic", "--output-dir", str(tmp_path / "out")]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"prm-builder: error: could not reach {no_network}/")
    assert "openai/gsm8k" in err and "Connect" not in err.split("(", 1)[0]
    assert "--problems sample" in err and "--problems DIR" in err and "HF_HUB_OFFLINE=1" in err


def test_debug_adds_the_traceback(no_network, tmp_path, capsys):
    assert main(["build", "synthetic", "--output-dir", str(tmp_path / "out"), "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1].startswith(f"prm-builder: error: could not reach {no_network}/")


def test_offline_without_a_cached_copy_names_the_file_and_the_ways_out(tmp_path, capsys):
    # conftest sets HF_HUB_OFFLINE=1 and an empty cache.
    assert main(["build", "synthetic", "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "(HF_HUB_OFFLINE is set and no copy is in the cache)" in err and "--problems sample" in err


def test_a_model_not_in_the_cache_is_named(gsm8k_dir, tmp_path, capsys):
    argv = ["build", "model_sampled", "--problems", str(gsm8k_dir), "--max-problems", "1", "--output-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("prm-builder: error: could not reach https://huggingface.co/Qwen/Qwen3-8B/")
    assert "hf download Qwen/Qwen3-8B" in err and "--model with a local folder" in err


def test_prm800k_download_failure_is_one_line_and_not_retried(tmp_path):
    script = Path(sys.executable).parent / "prm-builder"
    env = {
        **os.environ, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HOME": str(tmp_path / "home"),
        "HF_DATASETS_CACHE": str(tmp_path / "cache"), "PRM_BUILDER_PRM800K_URL": f"http://127.0.0.1:{closed_port()}",
    }  # fmt: skip
    result = subprocess.run(
        [script, "build", "prm800k", "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr  # no "Trying to resume download..." lines
    assert result.stderr.startswith("prm-builder: error: could not download PRM800K's file http://127.0.0.1:")
    assert "--data-dir prm800k/prm800k/data" in result.stderr and "data_dir=" not in result.stderr


def test_cli_errors_use_flags_and_python_errors_use_arguments(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["build", "prm800k", "--data-dir", str(empty), "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "--data-files train=PATH test=PATH" in err and "--phases" in err
    assert f"--data-dir '{empty}': expected" in err
    assert "data_files=" not in err and "data_dir" not in err

    with pytest.raises(FileNotFoundError, match=r"data_files=\{'train': \[\.\.\.\], 'test': \[\.\.\.\]\}"):
        load_dataset("prm_builder", "prm800k", data_dir=str(empty))


@pytest.mark.parametrize(
    ("python", "cli"),
    [
        ("pass data_dir= with a copy", "pass --data-dir with a copy"),
        ("backend='openai' needs base_url", "--backend openai needs base_url"),
        ("problems='/a b/c': expected", "--problems '/a b/c': expected"),
        ("or data_files={'train': ['x.jsonl']}", "or --data-files train=x.jsonl"),
        ("phases=[1, 2] and include_correct=False", "--phases 1,2 and --no-include-correct"),
        ("pass download_mode='force_redownload'", "pass --force-rebuild"),
        ("see http://h/x?problems=3 and max_new_tokens", "see http://h/x?problems=3 and max_new_tokens"),
        ("unrelated=3", "unrelated=3"),
        ("data_dir '/x': expected", "--data-dir '/x': expected"),
        ("problems must be 'gsm8k', got 'x'", "--problems must be 'gsm8k', got 'x'"),
        ("the problems must be", "the --problems must be"),  # prose too: rare, and still true
    ],
)
def test_cli_wording(python, cli):
    names = {"data_dir", "data_files", "backend", "base_url", "problems", "phases", "include_correct"}
    assert failures.cli_wording(python, names) == cli


def test_model_sampled_math500_offline_names_its_way_out(tmp_path, capsys):
    argv = ["build", "model_sampled", "--problems", "math500", "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "prm800k/math_splits/test.jsonl" in err
    assert "--problems with its path for model_sampled" in err and "problems=" not in err


def test_a_full_disk_is_said_in_the_os_words():
    error = OSError(28, "No space left on device", "/data/export/part.parquet")
    assert failures.explain(error, set()) == "No space left on device: /data/export/part.parquet"


def test_an_unexpected_error_is_one_line_pointing_at_debug():
    try:
        {}["missing"]
    except KeyError as error:
        assert failures.explain(error, set()) == "KeyError: 'missing' (run again with --debug for the traceback)"


def test_our_errors_are_recognised_through_a_symlinked_install(tmp_path):
    # An install reached through a symlink (a symlinked site-packages entry or checkout): Python
    # names the frames by the unresolved path, the package knows itself by the resolved one.
    linked = tmp_path / "site"
    linked.mkdir()
    (linked / "prm_builder").symlink_to(Path(failures.__file__).resolve().parent, target_is_directory=True)
    code = (
        "import prm_builder, sys\n"
        "from prm_builder import failures, options\n"
        "assert prm_builder.__file__.startswith(sys.argv[1]), prm_builder.__file__\n"
        "try:\n"
        "    options.check_int('seed', 'x')\n"
        "except ValueError as error:\n"
        "    print(failures.raised_by_us(error))\n"
        "try:\n"
        "    int('x')\n"
        "except ValueError as error:\n"
        "    print(failures.raised_by_us(error))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(linked)}
    done = subprocess.run([sys.executable, "-c", code, str(linked)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]


def test_help_does_not_import_the_builders():
    # `prm-builder --help` must start fast: only `build` and `push` need datasets and the configs.
    code = (
        "import sys\nfrom prm_builder.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('datasets', 'pyarrow', 'pandas', 'torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "tiny-model" in result.stdout


def test_tiny_model_command_writes_a_model_that_loads(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["tiny-model", str(tmp_path / "tiny"), "--chat-template"]) == 0
    assert "wrote a tiny Qwen2" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    text = "48 / 2 = 24.\n\n48 + 24 = 72."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<|im_start|>user")
