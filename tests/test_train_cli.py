"""prm-train: option parsing, dataset resolution, and whole runs through the command line and accelerate launch."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from prm_trainer.cli import main, make_parser
from prm_trainer.common.data import built_options, load_prm_dataset, parse_dataset_options

BIN = Path(sys.executable).parent
EVAL_KEYS = {"split", "num_rows", "step_accuracy", "majority_baseline", "balanced_accuracy", "first_error_f1",
             "best_of_n_accuracy", "best_of_n_oracle", "best_of_n_random", "best_of_n_majority_vote"}


# ---------------------------------------------------------------- --dataset_options


def test_dataset_options_key_value_pairs_are_read_as_yaml():
    options = ["problems=/data/gsm8k", "max_examples=20", "strategies=[flip_number, change_operator]",
               "include_correct=false", "seed=", "tag=a=b"]
    assert parse_dataset_options(options) == {
        "problems": "/data/gsm8k",
        "max_examples": 20,
        "strategies": ["flip_number", "change_operator"],
        "include_correct": False,
        "seed": "",
        "tag": "a=b",
    }


def test_dataset_options_json_dict_and_none():
    expected = {"max_examples": 5, "problems": "sample"}
    assert parse_dataset_options(['{"max_examples": 5, "problems": "sample"}']) == expected
    assert parse_dataset_options({"max_examples": 5}) == {"max_examples": 5}
    assert parse_dataset_options(None) == {}


@pytest.mark.parametrize("options, message", [(["max_examples"], "expects key=value pairs, got 'max_examples'"),
                                              (["=5"], "expects key=value pairs"),
                                              (["[1, 2]"], "expects key=value pairs")])
def test_dataset_options_errors(options, message):
    with pytest.raises(ValueError, match=message):
        parse_dataset_options(options)


# ---------------------------------------------------------------- --dataset_name


@pytest.fixture
def saved_dataset(tmp_path, gsm8k_dir) -> Path:
    """What `prm-builder build` leaves behind: a DatasetDict saved with save_to_disk."""
    import prm_builder  # noqa: F401

    dataset = datasets.load_dataset("prm_builder", "synthetic", problems=str(gsm8k_dir), max_examples=12)
    dataset.save_to_disk(tmp_path / "built")
    return tmp_path / "built"


def test_load_prm_builder_config_with_options(gsm8k_dir):
    dataset = load_prm_dataset("prm_builder:synthetic", None, {"problems": str(gsm8k_dir), "max_examples": 8})
    assert set(dataset) == {"train", "test"} and len(dataset["train"]) == 8
    same = load_prm_dataset("prm_builder", "synthetic", {"problems": str(gsm8k_dir), "max_examples": 8})
    assert same["train"]["id"] == dataset["train"]["id"]


@pytest.mark.parametrize(
    "name, config, message",
    [
        ("prm_builder:synthetic", "prm800k", "name different configs"),
        ("prm_builder", None, "needs a config, e.g. prm_builder:synthetic"),
    ],
)
def test_load_prm_builder_errors(name, config, message):
    with pytest.raises(ValueError, match=message):
        load_prm_dataset(name, config, {})


def test_load_saved_dataset(saved_dataset, tmp_path):
    dataset = load_prm_dataset(str(saved_dataset))
    assert set(dataset) == {"train", "test"} and len(dataset["train"]) == 12
    with pytest.raises(ValueError, match="is a saved dataset: --dataset_config and --dataset_options apply to"):
        load_prm_dataset(str(saved_dataset), None, {"max_examples": 3})
    # A single saved Dataset becomes the train split.
    dataset["test"].save_to_disk(tmp_path / "single")
    assert list(load_prm_dataset(str(tmp_path / "single"))) == ["train"]


def test_load_folder_of_data_files(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    row = {"prompt": "1 + 1?", "completions": ["1 + 1 = 2"], "labels": [True]}
    (folder / "train.jsonl").write_text(json.dumps(row) + "\n")
    assert load_prm_dataset(str(folder))["train"][0] == row


def test_built_options_are_read_back_from_the_file_prm_builder_writes(tmp_path, gsm8k_dir, capsys):
    from prm_builder.cli import main as prm_builder

    assert prm_builder(["build", "synthetic", "--problems", str(gsm8k_dir), "--max-examples", "4",
                        "--output-dir", str(tmp_path / "built")]) == 0
    assert built_options(str(tmp_path / "built")) == {"problems": str(gsm8k_dir), "max_examples": 4}
    assert built_options(str(tmp_path)) == {} and built_options(None) == {}


def test_one_data_module_and_one_name_for_the_options_file():
    """prm-eval, the mixture code and the benchmarks load data through prm_trainer.common.data, not the prm-train command;
    the options file's name is written once (prm_builder.common.options.OPTIONS_FILE)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    importers = set()
    for path in (root / "trainer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module == "cli" and node.level == 1
                                                     or node.module == "prm_trainer.cli"):
                importers.add(path.name)
    assert importers == set()
    sources = [*root.joinpath("trainer").glob("*.py"), *root.joinpath("prm_builder").rglob("*.py")]
    assert [p.name for p in sources if '"prm_builder_options.json"' in p.read_text(encoding="utf-8")] == ["options.py"]


# ---------------------------------------------------------------- the parser


def test_parser_defaults_and_config_file(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(
        "model_name_or_path: some/model\n"
        "dataset_name: prm_builder:synthetic\n"
        "dataset_options: {problems: sample, max_examples: 10}\n"
        "use_peft: true\n"
        "max_prompt_length: 256\n"
        "learning_rate: 0.001\n"
    )
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", str(config), "--output_dir", str(tmp_path / "out"), "--learning_rate", "0.002"]
    )
    assert parse_dataset_options(script_args.dataset_options) == {"problems": "sample", "max_examples": 10}
    assert model_args.use_peft and model_args.lora_task_type == "TOKEN_CLS"
    assert training_args.max_prompt_length == 256 and training_args.learning_rate == 0.002  # the flag wins
    assert training_args.max_length == 1024 and training_args.step_separator == "\n"
    assert script_args.eval_metric == "all" and script_args.dataset_test_split == "test"


def test_parser_rejects_unknown_flags_and_bad_choices(tmp_path):
    with pytest.raises(SystemExit):
        make_parser().parse_args_and_config(["--output_dir", str(tmp_path), "--eval_metric", "f1"])
    with pytest.raises(ValueError, match="--max_lenght"):
        make_parser().parse_args_and_config(["--output_dir", str(tmp_path), "--max_lenght", "5"])


@pytest.mark.parametrize("typed, separator", [
    ("\\n\\n", "\n\n"),        # typed on a command line: backslash + n, read as prm-eval reads it
    ("\n\n", "\n\n"),          # a real newline (YAML's "\n\n") stays
    ("\\n\u6b65 ", "\n\u6b65 "),  # escapes beside non-ASCII text: the text kept as it is
])
def test_step_separator_escapes_are_read_as_prm_eval_reads_them(tmp_path, typed, separator):
    from prm_trainer.eval_cli import make_parser as make_eval_parser

    training_args = make_parser().parse_args_and_config(
        ["--output_dir", str(tmp_path), "--step_separator", typed])[1]
    assert training_args.step_separator == separator
    config = tmp_path / "recipe.yaml"
    config.write_text(f"step_separator: {json.dumps(typed)}\n", encoding="utf-8")
    from_config = make_parser().parse_args_and_config(["--config", str(config), "--output_dir", str(tmp_path)])[1]
    assert from_config.step_separator == separator
    evaluated = make_eval_parser().parse_args(["--benchmark", "built", "--step_separator", typed])
    assert evaluated.step_separator == separator


def _main(args: list[str]):
    return main(*make_parser().parse_args_and_config(args))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model_name_or_path", "m"], "--dataset_name is required"),
        (["--dataset_name", "x"], "--model_name_or_path is required"),
        (["--dataset_name", "{saved}", "--model_name_or_path", "m", "--dataset_train_split", "training"],
         r"--dataset_train_split 'training' is not a split of the dataset: \['train', 'test'\]"),
        (["--dataset_name", "{saved}", "--model_name_or_path", "m", "--dataset_test_split", "validation"],
         r"--dataset_test_split 'validation' is not a split .*--dataset_test_split none to skip"),
    ],
)
def test_main_argument_errors(tmp_path, saved_dataset, args, message):
    args = [arg.replace("{saved}", str(saved_dataset)) for arg in args]
    with pytest.raises(ValueError, match=message):
        _main([*args, "--output_dir", str(tmp_path / "out"), "--report_to", "none"])


def test_main_checks_both_splits_before_training(tmp_path, saved_dataset, tiny_model_path):
    dataset = datasets.load_from_disk(str(saved_dataset))
    test = dataset["test"].to_list()
    test[5]["labels"] = test[5]["labels"][:-1]
    broken = datasets.DatasetDict({"train": dataset["train"], "test": datasets.Dataset.from_list(test)})
    broken.save_to_disk(tmp_path / "broken")
    out = tmp_path / "out"
    message = f"the test split, row 5 \\(id '{test[5]['id']}'\\): field 'labels' has {len(test[5]['labels'])} values"
    with pytest.raises(ValueError, match=message):
        _main(["--dataset_name", str(tmp_path / "broken"), "--model_name_or_path", str(tiny_model_path),
               "--output_dir", str(out), "--report_to", "none"])
    assert not out.exists()  # nothing trained, nothing saved


# ---------------------------------------------------------------- whole runs


def run(command: list, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    result = run_to_the_end(command, cwd, env, timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def run_to_the_end(command: list, cwd: Path, env: dict | None, timeout: float) -> subprocess.CompletedProcess:
    """The command's result; past `timeout` a failure, with every process it started killed (accelerate's ranks too,
    which a plain subprocess timeout leaves running)."""
    with subprocess.Popen([str(part) for part in command], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, **(env or {})}, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"no exit within {timeout} s: {command}\n{stdout[-3000:]}\n{stderr[-5000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


TRAIN_FLAGS = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
               "--report_to", "none", "--save_strategy", "no", "--seed", "0"]


# FutureWarnings as errors: PEFT 0.21 reads transformers' deprecated `is_gradient_checkpointing` whenever it wraps a
# model, in training and in loading the adapter; none of that may reach a user of prm-train or of load_prm.
@pytest.mark.filterwarnings("error::FutureWarning")
def test_prm_train_builds_trains_evaluates_and_saves_an_adapter(tmp_path, tiny_model_path, gsm8k_dir, capfd,
                                                                 monkeypatch):
    from prm_trainer import load_prm

    config = tmp_path / "recipe.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model_path}\n"
        "dataset_name: prm_builder:synthetic\n"
        f"dataset_options: {{problems: {gsm8k_dir}, max_examples: 12}}\n"
        "use_peft: true\n"
        "lora_r: 4\n"
    )
    out = tmp_path / "prm"
    # The console script's own path (arguments from sys.argv), in process: the slow tests start it as a program.
    monkeypatch.setattr(sys, "argv", ["prm-train", "--config", str(config), "--output_dir", str(out), *TRAIN_FLAGS,
                                      "--eval_strategy", "steps", "--eval_steps", "2", "--per_device_eval_batch_size",
                                      "5"])
    main()
    stdout, stderr = capfd.readouterr()

    assert "eval_accuracy" in stdout + stderr  # compute_metrics during training
    results = json.loads((out / "prm_eval_results.json").read_text())
    assert EVAL_KEYS <= set(results) and results["split"] == "test" and results["num_rows"] == 12
    assert results["best_of_n_num_problems"] == 3  # 12 rows: 3 problems, 4 solutions each
    assert json.dumps(results, indent=2) in stdout
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "## Evaluation" in card and "prm_builder:synthetic" in card
    assert "- built with prm-builder, config `synthetic`" in card
    assert f"- options: `problems=<local>/{gsm8k_dir.name}`, `max_examples=12`" in card and str(gsm8k_dir) not in card
    assert "Scoring steps: 100%" in stderr  # the final evaluation's progress bar
    model, _ = load_prm(str(out), device="cpu")  # as PRMReward, prm-eval and the card's snippet load it
    assert model.peft_config["default"].task_type == "TOKEN_CLS"
    assert any("modules_to_save" in name and "score" in name for name, _ in model.named_parameters())


def test_prm_train_full_fine_tune_on_a_saved_dataset(tmp_path, tiny_model_path, saved_dataset):
    from transformers import AutoModelForTokenClassification

    out = tmp_path / "prm"
    # In process (the console script is run by the test above): same main(), without a second interpreter start.
    _main([str(arg) for arg in ["--model_name_or_path", tiny_model_path, "--dataset_name", saved_dataset,
                                "--dataset_test_split", "none", "--output_dir", out, *TRAIN_FLAGS]])
    assert not (out / "prm_eval_results.json").exists()
    model = AutoModelForTokenClassification.from_pretrained(out)
    assert model.config.id2label == {0: "incorrect", 1: "correct"}
    assert "library_name: transformers" in (out / "README.md").read_text()


def free_port() -> int:
    """A free port of our own: two runs on one machine must not meet on the default rendezvous port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# accelerate's `--cpu` launcher starts one process unless MPI is installed; torchrun-style multi-process launching
# plus ACCELERATE_USE_CPU gives two real CPU processes talking over gloo (DDP).
def launch(processes: int) -> list:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", processes,
            "--num_machines", "1", "--main_process_port", free_port(), "--mixed_precision", "no",
            "--dynamo_backend", "no", "-m", "prm_trainer.cli"]


CPU_PROCESSES = {"ACCELERATE_USE_CPU": "true"}


@pytest.mark.slow
def test_accelerate_launch_cpu(tmp_path, tiny_model_path, saved_dataset):
    out = tmp_path / "prm"
    run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", BIN / "prm-train",
         "--model_name_or_path", tiny_model_path, "--dataset_name", saved_dataset, "--use_peft", "--lora_r", "4",
         "--output_dir", out, "--eval_metric", "step_accuracy", *TRAIN_FLAGS], cwd=tmp_path)
    results = json.loads((out / "prm_eval_results.json").read_text())
    assert results["num_rows"] == 12 and 0 <= results["step_accuracy"] <= 1
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_model_path, saved_dataset):
    out = tmp_path / "prm"
    result = run([*launch(2), "--model_name_or_path", tiny_model_path, "--dataset_name", saved_dataset, "--use_peft",
                  "--lora_r", "4", "--output_dir", out, "--eval_strategy", "steps", "--eval_steps", "2", *TRAIN_FLAGS],
                 cwd=tmp_path, env=CPU_PROCESSES)
    assert "devices: 2" in (out / "README.md").read_text()
    results = json.loads((out / "prm_eval_results.json").read_text())
    assert EVAL_KEYS <= set(results)
    # Quiet: none of the upstream warnings that meant nothing to a user.
    for noise in ("is_gradient_checkpointing", "pin_memory", "find_unused_parameters"):
        assert noise not in result.stderr + result.stdout, noise


@pytest.fixture
def eight_rows_saved(tmp_path, gsm8k_dir) -> Path:
    """8 training rows: one global batch of 8 is the whole split, whatever order the sampler draws them in."""
    import prm_builder  # noqa: F401

    dataset = datasets.load_dataset("prm_builder", "synthetic", problems=str(gsm8k_dir), max_examples=8)
    dataset.save_to_disk(tmp_path / "eight")
    return tmp_path / "eight"


def step_one(out: Path) -> tuple[dict, dict]:
    """The first log entry (loss, grad_norm) and the trained weights of a run saved at step 1."""
    from safetensors.torch import load_file

    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    return state["log_history"][0], load_file(out / "model.safetensors")


@pytest.mark.slow
def test_two_processes_take_the_one_process_step(tmp_path, tiny_model_path, eight_rows_saved):
    """2 processes x batch 2 x accumulation 2 and 1 process x batch 8: the same step (loss, gradient, weights)."""
    import torch
    from transformers import AutoModelForTokenClassification, set_seed

    flags = ["--model_name_or_path", tiny_model_path, "--dataset_name", eight_rows_saved, "--dataset_test_split",
             "none", "--max_steps", "1", "--optim", "sgd", "--learning_rate", "0.5", "--max_grad_norm", "0",
             "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--report_to", "none",
             "--seed", "0"]
    run([BIN / "prm-train", *flags, "--output_dir", tmp_path / "one", "--per_device_train_batch_size", "8"],
        cwd=tmp_path)
    one_log, one = step_one(tmp_path / "one")
    set_seed(0)  # prm-train seeds before loading, so this is the model every run started from
    start = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2).state_dict()
    names = sorted(one)
    one_update = torch.cat([(one[name] - start[name]).flatten() for name in names])
    assert one_update.abs().max() > 0
    # The loss is normalized over the global batch either way: average_tokens_across_devices changes nothing.
    for average in ("--average_tokens_across_devices", "--no_average_tokens_across_devices"):
        out = tmp_path / average.lstrip("-")
        run([*launch(2), *flags, "--output_dir", out, "--per_device_train_batch_size", "2",
             "--gradient_accumulation_steps", "2", average], cwd=tmp_path, env=CPU_PROCESSES)
        two_log, two = step_one(out)
        assert two_log["loss"] == pytest.approx(one_log["loss"], rel=1e-4), average
        assert two_log["grad_norm"] == pytest.approx(one_log["grad_norm"], rel=1e-4), average
        two_update = torch.cat([(two[name] - start[name]).flatten() for name in names])
        assert float((two_update - one_update).norm() / one_update.norm()) < 1e-4, average


HANG_FLAGS = ["--use_peft", "--max_steps", "3", "--no_average_tokens_across_devices", "--dataset_test_split", "none"]


@pytest.mark.slow
def test_two_process_run_exits_every_time(tmp_path, tiny_model_path, saved_dataset):
    """The command that hung after saving in 3 of 5 runs (a gloo deadlock at process-group teardown)."""
    for attempt in range(3):
        out = tmp_path / f"prm-{attempt}"
        run([*launch(2), "--model_name_or_path", tiny_model_path, "--dataset_name", saved_dataset, *HANG_FLAGS,
             "--output_dir", out, "--report_to", "none"], cwd=tmp_path, env=CPU_PROCESSES, timeout=180)
        assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()


# ---------------------------------------------------------------- --help


def test_help_shows_our_options_first_and_groups_the_inherited_ones():
    text = make_parser(prog="prm-train").format_help()
    titles = ["prm-train options:", "PRM training options (PRMConfig):", "model options (trl.ModelConfig):",
              "training options inherited from transformers.TrainingArguments:"]
    positions = [text.index(title) for title in titles]
    assert positions == sorted(positions)
    assert text.startswith("usage: prm-train [--config FILE.yaml] --model_name_or_path MODEL --dataset_name DATASET")
    ours, prm, model, inherited = (text[a:b] for a, b in zip(positions, [*positions[1:], len(text)]))
    assert "--dataset_options" in ours and "--label_type {hard,soft}" in prm and "--max_prompt_length" in prm
    assert "--lora_r" in model and "--gradient_accumulation_steps" in inherited and "--label_type" not in inherited


def test_help_is_cached_and_prints_without_importing_torch(tmp_path):
    from prm_trainer.cli_help import print_help

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    code = "import sys; sys.argv = ['prm-train', '--help']; from prm_trainer.cli import main; main()"
    # The first --help renders the text with the real parser and caches it (done here, where it is already imported).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path))
        print_help(make_parser, "prm-train")
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                            env=env, check=True)
    assert result.stdout == make_parser(prog="prm-train").format_help()
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers", "trl", "datasets"}, sorted(imported & {"torch", "trl"})
