"""The model card prm-train writes: enough to reproduce the run (base model, seed, library versions, date, run time,
hardware), and a usage snippet that runs and prints each step's score."""

import datetime
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from prm_trainer.cli import main, make_parser
from prm_trainer.model_card import base_model_label, run_time


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_path, gsm8k_dir):
    """A LoRA PRM trained by prm-train (two steps, no learning rate given), in `<work>/prm`."""
    work = tmp_path_factory.mktemp("card-run")
    args = ["--model_name_or_path", str(tiny_model_path), "--dataset_name", "prm_builder:synthetic",
            "--dataset_options", f"problems={gsm8k_dir}", "max_examples=8", "--use_peft", "--lora_r", "4",
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no",
            "--seed", "7", "--eval_metric", "step_accuracy", "--output_dir", str(work / "prm")]
    cwd = os.getcwd()
    os.chdir(work)
    try:
        main(*make_parser().parse_args_and_config(args))
    finally:
        os.chdir(cwd)
    return work


def test_card_says_how_to_reproduce_the_run(trained, tiny_model_path):
    card = (trained / "prm" / "README.md").read_text()
    section = card[card.index("## Reproducing"):card.index("## Method")]
    lines = section.splitlines()
    assert f"- base model: `{tiny_model_path.name}` (a local folder)" in lines
    assert str(tiny_model_path) not in card  # a local folder by its name, never its path
    assert f"Fine-tuned from `{tiny_model_path.name}` (a local folder) with LoRA" in card
    assert "base_model:" not in card.split("---")[1]  # the metadata takes Hub ids only
    assert "- seed: 7" in lines
    libraries = next(line for line in lines if line.startswith("- libraries: "))
    for name in ("prm-builder", "torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        assert f"{name} {version(name)}" in libraries
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert f"- date: {today} (UTC, when this card was written)" in lines
    assert any(re.fullmatch(r"- run time: \d+\.\d s of training", line) for line in lines), section
    assert any(re.fullmatch(r"- hardware: CPU \(\w+, \d+ cores\), fp32", line) for line in lines), section
    # No learning rate given with --use_peft: the LoRA default, and the card says which.
    assert "learning rate: 0.0001" in card


def test_card_snippet_runs_and_prints_each_step_s_score(trained):
    card = (trained / "prm" / "README.md").read_text()
    usage = card[card.index("## Scoring steps"):]
    start = usage.index("```python\n") + len("```python\n")
    snippet = usage[start:usage.index("\n```", start)]
    assert 'PRMReward("prm", step_separator="\\n")' in snippet
    # FutureWarnings as errors: PEFT's about transformers' is_gradient_checkpointing must not reach the reader.
    result = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", snippet], cwd=trained,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == [
        "In May she sold 48 / 2 = 24 clips.", "In April and May she sold 48 + 24 = 72 clips.", "The answer is 72"]
    assert all(re.fullmatch(r"[01]\.\d{3}", line.split("  ", 1)[0]) for line in lines), lines


@pytest.mark.parametrize(
    "base, expected",
    [
        ("Qwen/Qwen2.5-Math-1.5B",
         ("Qwen/Qwen2.5-Math-1.5B", "[Qwen/Qwen2.5-Math-1.5B](https://huggingface.co/Qwen/Qwen2.5-Math-1.5B)")),
        ("/home/someone/models/qwen-local", (None, "`qwen-local` (a local folder)")),
        (None, (None, None)),
    ],
)
def test_base_model_label(base, expected):
    assert base_model_label(base) == expected


def test_base_model_label_names_an_existing_relative_folder(tmp_path, monkeypatch):
    (tmp_path / "tiny").mkdir()
    monkeypatch.chdir(tmp_path)
    assert base_model_label("tiny") == (None, "`tiny` (a local folder)")


def test_run_time():
    assert run_time([{"loss": 0.7}, {"train_runtime": 12.34}]) == "12.3 s"
    assert run_time([{"train_runtime": 5400.0}]) == "1.50 h (5400 s)"
    assert run_time([{"loss": 0.7}]) is None
