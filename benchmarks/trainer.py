"""Training throughput of PRMTrainer against a plain transformers.Trainer, same model, same tokenized data, same run.

    python benchmarks/trainer.py                  # full fine-tuning and LoRA, accumulation 1 and 4, 5 repeats each
    python benchmarks/trainer.py --modes lora --accumulation 4 --steps 60 --repeats 7 --hidden-size 256 --layers 4

Both trainers get a fresh copy of the same initial weights, the same tokenized rows (made once with
`PRMTrainer.tokenize_row`, so PRMTrainer uses them as they are), the same collator, arguments, seed and so the same
batches in the same order, and dropout disabled in both. With gradient accumulation 4 the per-device batch is a quarter
of `--batch-size`, so the optimizer step sees the same rows. A third trainer, PRMTrainer with `label_type="soft"`,
trains on the same rows with float targets (each step's label as 0.0/1.0), to measure what soft labels cost.
Throughput is non-padding tokens per second after the warm-up steps, with each step timed from the end of the previous
one (data loading and collation included), in wall time and in CPU time of the process. Repeats rotate which trainer
goes first. Two summaries: the median run, and the sum over steps of each step's fastest run, which filters out bursts
of other work on a shared machine. The default model is deliberately small (a 2-layer Qwen2, hidden size 64), so any
per-step overhead of the trainer shows more, not less, than on a real model. It is built here with a byte-level BPE
trained on the repository's GSM8K sample (tests/data): no network needed.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

GSM8K = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k"
KINDS = ("Trainer", "PRMTrainer", "PRMTrainer soft")


def build_model(path: Path, texts: list[str], hidden_size: int, layers: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


class StepClock:
    """A callback recording, for each optimizer step, its wall and CPU duration (end of the previous step to its end,
    so data loading and collation count) and the non-padding tokens it consumed."""

    def __init__(self):
        from transformers import TrainerCallback

        self.steps = []  # (wall seconds, CPU seconds, tokens) per step
        outer = self

        def now(state):
            return time.perf_counter(), time.process_time(), state.num_input_tokens_seen

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                outer.last = now(state)

            def on_step_end(self, args, state, control, **kwargs):
                current = now(state)
                outer.steps.append(tuple(b - a for a, b in zip(outer.last, current)))
                outer.last = current

        self.callback = Callback()


def soft_features():
    """The tokenized rows' features with float labels: each step's 0/1 label becomes a soft target of 0.0/1.0."""
    import datasets

    return datasets.Features({"input_ids": datasets.List(datasets.Value("int64")),
                              "labels": datasets.List(datasets.Value("float32"))})


def run_once(kind: str, mode: str, model_path: Path, tokenized, args_kwargs: dict) -> list[tuple]:
    import torch
    from peft import LoraConfig, get_peft_model
    from prm_trainer import PRMConfig, PRMTrainer
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(model_path, num_labels=2)
    peft_config = LoraConfig(r=16, lora_alpha=32, task_type="TOKEN_CLS") if mode == "lora" else None
    meter = StepClock()
    if kind.startswith("PRMTrainer"):
        soft = kind.endswith("soft")
        trainer = PRMTrainer(model=model, args=PRMConfig(**args_kwargs, label_type="soft" if soft else "hard"),
                             train_dataset=tokenized.cast(soft_features()) if soft else tokenized,
                             processing_class=tokenizer, peft_config=peft_config, callbacks=[meter.callback])
    else:
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
        for module in model.modules():  # PRMTrainer disables dropout; do the same so both compute the same thing
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        trainer = Trainer(model=model, args=TrainingArguments(**args_kwargs), train_dataset=tokenized,
                          processing_class=tokenizer, data_collator=DataCollatorForTokenClassification(tokenizer),
                          callbacks=[meter.callback])
    trainer.train()
    return meter.steps


def summarize(runs: dict) -> dict:
    """Tokens/s per trainer (median run, and fastest run of each step), with PRMTrainer/Trainer and soft/hard."""
    figure = {}
    for kind, kind_runs in runs.items():
        # Same seed, same batches: step i has the same tokens in every run. Its fastest run is the one least
        # disturbed by whatever else the machine was doing, and the sum of those is the undisturbed training time.
        tokens = sum(step[2] for step in kind_runs[0])
        for clock, index in (("wall", 0), ("cpu", 1)):
            best = sum(min(run[i][index] for run in kind_runs) for i in range(len(kind_runs[0])))
            median = statistics.median(sum(step[index] for step in run) for run in kind_runs)
            figure.setdefault(f"{clock}, fastest run of each step", {})[kind] = tokens / best
            figure.setdefault(f"{clock}, median run", {})[kind] = tokens / median
    for row in figure.values():
        row["ratio"] = row["PRMTrainer"] / row["Trainer"]
        row["soft ratio"] = row["PRMTrainer soft"] / row["PRMTrainer"]
    return figure


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="full,lora", help="comma-separated: full, lora")
    parser.add_argument("--accumulation", default="1,4", help="comma-separated gradient accumulation steps")
    parser.add_argument("--rows", type=int, default=256, help="training rows (synthetic config)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the measurement")
    parser.add_argument("--repeats", type=int, default=5, help="runs per trainer and mode, interleaved")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 0 = torch's choice. One by default: with more, timings on a machine "
                        "shared with other work swing by 10%% and more from run to run, either way")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on for both (PRMConfig's default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args(argv)

    import datasets
    import torch
    from prm_trainer import PRMTrainer
    from transformers import AutoTokenizer

    import prm_builder  # noqa: F401  (registers the builder)

    datasets.disable_progress_bars()
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    problems = str(GSM8K) if GSM8K.is_dir() else "sample"
    rows = datasets.load_dataset("prm_builder", "synthetic", problems=problems, max_examples=options.rows)["train"]
    work = Path(tempfile.mkdtemp(prefix="prm-bench-"))
    texts = [row["prompt"] + "\n" + "\n".join(row["completions"]) for row in rows]
    build_model(work / "model", texts, options.hidden_size, options.layers)
    tokenizer = AutoTokenizer.from_pretrained(work / "model")

    start = time.perf_counter()
    tokenized = rows.map(
        PRMTrainer.tokenize_row, remove_columns=rows.column_names,
        fn_kwargs=dict(tokenizer=tokenizer, step_separator="\n", max_length=options.max_length,
                       max_completion_length=None, train_on_last_step_only=False, is_eval=False),
        features=datasets.Features({"input_ids": datasets.List(datasets.Value("int64")),
                                    "labels": datasets.List(datasets.Value("int64"))}),
    )
    tokenize_seconds = time.perf_counter() - start
    mean_length = sum(len(ids) for ids in tokenized["input_ids"]) / len(tokenized)

    args_kwargs = dict(
        output_dir=str(work / "out"), report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
        max_steps=options.steps, learning_rate=1e-4, logging_steps=10, bf16=False,
        activation_checkpointing=options.gradient_checkpointing, include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=False,
    )
    figures = {}
    for mode in options.modes.split(","):
        for accumulation in (int(steps) for steps in options.accumulation.split(",")):
            if options.batch_size % accumulation:
                raise ValueError(f"--batch-size {options.batch_size} is not a multiple of accumulation {accumulation}")
            run_kwargs = dict(args_kwargs, per_device_train_batch_size=options.batch_size // accumulation,
                              gradient_accumulation_steps=accumulation)
            runs = {kind: [] for kind in KINDS}
            for repeat in range(options.repeats):
                for kind in KINDS[repeat % 3 :] + KINDS[: repeat % 3]:  # rotate who goes first
                    runs[kind].append(run_once(kind, mode, work / "model", tokenized, run_kwargs)[options.warmup :])
            figures[f"{mode}, accumulation {accumulation}"] = summarize(runs)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Qwen2 hidden {options.hidden_size}, "
          f"{options.layers} layers; {len(tokenized)} rows of {mean_length:.0f} tokens on average; batch "
          f"{options.batch_size} per optimizer step; {options.steps} steps ({options.warmup} warm-up); activation "
          f"checkpointing {'on' if options.gradient_checkpointing else 'off'}; {options.repeats} runs per trainer")
    print(f"tokenize_row: {len(tokenized) / tokenize_seconds:.0f} rows/s\n")
    print("| run | tokens/s, time taken as | Trainer | PRMTrainer | PRMTrainer soft | PRMTrainer / Trainer | "
          "soft / hard |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for run, figure in figures.items():
        for label, row in figure.items():
            print(f"| {run} | {label} | {row['Trainer']:,.0f} | {row['PRMTrainer']:,.0f} | "
                  f"{row['PRMTrainer soft']:,.0f} | {row['ratio']:.3f} | {row['soft ratio']:.3f} |")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
