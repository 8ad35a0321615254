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

EVAL_METRICS = ("step_accuracy", "first_error_f1", "best_of_n", "all")
NO_SPLIT = ("", "none", "None")


@functools.cache
def script_arguments_class():
    """`PRMScriptArguments`, defined on first use: its base, `trl.ScriptArguments`, takes half a second to import, and
    `prm-train --help` must start faster than that (see cli_help.py). Also importable as `cli.PRMScriptArguments`."""
    from trl import ScriptArguments

    from .mixture import MixtureArguments  # imports trl too

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


def parse_dataset_options(options) -> dict:
    """`--dataset_options` as `load_dataset` keyword arguments, from `key=value` strings, a JSON object or a dict."""
    import yaml

    if options is None:
        return {}
    if isinstance(options, dict):
        return dict(options)
    if isinstance(options, str):
        options = [options]
    if len(options) == 1 and options[0].lstrip().startswith("{"):
        parsed = json.loads(options[0])
        if not isinstance(parsed, dict):
            raise ValueError(f"--dataset_options as JSON must be an object, got {options[0]!r}")
        return parsed
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--dataset_options expects key=value pairs, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return parsed


def load_prm_dataset(name: str, config: str | None = None, options: dict | None = None):
    """The dataset behind `--dataset_name`, as a DatasetDict."""
    import datasets

    options = options or {}
    if name == "prm_builder" or name.startswith("prm_builder:"):
        import prm_builder  # noqa: F401  (registers the "prm_builder" builder with datasets)

        suffix = name.partition(":")[2]
        if suffix and config and suffix != config:
            raise ValueError(f"--dataset_name {name!r} and --dataset_config {config!r} name different configs")
        config = suffix or config
        if not config:
            raise ValueError(
                f"--dataset_name {name!r} needs a config, e.g. prm_builder:synthetic (or --dataset_config synthetic)"
            )
        dataset = datasets.load_dataset("prm_builder", name=config, **options)
    elif Path(name, "dataset_dict.json").is_file() or Path(name, "state.json").is_file():
        if options or config:
            raise ValueError(
                f"{name} is a saved dataset: --dataset_config and --dataset_options apply to builders, got "
                f"config={config!r}, options={options}"
            )
        dataset = datasets.load_from_disk(name)
    else:
        dataset = datasets.load_dataset(name, name=config, **options)
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    return dataset


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl import ModelConfig, TrlParser

    from .config import PRMConfig

    from .cli_help import group_options

    dataclass_types = (script_arguments_class(), PRMConfig, ModelConfig)
    if subparsers is not None:
        parser = subparsers.add_parser("prm", help="Train a process reward model", dataclass_types=dataclass_types)
    else:
        parser = TrlParser(dataclass_types, prog=prog)
    # A PRM is a token classifier: LoRA's task type decides whether PEFT trains and saves the classification head.
    # No learning rate unless given: resolve_learning_rate picks one that suits LoRA or a full fine-tune.
    parser.set_defaults(lora_task_type="TOKEN_CLS", learning_rate=None)
    group_options(parser, *dataclass_types)
    return parser


def resolve_learning_rate(training_args, model_args) -> None:
    """With `--use_peft` and no learning rate given (flag or `--config`), train at a LoRA rate, not the full
    fine-tune default: 1e-5 barely moves adapters that start at zero in a short run."""
    from .config import LORA_LEARNING_RATE

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
    from .mixture import describe_mixture, load_mixture
    from .tokenization import check_rows

    options = parse_dataset_options(script_args.dataset_options)
    # The main process builds (or downloads) first; the others then read its cache.
    mixture_report = None
    with training_args.main_process_first(desc="loading the dataset"):
        if script_args.datasets:  # a `datasets:` mixture in --config (trainer/mixture.py)
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
        raise ValueError(
            f"--dataset_test_split {test_split!r} is not a split of the dataset: {list(dataset)} "
            "(pass --dataset_test_split none to skip evaluation)"
        )
    check_rows(dataset[train_split], train_split, training_args.label_column, training_args.label_type == "soft")
    if test_split:
        check_rows(dataset[test_split], test_split)  # evaluated against the hard labels
    built_with = Path(script_args.dataset_name or "", "prm_builder_options.json")
    if not options and script_args.dataset_name and built_with.is_file():
        options = json.loads(built_with.read_text()).get("options") or {}
    return dataset[train_split], dataset[test_split] if test_split else None, options, mixture_report


def evaluate_on_test_split(trainer, tokenizer, test, script_args, training_args) -> dict:
    """The final evaluation, as `evaluate_reward_model` computes it, on the test split that `load_splits` already
    checked: scored with the trainer's `StepFormat` (its separator and truncation), with a progress bar."""
    from .evaluation import METRICS, built_figures, score_steps

    rows = list(test)
    scores = score_steps(trainer.model, tokenizer, rows, trainer.step_format,
                         batch_size=training_args.per_device_eval_batch_size, progress=True)
    metric = script_args.eval_metric
    metrics = [name for name in METRICS if name != "all"] if metric == "all" else [metric]
    return built_figures(scores, rows, script_args.eval_threshold, metrics, script_args.eval_aggregation)


def main(script_args=None, training_args=None, model_args=None):
    """Train, save, evaluate on the test split, write the model card and optionally push.

    With no arguments (the `prm-train` console script) the arguments come from `sys.argv` and `--config`. The
    evaluation is printed as JSON and written to `<output_dir>/prm_eval_results.json`.
    """
    from_command_line = script_args is None
    if from_command_line:
        if {"-h", "--help"} & set(sys.argv[1:]):
            from .cli_help import print_help

            print_help(make_parser, "prm-train")
            return
        script_args, training_args, model_args = make_parser(prog="prm-train").parse_args_and_config()

    import torch
    from accelerate import PartialState
    from transformers import AutoModelForTokenClassification, AutoTokenizer, set_seed
    from trl import get_peft_config, get_quantization_config

    from .trainer import ID2LABEL, PRMTrainer

    if not script_args.dataset_name and not script_args.datasets:
        raise ValueError(
            "--dataset_name is required: prm_builder:CONFIG, a folder saved by `prm-builder build`, or a Hub dataset id"
            " (or a `datasets:` mixture in --config)"
        )
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required: a causal LM checkpoint (Hub id or folder)")
    if script_args.dataset_streaming:
        raise ValueError("--dataset_streaming is not supported: the test split is scored as a whole")
    resolve_learning_rate(training_args, model_args)
    if training_args.hub_token:
        # The Trainer pickles its arguments into every checkpoint (training_args.bin): the token would
        # be written in clear. huggingface_hub reads it from HF_TOKEN, in this process only.
        os.environ["HF_TOKEN"], training_args.hub_token = training_args.hub_token, None
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
    model = AutoModelForTokenClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
        **model_kwargs,
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
        from .mixture import with_mixture_in_card

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
    main()
