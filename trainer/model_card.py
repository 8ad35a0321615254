"""The model card of a trained PRM: what it is, how to score steps with it, what data and settings trained it.

`prm-eval --update-card` adds score sections to the same README.md between `<!-- prm-eval:NAME:begin/end -->`
markers; writing the card again keeps them.
"""

import os
import re
from collections import Counter
from pathlib import Path

from prm_builder.redact import public_value, without_credentials

_MODEL_CARD = """\
# {name}

A process reward model (PRM): it scores every step of a step-by-step solution with the probability that the step is
still correct. {origin}

## Scoring steps

Join the prompt and the steps, each step followed by the separator `"{separator}"`; the score of a step is the softmax
probability of label 1 (`correct`) at the step's last token, its separator. The separator and truncation it was
trained with are in `prm_step_format.json` beside the weights; `PRMReward` and `prm-eval` score with them by default.

```python
from prm_trainer import evaluate_reward_model, load_prm

model, tokenizer = load_prm("{repo}")  # {load}
rows = [{{"prompt": "...", "completions": ["step 1", "step 2"], "labels": [True, True]}}]
print(evaluate_reward_model(model, tokenizer, rows, metric="step_accuracy", step_separator="{separator}"))
```

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
    # A local folder means nothing to a reader of the Hub page.
    if base_model and os.path.isdir(base_model):
        base_model = None
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
    # load_prm, not PEFT's AutoPeftModelForTokenClassification: PEFT 0.21 reads transformers' deprecated
    # `is_gradient_checkpointing` when it wraps the base model, a FutureWarning on every load that load_prm silences
    # for exactly that call; it also finds a base model kept beside the adapter.
    load = "the LoRA adapter on its base model, and the tokenizer" if is_peft else "the model and its tokenizer"
    evaluation = ""
    if eval_results:
        rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in eval_results.items()]
        evaluation = "\n## Evaluation\n\n| metric | value |\n| --- | --- |\n" + "\n".join(rows) + "\n"
    origin = (
        (f"Fine-tuned from [{base_model}](https://huggingface.co/{base_model})" if base_model else "Trained")
        + (" with LoRA" if is_peft else "")
        + " with prm-builder's `PRMTrainer`"
        + (f" on `{public_value(dataset_name)}`." if dataset_name else ".")
    )
    data = training_data_section(
        trainer.training_data, trainer.dropped_rows.get("train") or {}, args, dataset_name, dataset_options
    )
    body = _MODEL_CARD.format(
        name=name, origin=origin, load=load, repo=repo, evaluation=evaluation, data=data,
        separator=args.step_separator.encode("unicode_escape").decode(), args=args, steps=trainer.state.global_step,
    )
    path = Path(args.output_dir, "README.md")
    kept = [match.group(0) for match in _EVAL_SECTIONS.finditer(path.read_text(encoding="utf-8"))] \
        if path.is_file() else []
    body = body.rstrip("\n") + "".join(f"\n\n{section}" for section in kept) + "\n"
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}").save(str(path))
