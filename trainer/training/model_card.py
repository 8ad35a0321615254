"""The model card of a trained PRM: what it is, how to score steps with it, what data and settings trained it.

`prm-eval --update-card` adds score sections to the same README.md between `<!-- prm-eval:NAME:begin/end -->`
markers; writing the card again keeps them.
"""

import json
import os
import re
from collections import Counter
from pathlib import Path

from prm_builder.common.redact import public_value, without_credentials

_MODEL_CARD = """\
# {name}

A process reward model (PRM): it scores every step of a step-by-step solution with the probability that the step is
still correct. {origin}

## Scoring steps

Join the prompt and the steps, each step followed by the separator `"{separator}"`; the score of a step is the softmax
probability of label 1 (`correct`) at the step's last token, its separator. The separator and truncation it was
trained with are in `prm_step_format.json` beside the weights; `PRMReward` and `prm-eval` score with them by default.
With prm-builder installed (`pip install prm-builder`), this prints each step's score:

```python
from prm_trainer import PRMReward

prm = PRMReward("{repo}", step_separator="{separator}")  # {kind}
problem = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?")
steps = ["In May she sold 48 / 2 = 24 clips.", "In April and May she sold 48 + 24 = 72 clips.", "The answer is 72"]
scores = prm.step_scores([problem], ["{separator}".join(steps)])[0]
for step, score in zip(steps, scores):
    print(f"{{score:.3f}}  {{step}}")
```

`PRMReward` is also a reward function for TRL's `GRPOTrainer` (the lowest step score by default).

<!-- prm-train:training-data:begin -->
## Training data

{data}
<!-- prm-train:training-data:end -->

## Training

The loss is the cross-entropy over the labelled step tokens (each step's last token), averaged over all of them in
the global batch.

- step separator: `"{separator}"`, max length: {args.max_length}, max prompt length: {args.max_prompt_length}, \
last step only: {args.train_on_last_step_only}
- learning rate: {args.learning_rate}, optimizer steps: {steps}, batch size per device: \
{args.per_device_train_batch_size}, gradient accumulation: {args.gradient_accumulation_steps}, \
devices: {args.world_size}
{evaluation}
## Reproducing

{reproducing}

## Method

Step-level supervision of a verifier, as in Uesato et al., 2022, *Solving math word problems with process- and
outcome-based feedback* (arXiv:2211.14275) and Lightman et al., 2023, *Let's Verify Step by Step* (arXiv:2305.20050).
"""


# Blocks that `prm-eval --update-card` writes into a card; kept when the trainer writes the card again.
_EVAL_SECTIONS = re.compile(r"<!-- prm-eval:([\w-]+):begin -->.*?<!-- prm-eval:\1:end -->", re.DOTALL)


def describe_data(dataset) -> dict:
    """Builder, config and row counts (per `source` when the rows have one) of a dataset, for the model card."""
    import datasets

    info = getattr(dataset, "info", None)
    description = {
        "builder": getattr(info, "dataset_name", None) or getattr(info, "builder_name", None),
        "config": getattr(info, "config_name", None),
    }
    if isinstance(dataset, datasets.Dataset):
        description["rows"] = len(dataset)
        if "source" in dataset.column_names:
            description["sources"] = dict(Counter(dataset["source"]).most_common())
    return description


def training_data_section(data: dict, dropped: dict, args, dataset_name=None, dataset_options=None) -> str:
    """The card's "Training data" list: dataset, prm-builder config and options, rows (dropped ones by reason),
    rows per source, label type."""
    lines = [f"- dataset: `{public_value(dataset_name)}`" if dataset_name else None]
    if data.get("builder") == "prm_builder" and data.get("config"):
        lines.append(f"- built with prm-builder, config `{data['config']}`")
    if dataset_options:
        # An option named like a secret (`token=...`) is hidden whatever its value looks like.
        lines.append("- options: " + ", ".join(
            f"`{key}={public_value(without_credentials(value, key))}`" for key, value in dataset_options.items()))
    if "rows" in data:
        details = ", ".join(f"{count} {reason}" for reason, count in dropped.items())
        lines.append(f"- training rows: {data['rows']}" + (f" ({sum(dropped.values())} dropped: {details})"
                                                           if dropped else ""))
    if data.get("sources"):
        lines.append("- rows per source: " + ", ".join(f"`{key}` {count}" for key, count in data["sources"].items()))
    lines.append(f"- labels: {args.label_type}, from the `{args.label_column}` column")
    return "\n".join(line for line in lines if line)


# The libraries whose versions decide what a run computes, as their distributions are named.
LIBRARIES = ("prm-builder", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")


def base_model_label(base_model: str | None) -> tuple[str | None, str | None]:
    """(Hub id for the card's metadata or None, how the card names the base model). A local folder is named by its
    folder name: its absolute path means nothing on another machine, and may say more than its owner wants."""
    if not base_model:
        return None, None
    if os.path.isdir(base_model) or os.path.isabs(base_model):
        return None, f"`{Path(base_model).name}` (a local folder)"
    return base_model, f"[{base_model}](https://huggingface.co/{base_model})"


def library_versions() -> str:
    """`name version` of every installed library of `LIBRARIES`, comma-separated."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def hardware(args) -> str:
    """What trained the model: processes times the device (the GPU's name, or the CPU)."""
    import platform

    import torch

    processes = args.world_size
    if not args.use_cpu and torch.cuda.is_available():
        device = torch.cuda.get_device_name(torch.cuda.current_device())
    elif not args.use_cpu and torch.accelerator.is_available():
        device = str(torch.accelerator.current_accelerator())
    else:
        device = f"CPU ({platform.machine() or 'unknown'}, {os.cpu_count()} cores)"
    return f"{processes} x {device}" if processes > 1 else device


def run_time(log_history: list[dict]) -> str | None:
    """The training run's wall time, from the `train_runtime` the Trainer logs at the end of `train()`."""
    seconds = next((entry["train_runtime"] for entry in reversed(log_history) if "train_runtime" in entry), None)
    if seconds is None:
        return None
    if seconds < 600:
        return f"{seconds:.1f} s"
    return f"{seconds / 3600:.2f} h ({seconds:.0f} s)"


def reproducing_section(args, base_label: str, log_history: list[dict]) -> str:
    """The card's "Reproducing" list: base model, seed, library versions, date, run time and hardware."""
    import datetime

    duration = run_time(log_history)
    lines = [
        f"- base model: {base_label or 'not recorded'}",
        f"- seed: {args.seed}" + (f", data seed: {args.data_seed}" if args.data_seed is not None else ""),
        f"- libraries: {library_versions()}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d} (UTC, when this card was written)",
        f"- run time: {duration} of training" if duration
        else "- run time: not recorded yet (a checkpoint of a run still training)",
        f"- hardware: {hardware(args)}" + (", bf16" if args.bf16 else ", fp16" if args.fp16 else ", fp32"),
    ]
    return "\n".join(lines)


def write_model_card(trainer, model_name=None, dataset_name=None, tags=None, eval_results=None, dataset_options=None):
    """Write `README.md` into `trainer.args.output_dir` (see `PRMTrainer.create_model_card`)."""
    from huggingface_hub import ModelCard, ModelCardData
    from peft import PeftModel

    args = trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    is_peft = isinstance(model, PeftModel)
    base_model = getattr(model.config, "_name_or_path", None)
    if is_peft:
        base_model = model.peft_config[model.active_adapter].base_model_name_or_path or base_model
    # The metadata takes Hub ids only; the text names a local folder by its name.
    base_model, base_label = base_model_label(base_model)
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    tags = sorted(set(tags) | set(trainer._tag_names) | {"process-reward-model", "token-classification"})
    is_hub_dataset = bool(dataset_name) and not os.path.exists(dataset_name) and ":" not in dataset_name
    card_data = ModelCardData(
        base_model=base_model,
        library_name="peft" if is_peft else "transformers",
        tags=tags,
        datasets=[dataset_name] if is_hub_dataset else None,
        pipeline_tag="token-classification",
    )
    name = model_name or Path(args.output_dir).name
    repo = trainer.hub_model_id or name
    kind = "a LoRA adapter: its base model is loaded with it" if is_peft else "the whole model"
    evaluation = ""
    if eval_results:
        rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in eval_results.items()]
        evaluation = "\n## Evaluation\n\n| metric | value |\n| --- | --- |\n" + "\n".join(rows) + "\n"
    origin = (
        (f"Fine-tuned from {base_label}" if base_label else "Trained")
        + (" with LoRA" if is_peft else "")
        + " with prm-builder's `PRMTrainer`"
        + (f" on `{public_value(dataset_name)}`." if dataset_name else ".")
    )
    data = training_data_section(
        trainer.training_data, trainer.dropped_rows.get("train") or {}, args, dataset_name, dataset_options
    )
    body = _MODEL_CARD.format(
        name=name, origin=origin, kind=kind, repo=repo, evaluation=evaluation, data=data,
        reproducing=reproducing_section(args, base_label, trainer.state.log_history),
        separator=json.dumps(args.step_separator)[1:-1], args=args, steps=trainer.state.global_step,
    )
    path = Path(args.output_dir, "README.md")
    kept = [match.group(0) for match in _EVAL_SECTIONS.finditer(path.read_text(encoding="utf-8"))] \
        if path.is_file() else []
    body = body.rstrip("\n") + "".join(f"\n\n{section}" for section in kept) + "\n"
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}").save(str(path))
