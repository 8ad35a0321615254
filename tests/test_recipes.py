"""recipes/: each `prm-train --config` recipe parses, and runs one optimizer step with its model and data swapped for
tiny local ones (everything else, learning rate, batch, lengths, separator, LoRA settings, as the recipe says); the
ZeRO-3 recipe's accelerate config names DeepSpeed stage 3. Also prm-train's learning-rate default with --use_peft."""

import re
import sys
from pathlib import Path

import pytest
import yaml
from prm_trainer.cli import main, make_parser, resolve_learning_rate
from prm_trainer.config import FULL_FINE_TUNE_LEARNING_RATE, LORA_LEARNING_RATE
from prm_trainer.mixture import entries

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
ZERO3 = ROOT / "recipes" / "accelerate" / "zero3.yaml"
# What each recipe must say it trains with: the figures its comments defend (and the global batch they state).
EXPECTED = {
    "qwen2.5-math-1.5b-lora.yaml": {"learning_rate": 1e-4, "use_peft": True, "epochs": 1, "global_batch": 64,
                                    "processes": 1},
    "qwen2.5-math-7b-full-zero3.yaml": {"learning_rate": 2e-6, "use_peft": False, "epochs": 1, "global_batch": 64,
                                        "processes": 8},
}


def test_every_recipe_is_tested():
    assert [recipe.name for recipe in RECIPES] == sorted(EXPECTED)


def parse(config: Path, *flags: str):
    return make_parser().parse_args_and_config(["--config", str(config), *flags])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_with_the_figures_it_defends(recipe, tmp_path):
    expected = EXPECTED[recipe.name]
    script_args, training_args, model_args = parse(recipe, "--output_dir", str(tmp_path / "out"))
    resolve_learning_rate(training_args, model_args)

    assert training_args.learning_rate == expected["learning_rate"]
    assert model_args.use_peft is expected["use_peft"]
    assert training_args.num_train_epochs == expected["epochs"] and training_args.max_steps == -1
    global_batch = (expected["processes"] * training_args.per_device_train_batch_size
                    * training_args.gradient_accumulation_steps)
    assert global_batch == expected["global_batch"]
    assert training_args.max_length == 2048 and training_args.max_prompt_length == 512
    assert training_args.step_separator == "\n\n" and training_args.seed == 42
    assert [(entry.path, entry.name) for entry in entries(script_args.datasets)] == [
        ("prm_builder", "prm800k"), ("prm_builder", "math_shepherd")]
    assert script_args.test_split_size == 0.01
    # The comments say what the run needs: the data, and the GPU hours.
    comments = "\n".join(line for line in recipe.read_text().splitlines() if line.startswith("#"))
    assert "# Data:" in comments and "# Compute:" in comments
    assert re.search(r"\d+(-\d+)? H100 hours", comments), "the GPU hours it needs"
    assert "global batch 64" in comments


def test_zero3_accelerate_config_is_deepspeed_stage_3_on_the_recipe_s_process_count():
    config = yaml.safe_load(ZERO3.read_text())
    assert config["distributed_type"] == "DEEPSPEED"
    assert config["deepspeed_config"]["zero_stage"] == 3
    assert config["deepspeed_config"]["zero3_save_16bit_model"] is True  # a loadable model at the end
    assert config["mixed_precision"] == "bf16"
    assert config["num_processes"] == EXPECTED["qwen2.5-math-7b-full-zero3.yaml"]["processes"]
    recipe = (ROOT / "recipes" / "qwen2.5-math-7b-full-zero3.yaml").read_text()
    assert "accelerate launch --config_file recipes/accelerate/zero3.yaml -m prm_trainer.cli" in recipe


def tiny_variant(recipe: Path, tmp_path: Path, tiny_model_path: Path, test_data: Path) -> Path:
    """The recipe with its model and data swapped for tiny local ones, for one optimizer step on the CPU."""
    config = yaml.safe_load(recipe.read_text())
    local = {
        "prm800k": {"data_files": {"train": str(test_data / "prm800k" / "samples.jsonl")}, "alternatives": True},
        "math_shepherd": {"data_files": {"train": str(test_data / "math_shepherd" / "samples.jsonl")}},
    }
    for entry in config["datasets"]:
        entry["options"] = {**(entry.get("options") or {}), **local[entry["name"]]}
    config.update(model_name_or_path=str(tiny_model_path), dtype="float32", bf16=False, use_cpu=True, max_steps=1,
                  report_to="none", eval_strategy="no", save_strategy="no", eval_metric="step_accuracy",
                  test_split_size=0.25)
    path = tmp_path / recipe.name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_runs_one_step_with_a_tiny_model_and_data(recipe, tmp_path, tiny_model_path, test_data, capsys):
    out = tmp_path / "prm"
    expected = EXPECTED[recipe.name]
    main(*parse(tiny_variant(recipe, tmp_path, tiny_model_path, test_data), "--output_dir", str(out)))

    saved = {path.name for path in out.iterdir()}
    weights = "adapter_model.safetensors" if expected["use_peft"] else "model.safetensors"
    assert {weights, "README.md", "prm_eval_results.json"} <= saved
    card = (out / "README.md").read_text()
    assert "optimizer steps: 1" in card
    assert f"learning rate: {expected['learning_rate']}" in card
    assert "| prm_builder:prm800k (" in card and "| prm_builder:math_shepherd (" in card  # both mixed
    assert "rows realised per dataset" in capsys.readouterr().out


# ---------------------------------------------------------------- the learning rate with --use_peft


@pytest.mark.parametrize(
    "flags, config, expected",
    [
        (["--use_peft"], None, LORA_LEARNING_RATE),
        (["--use-peft"], None, LORA_LEARNING_RATE),
        (["--use_peft", "--learning_rate", "3e-5"], None, 3e-5),
        (["--use_peft"], "learning_rate: 2.0e-5\n", 2e-5),  # given in --config: kept
        ([], "use_peft: true\n", LORA_LEARNING_RATE),
        ([], None, FULL_FINE_TUNE_LEARNING_RATE),
        (["--learning_rate", "1e-5", "--use_peft"], None, 1e-5),  # the default's value, but given: kept
    ],
)
def test_use_peft_without_a_learning_rate_trains_at_a_lora_rate(flags, config, expected, tmp_path, capsys):
    argv = ["--output_dir", str(tmp_path / "out"), *flags]
    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
        argv = ["--config", str(tmp_path / "config.yaml"), *argv]
    _, training_args, model_args = make_parser().parse_args_and_config(argv)
    resolve_learning_rate(training_args, model_args)
    assert training_args.learning_rate == expected
    note = "learning rate 0.0001 (prm-train's default with --use_peft; --learning_rate to change it)\n"
    assert capsys.readouterr().err == (note if expected == LORA_LEARNING_RATE else "")


def test_help_says_which_learning_rate_is_the_default(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # render the help, not a cached copy
    monkeypatch.setattr(sys, "argv", ["prm-train", "--help"])
    main()
    help_text = " ".join(capsys.readouterr().out.split())
    assert "1e-5 for a full fine-tune, 1e-4 with --use_peft" in help_text


def test_python_api_keeps_the_full_fine_tune_default():
    from prm_trainer import PRMConfig

    assert PRMConfig(output_dir="unused").learning_rate == FULL_FINE_TUNE_LEARNING_RATE
