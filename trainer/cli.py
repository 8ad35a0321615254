"""prm-train: train a process reward model, evaluate it on the test split, save it with a model card.

    prm-train --model_name_or_path Qwen/Qwen2.5-0.5B \
        --dataset_name prm_builder:synthetic --dataset_options problems=gsm8k max_examples=2000 \
        --use_peft --lora_r 16 --output_dir qwen2.5-0.5b-prm

    accelerate launch --num_processes 4 -m prm_trainer.cli --config recipe.yaml

`--dataset_name` is a prm_builder config (`prm_builder:synthetic`, `prm_builder:prm800k`, ...), a folder written by
`prm-builder build` (a DatasetDict saved with `save_to_disk`), or anything `datasets.load_dataset` accepts (a Hub id,
a local folder of data files). Every `PRMConfig` field and every `trl.ModelConfig` field is a flag, and `--config
FILE.yaml` sets any of them (command line flags win).
"""

import argparse
import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from prm_builder.command_line import (
    UsageError, follow_conventions, read_escapes, run_command, unknown_flags_message, usage_error,
)

from .common.data import built_options, load_prm_dataset, parse_dataset_options

EVAL_METRICS = ("step_accuracy", "first_error_f1", "best_of_n", "all")
NO_SPLIT = ("", "none", "None")


@functools.cache
def script_arguments_class():
    """`PRMScriptArguments`, defined on first use: its base, `trl.ScriptArguments`, takes half a second to import, and
    `prm-train --help` must start faster than that (see cli_help.py). Also importable as `cli.PRMScriptArguments`."""
    from trl import ScriptArguments

    from .training.mixture import MixtureArguments  # imports trl too

    @dataclass
    class PRMScriptArguments(ScriptArguments, MixtureArguments):
        """
        Arguments of `prm-train` beyond the training and model arguments.

        Parameters:
            dataset_name (`str`):
                `prm_builder:CONFIG` (built with `load_dataset("prm_builder", name=CONFIG, **dataset_options)`), a
                folder saved by `prm-builder build`, or a dataset `datasets.load_dataset` can load (e.g. a Hub id).
            dataset_config (`str`, *optional*):
                Configuration name passed to `load_dataset` as `name` (for `prm_builder`, an alternative to the
                `:CONFIG` suffix).
            dataset_options (`list[str]` or `dict`, *optional*):
                Builder options as `key=value` pairs, e.g. `--dataset_options problems=sample max_examples=200
                "strategies=[flip_number, change_operator]"`. Values are read as YAML (`20` is a number, `[a, b]` a
                list, `true` a boolean, anything else a string). A single JSON object works too, and so does a
                mapping under `dataset_options:` in the `--config` file.
            dataset_train_split (`str`, *optional*, defaults to `"train"`):
                Split to train on.
            dataset_test_split (`str`, *optional*, defaults to `"test"`):
                Split to evaluate on, during training when `--eval_strategy` is set and with `evaluate_reward_model`
                at the end. `none` skips evaluation.
            dataset_streaming (`bool`, *optional*, defaults to `False`):
                Inherited from TRL's scripts; not supported here (the test split is scored as a whole).
            ignore_bias_buffers (`bool`, *optional*, defaults to `False`):
                Leave boolean buffers out of DDP's synchronization (works around "invalid scalar type" errors).
            trust_remote_code (`bool`, *optional*, defaults to `False`):
                Allow models and tokenizers that ship their own code.
            eval_metric (`str`, *optional*, defaults to `"all"`):
                Metric of the final evaluation: `step_accuracy`, `first_error_f1`, `best_of_n` or `all`.
            eval_threshold (`float`, *optional*, defaults to `0.5`):
                A step is predicted correct when its score is at least this.
            eval_aggregation (`str`, *optional*, defaults to `"min"`):
                How best-of-N turns step scores into a solution score: `min`, `prod` or `last`.
        """

        dataset_name: str | None = field(
            default=None,
            metadata={
                "help": "`prm_builder:CONFIG`, a folder saved by `prm-builder build`, or a dataset that "
                "`datasets.load_dataset` can load (a Hub id, a folder of data files)."
            },
        )
        dataset_config: str | None = field(
            default=None,
            metadata={"help": "Configuration name passed to `load_dataset` (for prm_builder: instead of `:CONFIG`)."},
        )
        dataset_test_split: str = field(
            default="test",
            metadata={"help": "Split to evaluate on (during training with --eval_strategy, and at the end); `none` "
                      "skips evaluation."},
        )
        dataset_streaming: bool = field(
            default=False, metadata={"help": "Not supported by prm-train: the test split is scored as a whole."}
        )
        dataset_options: list[str] | None = field(
            default=None,
            metadata={
                "help": "Builder options as key=value pairs, values read as YAML, e.g. `--dataset_options "
                "problems=sample max_examples=200 'strategies=[flip_number, change_operator]'`; or one JSON object."
            },
        )
        trust_remote_code: bool = field(
            default=False,
            metadata={"help": "Allow models and tokenizers that ship their own code."},
        )
        eval_metric: str = field(
            default="all",
            metadata={"help": "Final evaluation metric.", "choices": list(EVAL_METRICS)},
        )
        eval_threshold: float = field(
            default=0.5,
            metadata={"help": "A step is predicted correct when its score is at least this."},
        )
        eval_aggregation: str = field(
            default="min",
            metadata={"help": "Best-of-N solution score from step scores.", "choices": ["min", "prod", "last"]},
        )

    PRMScriptArguments.__module__, PRMScriptArguments.__qualname__ = __name__, "PRMScriptArguments"
    return PRMScriptArguments


def __getattr__(name):
    if name == "PRMScriptArguments":
        return script_arguments_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl import ModelConfig, TrlParser

    from .training.config import PRMConfig

    from .cli_help import group_options

    dataclass_types = (script_arguments_class(), PRMConfig, ModelConfig)
    if subparsers is not None:
        parser = subparsers.add_parser("prm", help="Train a process reward model", dataclass_types=dataclass_types)
    else:
        parser = TrlParser(dataclass_types, prog=prog, allow_abbrev=False)
    # A PRM is a token classifier: LoRA's task type decides whether PEFT trains and saves the classification head.
    # No learning rate unless given: resolve_learning_rate picks one that suits LoRA or a full fine-tune.
    parser.set_defaults(lora_task_type="TOKEN_CLS", learning_rate=None)
    # --step_separator reads escapes as prm-eval does ('\n\n' in a shell: a blank line); --config values too.
    next(action for action in parser._actions if action.dest == "step_separator").type = read_escapes
    group_options(parser, *dataclass_types)
    return follow_conventions(parser)


def resolve_learning_rate(training_args, model_args) -> None:
    """With `--use_peft` and no learning rate given (flag or `--config`), train at a LoRA rate, not the full
    fine-tune default: 1e-5 barely moves adapters that start at zero in a short run."""
    from .training.config import LORA_LEARNING_RATE

    if model_args.use_peft and not getattr(training_args, "learning_rate_given", True):
        training_args.learning_rate = LORA_LEARNING_RATE
        if training_args.process_index == 0:
            print(f"learning rate {LORA_LEARNING_RATE:g} (prm-train's default with --use_peft; --learning_rate to "
                  "change it)", file=sys.stderr)


def load_splits(script_args, training_args):
    """The train split and the test split (None with `--dataset_test_split none`) that prm-train uses, checked.

    The one place prm-train gets its data from. Both splits are checked row by row (`check_rows`) before any model is
    loaded, so a bad row in the test split stops the run before training, not after. Also returns the builder options
    the data was made with (from `--dataset_options`, or the `prm_builder_options.json` that `prm-builder build`
    leaves in its output folder) and, for a `datasets:` mixture in `--config` (mixture.py), what each entry
    contributed; both go into the model card.
    """
    from .training.mixture import describe_mixture, load_mixture
    from .common.tokenization import check_rows

    options = parse_dataset_options(script_args.dataset_options)
    # The main process builds (or downloads) first; the others then read its cache.
    mixture_report = None
    with training_args.main_process_first(desc="loading the dataset"):
        if script_args.datasets:  # a `datasets:` mixture in --config (trainer/training/mixture.py)
            dataset, mixture_report = load_mixture(script_args, seed=training_args.seed)
        else:
            dataset = load_prm_dataset(script_args.dataset_name, script_args.dataset_config, options)
    if mixture_report and training_args.process_index == 0:
        print("Training data mixture (rows realised per dataset):\n" + describe_mixture(mixture_report))
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    if train_split not in dataset:
        raise ValueError(f"--dataset_train_split {train_split!r} is not a split of the dataset: {list(dataset)}")
    if test_split in NO_SPLIT:
        test_split = None
    elif test_split not in dataset:
        mixed = "a mixture has a test split only with test_split_size in --config; or " if script_args.datasets else ""
        raise ValueError(f"--dataset_test_split {test_split!r} is not a split of the dataset: {list(dataset)} "
                         f"({mixed}pass --dataset_test_split none to skip evaluation)")
    check_rows(dataset[train_split], train_split, training_args.label_column, training_args.label_type == "soft")
    if test_split:
        check_rows(dataset[test_split], test_split)  # evaluated against the hard labels
    if not options and not script_args.datasets:
        options = built_options(script_args.dataset_name)
    return dataset[train_split], dataset[test_split] if test_split else None, options, mixture_report


def evaluate_on_test_split(trainer, tokenizer, test, script_args, training_args) -> dict:
    """The final evaluation, as `evaluate_reward_model` computes it, on the test split that `load_splits` already
    checked: scored with the trainer's `StepFormat` (its separator and truncation), with a progress bar."""
    from .evaluating.evaluation import METRICS, built_figures, score_steps

    rows = list(test)
    scores = score_steps(trainer.model, tokenizer, rows, trainer.step_format,
                         batch_size=training_args.per_device_eval_batch_size, progress=True)
    metric = script_args.eval_metric
    metrics = [name for name in METRICS if name != "all"] if metric == "all" else [metric]
    return built_figures(scores, rows, script_args.eval_threshold, metrics, script_args.eval_aggregation)


def main(script_args=None, training_args=None, model_args=None):
    """Train, save, evaluate on the test split, write the model card and optionally push.

    With no arguments (the `prm-train` console script) the arguments come from `sys.argv` and `--config`, a failure is
    one line on stderr and the exit code is returned (2: the command line, 1: the run; see command_line.py). The
    evaluation is printed as JSON and written to `<output_dir>/prm_eval_results.json`.
    """
    if script_args is None:
        return command_line(sys.argv[1:])
    run_training(script_args, training_args, model_args)


def command_line(argv: list[str]) -> int:
    """prm-train on the command line: parse `argv`, train, and say where the model went; `--debug` keeps tracebacks."""
    if {"-h", "--help"} & set(argv):
        from .cli_help import print_help

        print_help(make_parser, "prm-train")
        return 0
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    # A mistyped local path fails here, in a fraction of a second: building the parser imports torch and transformers.
    failed = run_command("prm-train", lambda: check_paths(argv), debug=debug)
    if failed:
        return failed
    parser = make_parser(prog="prm-train")
    script_args, training_args, model_args = parse_command_line(parser, argv)

    def run():
        run_training(script_args, training_args, model_args, from_command_line=True)

    return run_command("prm-train", run, debug=debug, model=lambda: model_args.model_name_or_path,
                       model_flag="--model_name_or_path")


def parse_command_line(parser, argv: list[str]):
    """The three argument dataclasses; a mistake in a flag, its value or the --config file exits 2 with one line."""
    import yaml

    config = _config_file(argv)
    try:
        parsed = parser.parse_args_and_config(argv)
    except (ValueError, TypeError, OSError, yaml.YAMLError) as error:
        message = " ".join(str(error).split())
        unused = "Some specified arguments are not used by the HfArgumentParser: "
        from_config = "Unknown arguments from config file: "
        if message.startswith(unused):
            message = unknown_flags_message(_listed(message[len(unused):]), _flags(parser))
        elif message.startswith(from_config):
            flags = [flag for flag in _listed(message[len(from_config):].split(". Please")[0]) if flag.startswith("--")]
            # Keys of a YAML file are written with underscores: suggest them so.
            named = unknown_flags_message(["--" + flag[2:].replace("-", "_") for flag in flags], _flags(parser))
            message = f"--config {config}: {named.replace('unknown flag', 'unknown key').replace('--', '')}"
        elif isinstance(error, OSError) and config and not Path(config).is_file():
            message = f"--config {config!r}: no such file"
        usage_error("prm-train", message)
    if not _given(argv, config, "output_dir"):
        usage_error("prm-train", "--output_dir is required: the folder to save the trained model to")
    return parsed


def check_paths(argv: list[str]) -> None:
    """Refuse a `--model_name_or_path` or `--dataset_name` (from the command line, else --config) that looks local and
    is missing, or is a folder of the wrong kind, before anything heavy is imported."""
    from .common.data import check_dataset_folder
    from .common.loading import check_model_path

    config = _config_file(argv)
    for name, check in (("model_name_or_path", check_model_path), ("dataset_name", check_dataset_folder)):
        value = _value(argv, config, name)
        if isinstance(value, str) and value and not value.startswith("prm_builder"):
            check(value, f"--{name}")


def _value(argv: list[str], config: str | None, name: str):
    """The value of option `name` as given on the command line (the last one wins), else in the --config file."""
    flags = {f"--{name}", f"--{name.replace('_', '-')}"}
    value = None
    for index, arg in enumerate(argv):
        flag, equals, given = arg.partition("=")
        if flag in flags:
            value = given if equals else (argv[index + 1] if index + 1 < len(argv) else None)
    if value is not None or config is None or not Path(config).is_file():
        return value
    import yaml

    try:
        content = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None  # the parser reports it
    return content.get(name) if isinstance(content, dict) else None


def _flags(parser) -> list[str]:
    return sorted({flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")})


def _listed(text: str) -> list[str]:
    import ast

    try:
        return [str(item) for item in ast.literal_eval(text.strip())]
    except (ValueError, SyntaxError):
        return text.split()


def _config_file(argv: list[str]) -> str | None:
    return argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None


def _given(argv: list[str], config: str | None, name: str) -> bool:
    """Was option `name` set on the command line (either spelling, `=VALUE` too) or in the --config file?"""
    return _value(argv, config, name) not in (None, "")


def run_training(script_args, training_args, model_args, from_command_line: bool = False):
    """What `main` does once the arguments are parsed."""
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForTokenClassification, AutoTokenizer, set_seed
    from trl import get_peft_config, get_quantization_config

    from .common.loading import absolute_if_local, check_model_path, expected_head_report
    from .training.trainer import ID2LABEL, PRMTrainer

    if not script_args.dataset_name and not script_args.datasets:
        raise UsageError(
            "--dataset_name is required: prm_builder:CONFIG, a folder saved by `prm-builder build`, or a Hub dataset id"
            " (or a `datasets:` mixture in --config)"
        )
    if not model_args.model_name_or_path:
        raise UsageError("--model_name_or_path is required: a causal LM checkpoint (Hub id or folder)")
    if script_args.dataset_streaming:
        raise UsageError("--dataset_streaming is not supported: the test split is scored as a whole")
    resolve_learning_rate(training_args, model_args)
    if training_args.hub_token:
        # The Trainer pickles its arguments into every checkpoint (training_args.bin): the token would
        # be written in clear. huggingface_hub reads it from HF_TOKEN, in this process only.
        os.environ["HF_TOKEN"], training_args.hub_token = training_args.hub_token, None
    # Paths first, before any data is built or any Hub request is made.
    check_model_path(model_args.model_name_or_path, "--model_name_or_path")
    # Absolute, so that a LoRA adapter's config names a base model that loads from any folder.
    model_args.model_name_or_path = absolute_if_local(model_args.model_name_or_path)
    train, test, dataset_options, mixture_report = load_splits(script_args, training_args)

    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    model_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=script_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=dtype,
    )
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        device_map = {"": PartialState().local_process_index}
        model_kwargs.update(quantization_config=quantization_config, device_map=device_map)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=script_args.trust_remote_code,
    )
    # A causal LM checkpoint gets a fresh 2-label head (reported as MISSING, newly initialized: expected). Seeded, so
    # that `--seed` makes the whole run reproducible, the head's initial weights included.
    set_seed(training_args.seed)
    with expected_head_report():  # the new head, reported as MISSING, is what we asked for
        model = AutoModelForTokenClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=2, id2label=ID2LABEL,
            label2id={v: k for k, v in ID2LABEL.items()}, **model_kwargs,
        )
    if script_args.ignore_bias_buffers:
        model._ddp_params_and_buffers_to_ignore = [n for n, b in model.named_buffers() if b.dtype == torch.bool]

    trainer = PRMTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=test if test is not None and training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if mixture_report:
        from .training.mixture import with_mixture_in_card

        trainer.create_model_card = with_mixture_in_card(trainer.create_model_card, mixture_report)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)

    results = None
    if test is not None and trainer.is_world_process_zero():
        # One process scores the whole split, so the figures come from one pass; the others wait at the barrier below.
        results = {"split": script_args.dataset_test_split,
                   **evaluate_on_test_split(trainer, tokenizer, test, script_args, training_args)}
        print(json.dumps(results, indent=2))
        with open(os.path.join(training_args.output_dir, "prm_eval_results.json"), "w") as f:
            json.dump(results, f, indent=2)
    trainer.create_model_card(
        dataset_name=script_args.dataset_name, eval_results=results, dataset_options=dataset_options
    )
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name, eval_results=results,
                            dataset_options=dataset_options)
    if trainer.is_world_process_zero():
        print(f"saved the model to {os.path.abspath(training_args.output_dir)} (measure it with: prm-eval --model "
              f"{training_args.output_dir} --benchmark built --dataset DATASET)")
    # Every process meets here before the process group is destroyed. Without it a process that had nothing left to
    # do tore the group down while its last all-gather was still being released on gloo's worker thread: that thread
    # needs the GIL, which the destructor of the group (run when DDP is freed) holds while joining it, a deadlock.
    trainer.accelerator.wait_for_everyone()
    trainer.end()
    if from_command_line and trainer.accelerator.num_processes > 1:
        _leave_without_freeing_the_process_group()


def _leave_without_freeing_the_process_group() -> None:
    """End a finished multi-process run here, before DDP's reducer is freed and with it the last process group.

    The barrier above narrows the deadlock described there but cannot close it: the gloo thread releases a finished
    collective (and the Python tensors it held) some time after the collective returns, and freeing the reducer when
    main() returns destroys the group with the GIL held. Caught once in about 40 two-process runs under CI load
    (py-spy: the main thread in ~ProcessGroupGloo, called from the Reducer's dealloc, joining a gloo thread that waits
    for the GIL in ~AsyncAllgatherWork). Everything is saved and the trackers are finished by now, so output is
    flushed and the process leaves without running destructors. Only the command does this: a script that calls
    main() with its own arguments keeps its process.
    """
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
