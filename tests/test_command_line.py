"""The one convention of prm-builder, prm-train and prm-eval: both spellings of every flag, no prefixes, unknown flags
named with the closest one, exit 2 for usage errors and 1 for runtime errors, one line each, local paths checked at
once (prm_builder/command_line.py), and a reader that stops reading ends a command quietly."""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from prm_builder import cli as builder_cli
from prm_builder.command_line import closest_flag, looks_local, missing_path, other_spelling, parsers_of
from prm_trainer import cli as train_cli
from prm_trainer import eval_cli

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
# Values tried, in order, for a flag that takes one, until the parser accepts it (choices are tried first).
SAMPLE_VALUES = ["1", "gsm8k", "min", "train=a.jsonl", "x", "None"]


def _variants(action: argparse.Action) -> list[list[str]]:
    if action.nargs == 0:
        return [[]]
    if action.choices:
        return [[str(next(iter(action.choices)))]]
    return [[value] for value in SAMPLE_VALUES]


def _parse(parser, argv):
    """argparse's namespace for `argv`, or None where argparse refuses it (our error exits with SystemExit)."""
    try:
        namespace, rest = parser.parse_known_args(argv)
    except SystemExit:
        return None
    return None if rest else vars(namespace)


def _both_spellings_parse_alike(parser, base: list[str], prefix: list[str] = ()) -> int:
    """For every flag of `parser` with a `_` or `-` in its name: both spellings give the same namespace. Returns the
    number of flags checked."""
    checked = 0
    for action in parser._actions:
        for flag in action.option_strings:
            other = other_spelling(flag)
            if other is None or action.dest == "help":
                continue
            for value in _variants(action):
                given = _parse(parser, [*prefix, *base, flag, *value])
                if given is None:
                    continue
                assert _parse(parser, [*prefix, *base, other, *value]) == given, (flag, other, value)
                checked += 1
                break
            else:
                pytest.fail(f"no sample value parses for {flag} ({action})")
    return checked


def test_every_prm_builder_flag_takes_both_spellings(capsys):
    parser = builder_cli.make_parser()
    checked = _both_spellings_parse_alike(parser, [])
    # Each command and config, with what it requires.
    commands = {"stats": ["stats", "d"], "tiny-model": ["tiny-model", "d"], "cache list": ["cache", "list"],
                "cache clear": ["cache", "clear"], "cache repair": ["cache", "repair", "k"], "report": ["report", "d", "--output", "r.html"]}
    for name in builder_cli._configs():
        commands[f"build {name}"] = ["build", name, "--output-dir", "o"]
        commands[f"push {name}"] = ["push", name]
    for command, base in commands.items():
        sub = parser
        for word in command.split():
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        for action in sub._actions:
            for flag in action.option_strings:
                other = other_spelling(flag)
                if other is None or action.dest == "help":
                    continue
                for value in _variants(action):
                    given = _parse(parser, [*base, flag, *value])
                    if given is not None:
                        assert _parse(parser, [*base, other, *value]) == given, (command, flag)
                        checked += 1
                        break
                else:
                    pytest.fail(f"{command}: no sample value parses for {flag}")
    assert checked > 60  # every option of the five configs, build's and push's own, cache's, tiny-model's


def test_every_prm_eval_flag_takes_both_spellings():
    checked = _both_spellings_parse_alike(eval_cli.make_parser(), ["--model", "m", "--benchmark", "built"])
    assert checked >= 10  # --step_separator, the three lengths, --batch_size, --scores_dir, --update-card, ...


def test_every_prm_train_flag_takes_both_spellings():
    parser = train_cli.make_parser(prog="prm-train")
    assert _both_spellings_parse_alike(parser, []) > 150  # PRMConfig, TrainingArguments, ModelConfig, ours


@pytest.mark.parametrize(
    ("command", "argv", "line"),
    [
        ("prm-builder", ["build", "synthetic", "--problem", "sample", "--output-dir", "o"],
         "prm-builder build synthetic: error: unknown flag --problem (did you mean --problems?) "
         "(see prm-builder build synthetic --help)"),
        ("prm-builder", ["stats", "d", "--jsn"],
         "prm-builder stats: error: unknown flag --jsn (did you mean --json?) (see prm-builder stats --help)"),
        ("prm-eval", ["--model", "m", "--benchmark", "processbench", "--subset", "gsm8k"],
         "prm-eval: error: unknown flag --subset (did you mean --subsets?) (see prm-eval --help)"),
        ("prm-eval", ["--model", "m", "--benchmark", "processbench", "--scores-dir"],
         "prm-eval: error: argument --scores_dir: expected one argument (see prm-eval --help)"),
        ("prm-train", ["--max_stpes", "1", "--output_dir", "o"],
         "prm-train: error: unknown flag --max_stpes (did you mean --max_steps?) (see prm-train --help)"),
        ("prm-train", ["--max-step", "1", "--output_dir", "o"],  # a prefix is not taken for the flag
         "prm-train: error: unknown flag --max-step (did you mean --max-steps?) (see prm-train --help)"),
        ("prm-train", ["--model_name_or_path", "m", "--dataset_name", "d"],
         "prm-train: error: --output_dir is required: the folder to save the trained model to "
         "(see prm-train --help)"),
        ("prm-train", ["--output_dir", "o", "--eval_metric", "f1"],
         "prm-train: error: argument --eval_metric/--eval-metric: invalid choice: 'f1' (choose from "
         "'step_accuracy', 'first_error_f1', 'best_of_n', 'all') (see prm-train --help)"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(command, argv, line, capsys):
    with pytest.raises(SystemExit) as raised:
        run_in_process(command, argv)
    assert raised.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def run_in_process(command: str, argv: list[str]) -> int:
    if command == "prm-builder":
        return builder_cli.main(argv)
    if command == "prm-eval":
        return eval_cli.main(argv)
    return train_cli.command_line(argv)


def test_prm_train_unknown_key_in_the_config_file(tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text("model_name_or_path: m\nlearning_rte: 0.1\noutput_dir: o\n")
    with pytest.raises(SystemExit) as raised:
        train_cli.command_line(["--config", str(config)])
    assert raised.value.code == 2
    assert capsys.readouterr().err == (
        f"prm-train: error: --config {config}: unknown key learning_rte (did you mean learning_rate?) "
        "(see prm-train --help)\n"
    )


def test_prm_train_config_file_missing_or_not_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        train_cli.command_line(["--config", "recipe.yml", "--output_dir", "o"])
    assert raised.value.code == 2
    assert capsys.readouterr().err == "prm-train: error: --config 'recipe.yml': no such file (see prm-train --help)\n"
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SystemExit) as raised:
        train_cli.command_line(["--config", "list.yaml", "--output_dir", "o"])
    assert raised.value.code == 2
    assert capsys.readouterr().err == ("prm-train: error: Config file list.yaml must contain a YAML mapping. "
                                       "(see prm-train --help)\n")


def test_prm_train_dataset_name_missing_is_a_usage_error(tmp_path, tiny_model_path, capsys):
    code = train_cli.command_line(["--model_name_or_path", str(tiny_model_path), "--output_dir", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.startswith("prm-train: error: --dataset_name is required: prm_builder:CONFIG")


# ---------------------------------------------------------------- local paths: at once, named


def _saved_dataset(folder: Path) -> Path:
    rows = [{"prompt": "1+1?", "completions": ["1+1=2", "so 2"], "labels": [True, True]}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows)}
                         ).save_to_disk(folder)
    return folder


LOCAL_PATH_CASES = [
    # (command, argv, the error line after "<command>: error: "), {tmp} is the test's folder, {tiny} the tiny model
    ("prm-train", ["--model_name_or_path", "./no_such_prm", "--dataset_name", "data", "--output_dir", "o"],
     "--model_name_or_path './no_such_prm': no such folder ({tmp}/no_such_prm does not exist)"),
    ("prm-train", ["--model_name_or_path", "{tiny}", "--dataset_name", "./dta", "--output_dir", "o"],
     "--dataset_name './dta': no such folder ({tmp}/dta does not exist); did you mean data?"),
    ("prm-train", ["--model_name_or_path", "{tiny}", "--dataset_name=data/ms", "--output_dir", "o"],
     "--dataset_name 'data/ms': no such folder ({tmp}/data/ms does not exist)"),
    ("prm-train", ["--model_name_or_path", "data", "--dataset_name", "data", "--output_dir", "o"],
     "--model_name_or_path 'data' is a folder but not a model (no config.json, nor adapter_config.json for a LoRA "
     "adapter); it holds dataset_dict.json, test/, train/; it looks like a dataset saved by `prm-builder build`: "
     "pass it as data, not as the model"),
    ("prm-train", ["--model_name_or_path", "{tiny}", "--dataset_name", "{tiny}", "--output_dir", "o"],
     "--dataset_name '{tiny}' is a folder but neither a dataset saved by `prm-builder build` (no dataset_dict.json) "
     "nor a folder of data files (.jsonl, .json, .jsonl.gz, .json.gz, .parquet, .csv); it holds config.json, "
     "generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json; it looks like a model "
     "(config.json): pass it as a model, not as data"),
    ("prm-eval", ["--model", "./no_such_prm", "--benchmark", "processbench"],
     "--model './no_such_prm': no such folder ({tmp}/no_such_prm does not exist)"),
    ("prm-eval", ["--model", "{tiny}", "--benchmark", "processbench", "--data", "~/no/such/pb"],
     "--data '~/no/such/pb': no such folder ({home}/no/such/pb does not exist); the first existing folder above it "
     "is {home}"),
    ("prm-eval", ["--model", "{tiny}", "--benchmark", "best_of_n", "--candidates", "./c.jsonl"],
     "--candidates './c.jsonl': no such file ({tmp}/c.jsonl does not exist)"),
    ("prm-eval", ["--model", "{tiny}", "--benchmark", "built", "--dataset", "empty"],
     "--dataset 'empty' is a folder but neither a dataset saved by `prm-builder build` (no dataset_dict.json) nor "
     "a folder of data files (.jsonl, .json, .jsonl.gz, .json.gz, .parquet, .csv); it holds nothing (it is empty); "
     "build one with `prm-builder build CONFIG --output-dir DIR`"),
]


@pytest.mark.parametrize(("command", "argv", "line"), LOCAL_PATH_CASES)
def test_local_paths_fail_at_once_naming_them(command, argv, line, tmp_path, tiny_model_path, monkeypatch, capsys):
    """Exit 1, one line, and in well under 5 s: nothing heavy (torch, transformers, datasets' loading) is reached."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "empty").mkdir()
    _saved_dataset(tmp_path / "data")
    fill = {"{tmp}": str(tmp_path.resolve()), "{tiny}": str(tiny_model_path), "{home}": str(tmp_path / "home")}
    argv = [_fill(arg, fill) for arg in argv]
    capsys.readouterr()  # the progress bars of saving the dataset above
    start = time.perf_counter()
    code = run_in_process(command, argv)
    elapsed = time.perf_counter() - start
    assert (code, capsys.readouterr().err) == (1, f"{command}: error: {_fill(line, fill)}\n")
    assert elapsed < 5


def _fill(text: str, fill: dict) -> str:
    for key, value in fill.items():
        text = text.replace(key, value)
    return text


def test_local_path_checks_import_nothing_heavy(tmp_path):
    """The same failures as a user meets them, from a fresh interpreter: torch and transformers are never imported
    (building prm-train's parser alone imports both, seconds on a loaded machine)."""
    code = (
        "import sys\n"
        "from prm_trainer.cli import command_line\n"
        "from prm_trainer.eval_cli import main\n"
        "a = command_line(['--model_name_or_path', './nope', '--dataset_name', 'x', '--output_dir', 'o'])\n"
        "b = main(['--model', 'nope/x/y', '--benchmark', 'processbench'])\n"
        "print(a, b, sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout == "1 1 []\n"
    assert result.stderr.count("\n") == 2 and "Traceback" not in result.stderr


def test_debug_keeps_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert eval_cli.main(["--model", "./gone", "--benchmark", "processbench", "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith(f"prm-eval: error: --model './gone': no such folder ({tmp_path.resolve()}/gone does not "
                        "exist)\n")


def test_prm_train_debug_and_paths_from_the_config_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text("model_name_or_path: ./gone\ndataset_name: prm_builder:synthetic\n")
    line = (f"prm-train: error: --model_name_or_path './gone': no such folder ({tmp_path.resolve()}/gone does not "
            "exist)\n")
    assert train_cli.command_line(["--config", "recipe.yaml", "--output_dir", "o"]) == 1
    assert capsys.readouterr().err == line
    assert train_cli.command_line(["--config", "recipe.yaml", "--output-dir", "o", "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.endswith(line)


def test_offline_hub_dataset_names_what_was_asked(tmp_path, tiny_model_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = train_cli.command_line(["--model_name_or_path", str(tiny_model_path), "--dataset_name", "ms",
                                   "--output_dir", str(tmp_path / "o"), "--report_to", "none"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"prm-train: error: --dataset_name 'ms' is not a local folder (no folder {tmp_path.resolve()}/ms here) and "
        "could not be loaded from the Hub (HF_HUB_OFFLINE is set and no copy is in the cache): pass a folder saved "
        "by `prm-builder build`, prm_builder:CONFIG, or a Hub dataset id\n"
    )


def test_offline_hub_model_names_the_flag_that_takes_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _saved_dataset(tmp_path / "data")
    capsys.readouterr()
    code = train_cli.command_line(["--model_name_or_path", "Qwen/Qwen2.5-0.5B", "--dataset_name", "data",
                                   "--output_dir", str(tmp_path / "o"), "--report_to", "none"])
    assert code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "prm-train: error: could not reach https://huggingface.co/Qwen/Qwen2.5-0.5B/resolve/main/ (HF_HUB_OFFLINE is "
        "set and no copy is in the cache): the model Qwen/Qwen2.5-0.5B is not in the local Hugging Face cache; "
        "download it once with network (hf download Qwen/Qwen2.5-0.5B) or pass --model_name_or_path with a local "
        "folder"
    )


# ---------------------------------------------------------------- the pieces


def test_looks_local_and_missing_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "synthetic").mkdir()
    assert [looks_local(v) for v in ["ms", "Qwen/Qwen2.5", "./ms", "../ms", "~/ms", "/ms", "a/b/c", "out/ms", "ms/"]] \
        == [False, False, True, True, True, True, True, True, True]
    assert missing_path("out/synthetic", "--x", "folder") is None  # exists
    assert missing_path("Qwen/Qwen2.5", "--x", "folder") is None  # a Hub id: the Hub answers
    assert missing_path("out/synthetc", "--x", "folder") == (
        f"--x 'out/synthetc': no such folder ({tmp_path.resolve()}/out/synthetc does not exist); "
        "did you mean out/synthetic?"
    )


def test_closest_flag_ignores_the_spelling():
    # Suggested in the spelling the user chose (both are valid).
    assert closest_flag("--output-dri", ["--output_dir", "--seed"]) == "--output-dir"
    assert closest_flag("--output_dri", ["--output-dir", "--seed"]) == "--output_dir"
    assert closest_flag("--zzz", ["--output_dir", "--seed"]) is None


def test_no_parser_takes_prefixes():
    for parser in (builder_cli.make_parser(), eval_cli.make_parser()):
        assert all(not each.allow_abbrev for each in parsers_of(parser))


# ---------------------------------------------------------------- quiet output


def test_tiny_model_prints_one_line(tmp_path, capfd):
    assert builder_cli.main(["tiny-model", str(tmp_path / "tiny")]) == 0
    assert capfd.readouterr().out == (
        f"wrote a tiny Qwen2 and its tokenizer to {tmp_path / 'tiny'} (untrained: for trying the commands offline)\n"
    )


def test_stats_into_a_closed_pipe_is_quiet(tmp_path):
    """`prm-builder stats DIR | head -1`: the reader is gone before the summary is written. A pipe whose read end is
    closed makes every write fail at once, so the test does not depend on timing."""
    assert builder_cli.main(["build", "synthetic", "--problems", "sample", "--max-examples", "4",
                             "--output-dir", str(tmp_path / "data")]) == 0
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as stdout:
        result = subprocess.run([str(BIN / "prm-builder"), "stats", str(tmp_path / "data")], stdout=stdout,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (141, "")


def test_readme_outputs_are_ignored_by_git():
    folders = ["tiny/config.json", "prm/adapter_config.json", "out/synthetic/dataset_dict.json", "best_of_n.png",
               "report.html"]
    result = subprocess.run(["git", "check-ignore", *folders], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.split() == folders


def test_trl_checkpointing_names_do_not_warn(tmp_path):
    """TRL's PRMConfig documents `gradient_checkpointing`; transformers deprecated it for `activation_checkpointing`.
    PRMConfig takes the TRL name as the new one, so no FutureWarning reaches the user, and the value holds."""
    import warnings

    from prm_trainer import PRMConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        config = PRMConfig(output_dir=str(tmp_path), gradient_checkpointing=False,
                           gradient_checkpointing_kwargs={"use_reentrant": False})
    assert (config.activation_checkpointing, config.gradient_checkpointing) == (False, False)
    assert config.gradient_checkpointing_kwargs == config.activation_checkpointing_kwargs == {"use_reentrant": False}


@pytest.mark.parametrize(("typed", "meant"), [("\\n", "\n"), ("\\n\\n", "\n\n"), ("é\\n", "é\n"), (" | ", " | "),
                                              ("\\t;", "\t;")])
def test_read_escapes_reads_a_typed_separator_as_python_would(typed, meant):
    # prm-train, prm-eval and prm-builder report read --step-separator through this one function.
    from prm_builder.command_line import read_escapes

    assert read_escapes(typed) == meant
