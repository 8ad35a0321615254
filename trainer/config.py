"""PRMConfig: the training arguments of `PRMTrainer`, field for field those of TRL 1.9's `trl.experimental.prm`."""

from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

# Default learning rates: TRL's (and its PRM example's) full fine-tune rate, and the rate its PRM example trains
# LoRA adapters with (examples/scripts/prm.py: 1e-5 full, 1e-4 LoRA).
FULL_FINE_TUNE_LEARNING_RATE = 1e-5
LORA_LEARNING_RATE = 1e-4


@dataclass
class PRMConfig(TrainingArguments):
    r"""
    Configuration class for [`PRMTrainer`].

    This class holds only the parameters specific to process reward model training; see
    [`~transformers.TrainingArguments`] for the others. It has the fields and defaults of the last
    `trl.experimental.prm.PRMConfig` (TRL 1.9), so code written for it runs with only the import changed, plus
    `max_prompt_length`. With [`~transformers.HfArgumentParser`] (or `trl.TrlParser`) every field becomes a command
    line flag.

    Parameters:
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Maximum length of the tokenized sequence (prompt + completion). Longer sequences are cut from the right.
            `None` keeps everything.
        max_prompt_length (`int` or `None`, *optional*, defaults to `None`):
            Maximum length of the tokenized prompt (BOS token included). A longer prompt loses tokens from the left
            (its beginning) before `max_length` applies, so a long problem statement cannot push every labelled step
            out of the sequence. `None` keeps the whole prompt, as TRL did.
        max_completion_length (`int` or `None`, *optional*, defaults to `None`):
            Maximum length of the tokenized completion (all steps with their separators). Longer completions are cut
            from the right. `None` keeps everything.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Whether to disable dropout in the model (LoRA dropout included).
        step_separator (`str`, *optional*, defaults to `"\n"`):
            Separator appended to each step. The step's label sits on the last token of the step and its separator.
            Saved with the truncation beside the trained model (`prm_step_format.json`, see `step_format`), where
            prm-eval and `PRMReward` read it.
        train_on_last_step_only (`bool`, *optional*, defaults to `False`):
            Whether to train on the label of the last step only. Evaluation always scores every step.
        dataset_num_proc (`int` or `None`, *optional*, defaults to `None`):
            Number of processes used to tokenize the dataset.
        label_type (`str`, *optional*, defaults to `"hard"`):
            `"hard"`: train on the booleans of `label_column` (classes 0/1). `"soft"`: train on numbers in [0, 1] (the
            probability that the step is correct, e.g. Monte Carlo estimates) with the cross-entropy against that
            two-class target; NaN marks a step without a target. Evaluation always compares with the hard `labels`.
        label_column (`str` or `None`, *optional*, defaults to `None`):
            The training rows' column of per-step targets; `None` means `labels` for hard labels and `step_scores`
            (what `model_sampled` with `label_method="mc"` writes) for soft ones.

    The loss is the cross-entropy summed over the labelled step tokens of the whole global batch (every gradient
    accumulation step on every process) divided by their number, so it means the same, and the gradient has the same
    scale, however the batch is split across accumulation steps and devices.

    > [!NOTE]
    > These parameters have default values different from [`~transformers.TrainingArguments`], as in TRL:
    > - `learning_rate`: defaults to `1e-5` instead of `5e-5`. `prm-train` uses `LORA_LEARNING_RATE` (`1e-4`)
    >   instead when `--use_peft` is set and no learning rate is given (flag or `--config`).
    > - `logging_steps`: defaults to `10` instead of `500`.
    > - `gradient_checkpointing` (`activation_checkpointing` in current transformers): defaults to `True` instead of
    >   `False` when neither name is given.
    > - `bf16`: defaults to `True` if `fp16` is not set, instead of `False`, on hardware that supports it (a CUDA,
    >   XPU, NPU... device with bf16, or XLA). Elsewhere, e.g. on a CPU-only machine, it defaults to `False`, where
    >   TRL 1.9 stopped with "Your setup doesn't support bf16/gpu". Pass `bf16=True` to force it.
    > - `dataloader_pin_memory`: defaults to pinning only when an accelerator is present (pinning on a CPU-only
    >   machine does nothing but warn).
    > - `ddp_find_unused_parameters`: defaults to `False`: a PRM uses every trainable parameter (LoRA adapters and
    >   the head included) in every forward pass. Set it to `True` for a model that skips some, such as a
    >   mixture-of-experts; DDP says so with an error otherwise.
    > - `average_tokens_across_devices`: has no effect; the loss is always normalized over the global batch.
    """

    # Parameters whose default values are overridden from TrainingArguments
    learning_rate: float = field(
        default=FULL_FINE_TUNE_LEARNING_RATE,
        metadata={
            "help": "The initial learning rate for AdamW. prm-train's default: 1e-5 for a full fine-tune, 1e-4 with "
            "--use_peft (a LoRA rate: LoRA trains few weights from a zero start)."
        },
    )
    logging_steps: float = field(
        default=10,
        metadata={
            "help": "Log every X update steps. Should be an integer or a float in range `[0,1)`. If smaller than 1, "
            "it is a ratio of the total training steps."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "Whether to use bf16 (mixed) precision instead of 32-bit. If not set, it defaults to `True` if "
            "`fp16` is not set and the hardware supports bf16, `False` otherwise (e.g. on a CPU-only machine)."
        },
    )

    dataloader_pin_memory: bool | None = field(
        default=None,
        metadata={"help": "Whether to pin memory in data loaders. If not set: only when an accelerator is present."},
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "The `find_unused_parameters` flag of DDP. A PRM uses every trainable parameter in each forward "
            "pass; set it to true for models that skip some (mixture-of-experts)."
        },
    )
    average_tokens_across_devices: bool = field(
        default=True,
        metadata={"help": "No effect in PRMTrainer: the loss is always normalized over the global batch."},
    )

    # Parameters that control the data preprocessing
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Maximum length of the tokenized sequence (prompt + completion). Longer sequences are cut from "
            "the right. `None` keeps everything."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum length of the tokenized prompt (BOS token included). A longer prompt loses tokens from "
            "the left before `max_length` applies, so a long problem cannot push every labelled step out. `None` "
            "keeps the whole prompt."
        },
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum length of the tokenized completion (all steps with their separators). Longer "
            "completions are cut from the right. `None` keeps everything."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Whether to disable dropout in the model (LoRA dropout included)."},
    )
    step_separator: str = field(
        default="\n",
        metadata={"help": "Separator appended to each step; the step's label sits on its last token."},
    )
    train_on_last_step_only: bool = field(
        default=False,
        metadata={"help": "Whether to train on the label of the last step only (evaluation scores every step)."},
    )
    dataset_num_proc: int | None = field(
        default=None,
        metadata={"help": "Number of processes used to tokenize the dataset."},
    )
    label_type: str = field(
        default="hard",
        metadata={
            "help": "`hard`: train on booleans (classes 0/1); `soft`: on numbers in [0, 1], the probability that "
            "the step is correct (cross-entropy against that target; NaN = no target).",
            "choices": ["hard", "soft"],
        },
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "Column of per-step training targets; default `labels` (hard) or `step_scores` (soft)."},
    )

    @property
    def truncation(self):
        """`max_length`, `max_prompt_length` and `max_completion_length` as one `Truncation`, the object that both
        training and evaluation cut rows with."""
        from .tokenization import Truncation

        return Truncation.from_args(self)

    @property
    def step_format(self):
        """`step_separator` and the truncation as one `StepFormat`: what training tokenizes with, what `save_model`
        writes beside the weights (`prm_step_format.json`) and what prm-eval and `PRMReward` then score with."""
        from .tokenization import StepFormat

        return StepFormat.from_args(self)

    def __post_init__(self):
        # prm-train's parser leaves the rate None when the user gave none, so that it can pick a LoRA rate
        # (cli.resolve_learning_rate); anywhere else None means the default.
        self.learning_rate_given = self.learning_rate is not None
        if self.learning_rate is None:
            self.learning_rate = FULL_FINE_TUNE_LEARNING_RATE
        for name in ("max_length", "max_prompt_length", "max_completion_length", "dataset_num_proc"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}")
        if not isinstance(self.step_separator, str):
            raise ValueError(f"`step_separator` must be a string, got {type(self.step_separator).__name__}")
        if self.label_type not in ("hard", "soft"):
            raise ValueError(f"`label_type` must be 'hard' or 'soft', got {self.label_type!r}")
        if self.label_column is None:
            self.label_column = "step_scores" if self.label_type == "soft" else "labels"
        if self.dataloader_pin_memory is None:
            import torch

            self.dataloader_pin_memory = not self.use_cpu and torch.accelerator.is_available()

        # TRL checkpoints activations by default. transformers now calls the option `activation_checkpointing` and
        # keeps `gradient_checkpointing` as a deprecated alias: set the new name only when neither was given, so that
        # both spellings a user may pass keep their meaning.
        if getattr(self, "activation_checkpointing", None) is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        # `gradient_checkpointing(_kwargs)` is the name TRL's PRMConfig documents and recipes use: taken here as the
        # new name, rather than left for TrainingArguments to warn about a deprecation the user did not choose.
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if hasattr(self, new) and getattr(self, new) is None and getattr(self, old) is not None:
                setattr(self, new, getattr(self, old))
                setattr(self, old, None)

        if self.bf16 is None:
            # TRL's rule is "bf16 unless fp16", which makes TrainingArguments refuse to start on a machine without a
            # bf16 device; fall back to 32-bit there instead.
            bf16_hardware = not self.use_cpu and (is_torch_bf16_gpu_available() or is_torch_xla_available())
            self.bf16 = not self.fp16 and bf16_hardware

        super().__post_init__()
