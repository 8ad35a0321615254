"""PRMTrainer: token classification on step-labelled solutions, TRL 1.9's `trl.experimental.prm` on current libraries.

A row (`prompt`, `completions`, `labels`) becomes one sequence (see `tokenization.py`): the prompt, then every step
followed by the step separator. Each step's label (1 = still correct, 0 = wrong) sits on the last token of the step and
its separator; every other token is ignored (-100). The model is any causal LM loaded as
`AutoModelForTokenClassification(num_labels=2)`.

The loss is computed here from the logits, not by the model: the cross-entropy summed over the labelled step tokens of
a micro-batch, divided by the number of labelled step tokens in the whole global batch (every gradient accumulation
step on every process). Summed over micro-batches and processes, that is the mean over the global batch, so the
gradient, and so the effective learning rate, do not depend on how the batch is split.
"""

import copy
import itertools
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
import torch.nn as nn
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    BaseImageProcessor,
    DataCollator,
    DataCollatorForTokenClassification,
    FeatureExtractionMixin,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Trainer,
    TrainerCallback,
)
from transformers.trainer_utils import EvalPrediction
from transformers.utils import logging

from .config import PRMConfig
from ..evaluating.evaluation import compute_step_accuracy
from ..common.loading import absolute_if_local, peft_reading_deprecated_checkpointing_flag
from .model_card import describe_data, write_model_card
from ..common.tokenization import IGNORE, StepFormat, tokenize_dataset, tokenize_row

# TRL's name for the default metric (`trl.experimental.prm.prm_trainer.compute_accuracy`), kept for code that imports it.
compute_accuracy = compute_step_accuracy

logger = logging.get_logger(__name__)

# Label names written into the model config, so pipelines and the Hub widget say what the two classes mean.
ID2LABEL = {0: "incorrect", 1: "correct"}

def step_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-entropy summed over labelled step tokens, and their number.

    Integer labels are classes (0 wrong, 1 correct); float labels are soft targets, the probability that the step is
    correct, and the loss is the cross-entropy against that two-class distribution (equal to the hard loss for targets
    of exactly 0 and 1). Tokens labelled -100 do not count.
    """
    labels = labels.to(logits.device)
    labelled = labels != IGNORE
    # Only the labelled positions are upcast: a handful per row, not the whole (batch, sequence, 2) tensor.
    logits, targets = logits[labelled].float(), labels[labelled]
    if targets.is_floating_point():
        log_probs = logits.log_softmax(dim=-1)
        loss = -(targets * log_probs[:, 1] + (1 - targets) * log_probs[:, 0]).sum()
    else:
        loss = nn.functional.cross_entropy(logits, targets, reduction="sum")
    return loss, labelled.sum()


class SoftLabelCollator(DataCollatorForTokenClassification):
    """`DataCollatorForTokenClassification` for float (soft) labels, which it would cast to int64: pads them with
    -100 and keeps them float."""

    def torch_call(self, features):
        batch = super().torch_call([{k: v for k, v in feature.items() if k != "labels"} for feature in features])
        width = batch["input_ids"].shape[1]
        labels = torch.full((len(features), width), float(IGNORE))
        for row, feature in enumerate(features):
            values = torch.as_tensor(feature["labels"], dtype=torch.float32)
            start = 0 if self.tokenizer.padding_side == "right" else width - len(values)
            labels[row, start : start + len(values)] = values
        batch["labels"] = labels
        return batch


class PRMTrainer(Trainer):
    """
    Trainer for process reward models, a drop-in replacement for TRL 1.9's `trl.experimental.prm.PRMTrainer`.

    Datasets in TRL's stepwise supervision format (`prompt`, `completions`, `labels`; other columns are ignored) are
    tokenized with [`PRMTrainer.tokenize_row`]; rows with no labelled token left after truncation are dropped, counted
    by reason in `dropped_rows` and logged. Datasets that already have `input_ids` are used as they are.

    Args:
        model ([`~transformers.PreTrainedModel`], `torch.nn.Module` or `str`, *optional*):
            The model to train, an `AutoModelForTokenClassification` with 2 labels. A string is a checkpoint path or
            Hub id of any causal LM, loaded as such (the classification head starts untrained).
        args ([`PRMConfig`], *optional*):
            Training arguments. Defaults to `PRMConfig(output_dir="<model name>-PRM")`.
        data_collator ([`~transformers.DataCollator`], *optional*):
            Defaults to [`~transformers.DataCollatorForTokenClassification`], which pads `input_ids` with the pad token
            and `labels` with -100.
        train_dataset ([`~datasets.Dataset`]):
            The training rows.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            The evaluation rows; every step is labelled there even with `train_on_last_step_only`.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer. Loaded from `model` when that is a string. A tokenizer without a pad token gets its EOS
            token as pad token.
        model_init (`Callable[[], PreTrainedModel]`, *optional*):
            Model factory, for hyperparameter search.
        compute_metrics (`Callable[[EvalPrediction], dict]`, *optional*):
            Defaults to step accuracy (`accuracy`) with the majority-label baseline and balanced accuracy beside it.
        callbacks (`list[TrainerCallback]`, *optional*):
            Extra callbacks.
        optimizers (`tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]`, *optional*):
            Optimizer and scheduler to use instead of the defaults.
        preprocess_logits_for_metrics (`Callable[[torch.Tensor, torch.Tensor], torch.Tensor]`, *optional*):
            Applied to the logits of each evaluation batch before they are gathered.
        peft_config ([`~peft.PeftConfig`], *optional*):
            Wrap the model with this PEFT (e.g. LoRA) configuration. The task type is set to `TOKEN_CLS`, which makes
            the classification head train (and save) along with the adapters while the base weights stay frozen.
    """

    _tag_names = ["prm-builder", "prm"]

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | str | None = None,
        args: PRMConfig | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | dict[str, datasets.Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase
        | BaseImageProcessor
        | FeatureExtractionMixin
        | ProcessorMixin
        | None = None,
        model_init: Callable[[], PreTrainedModel] | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR] = (None, None),
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        peft_config=None,
    ):
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        if not hasattr(Trainer, "loss_is_scaled_for_ga"):
            # Without it, training_step would divide our already normalized loss by the accumulation steps again.
            import transformers

            raise ImportError(
                f"PRMTrainer needs a transformers Trainer with `loss_is_scaled_for_ga` (5.24 has it), got transformers "
                f"{transformers.__version__}: upgrade transformers"
            )
        if isinstance(model, str):
            model_id = model
            model = AutoModelForTokenClassification.from_pretrained(
                model_id, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}
            )
            if processing_class is None:
                processing_class = AutoTokenizer.from_pretrained(model_id)
        if args is None:
            name = getattr(getattr(model, "config", None), "_name_or_path", "") or "model"
            args = PRMConfig(output_dir=f"{Path(name).name}-PRM")
        if not isinstance(args, PRMConfig):
            raise TypeError(f"`args` must be a PRMConfig, got {type(args).__name__}")
        num_labels = getattr(getattr(model, "config", None), "num_labels", 2)
        if num_labels != 2:
            raise ValueError(
                "PRMTrainer needs a token classification head with 2 labels (0 = wrong step, 1 = correct step), "
                f"got num_labels={num_labels}"
            )

        if isinstance(processing_class, PreTrainedTokenizerBase) and processing_class.pad_token is None:
            # Many causal LM tokenizers (Llama, Mistral) ship without a pad token; padded positions are masked and
            # labelled -100, so which token fills them does not matter.
            if processing_class.eos_token is None:
                raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with; set one")
            processing_class.pad_token = processing_class.eos_token
            logger.info(f"The tokenizer has no pad token; using its EOS token {processing_class.eos_token!r}.")

        if peft_config is not None:
            model = self._wrap_peft(model, peft_config, args)

        if args.disable_dropout and model is not None:
            # After PEFT wrapping, so LoRA dropout goes too.
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0

        if compute_metrics is None:
            compute_metrics = compute_step_accuracy
        if data_collator is None:
            if processing_class is None:
                raise ValueError(
                    "`processing_class` (a tokenizer) is required to pad batches with the default collator"
                )
            collator_class = SoftLabelCollator if args.label_type == "soft" else DataCollatorForTokenClassification
            data_collator = collator_class(processing_class)

        # What the model is trained on, for the model card: builder, config, rows per source.
        self.training_data = describe_data(train_dataset)
        dropped_rows = {}
        # Rows go through `self.tokenize_row`, as in TRL: a subclass that overrides it changes what is trained on.
        tokenize = dict(tokenize_row=self.tokenize_row)
        if self._needs_tokenizing(train_dataset):
            train_dataset, dropped_rows["train"] = tokenize_dataset(
                train_dataset, processing_class, args, is_eval=False, name="train", **tokenize
            )
        if isinstance(eval_dataset, dict):
            eval_dataset = dict(eval_dataset)
            for key, dataset in eval_dataset.items():
                if self._needs_tokenizing(dataset):
                    eval_dataset[key], dropped_rows[f"eval_{key}"] = tokenize_dataset(
                        dataset, processing_class, args, is_eval=True, name=f"eval_{key}", **tokenize
                    )
        elif eval_dataset is not None and self._needs_tokenizing(eval_dataset):
            eval_dataset, dropped_rows["eval"] = tokenize_dataset(
                eval_dataset, processing_class, args, is_eval=True, name="eval", **tokenize
            )

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        # The loss is computed in compute_loss with our own count (get_batch_samples): the Trainer must not pass
        # `num_items_in_batch` to the model, nor count (and all-gather) labelled tokens for every evaluation batch.
        self.model_accepts_loss_kwargs = False
        # Rows dropped during tokenization, per dataset and reason, e.g. {"train": {"prompt_too_long": 3}}.
        self.dropped_rows = dropped_rows
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

    @staticmethod
    def _wrap_peft(model, peft_config, args):
        from peft import PeftConfig, PeftModel, TaskType, get_peft_model, prepare_model_for_kbit_training

        if not isinstance(peft_config, PeftConfig):
            raise TypeError(
                f"`peft_config` must be a peft.PeftConfig (e.g. LoraConfig), got {type(peft_config).__name__}"
            )
        if isinstance(model, PeftModel):
            raise ValueError(
                "`model` is already a PeftModel and a `peft_config` was passed too: merge and unload the existing "
                "adapter first, or pass the PeftModel without `peft_config` to keep training its adapter"
            )
        # A copy: PEFT appends the head's name to `modules_to_save` in place, and the caller may reuse the config.
        peft_config = copy.deepcopy(peft_config)
        if peft_config.task_type != TaskType.TOKEN_CLS:
            # Any other task type leaves the freshly initialized head frozen: training would run and learn nothing.
            if peft_config.task_type is not None:
                logger.warning(
                    f"peft_config.task_type={peft_config.task_type!r} would leave the classification head frozen; "
                    "using TOKEN_CLS instead."
                )
            peft_config.task_type = TaskType.TOKEN_CLS
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=args.gradient_checkpointing,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            )
        with peft_reading_deprecated_checkpointing_flag():
            model = get_peft_model(model, peft_config)
        # The adapter's config names its base model as the model was loaded (`tiny`, relative): saved as is, the
        # adapter could not be loaded from any other folder. A local base is written as an absolute path.
        for config in model.peft_config.values():
            if config.base_model_name_or_path:
                config.base_model_name_or_path = absolute_if_local(config.base_model_name_or_path)
        # Reentrant checkpointing only back-propagates into segments whose inputs require grad, and with the
        # embeddings frozen they do not.
        if args.gradient_checkpointing and (args.gradient_checkpointing_kwargs or {}).get("use_reentrant", False):
            model.enable_input_require_grads()
        return model

    @staticmethod
    def _needs_tokenizing(dataset) -> bool:
        columns = getattr(dataset, "column_names", None)
        return columns is not None and "input_ids" not in columns

    # compute_loss divides by the labelled tokens of the whole accumulated batch itself: training_step must not divide
    # by the number of accumulation steps again.
    loss_is_scaled_for_ga = True

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The micro-batches of one optimizer step, and the number of labelled step tokens in them on all processes.

        Replaces the Trainer's count, which is global only with `average_tokens_across_devices` and is only made when
        the model takes loss kwargs: here the count is always over the global batch, one small all-gather per step.
        """
        batches = list(itertools.islice(epoch_iterator, num_batches))
        count = sum(int((batch["labels"] != IGNORE).sum()) for batch in batches)
        count = torch.tensor(count, device=device)
        if self.accelerator.num_processes > 1:
            count = self.accelerator.gather(count).sum()
        return batches, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy over labelled step tokens, from the logits (`step_token_loss`).

        In training, `num_items_in_batch` is the global count from `get_batch_samples`: the loss is this micro-batch's
        sum divided by it, times the number of processes because DDP (like FSDP and DeepSpeed) averages gradients over
        processes. Elsewhere (evaluation) the loss is the mean over this batch's labelled tokens.
        """
        # The model gets no labels: its own loss would be a per-micro-batch mean (GenericForTokenClassification does
        # not pass `num_items_in_batch` to its loss function), and it would be computed for nothing.
        outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
        loss_sum, count = step_token_loss(outputs.logits, inputs["labels"])
        if num_items_in_batch is None:
            loss = loss_sum / count.clamp(min=1)
        else:
            loss = loss_sum / num_items_in_batch.clamp(min=1) * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    # TRL's API: `PRMTrainer.tokenize_row(features, tokenizer, step_separator, max_length, ...)`, the function every
    # row is tokenized with (through `self.tokenize_row`, so that a subclass can override it).
    tokenize_row = staticmethod(tokenize_row)

    @property
    def step_format(self) -> StepFormat:
        """The step separator and truncation this trainer tokenizes with, as saved beside the model."""
        return self.args.step_format

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Save as the Trainer does (checkpoints and `push_to_hub` come through here), plus `prm_step_format.json`:
        the separator and truncation that `prm-eval` and `PRMReward` then score with by default."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.step_format.save(output_dir if output_dir is not None else self.args.output_dir)

    def _save_checkpoint(self, model, trial):
        # Every checkpoint gets a model card too, so one pushed mid-training is not bare.
        model_name = Path(self.args.output_dir).name if self.args.hub_model_id is None else self.args.hub_model_id
        self.create_model_card(model_name=model_name.split("/")[-1])
        super()._save_checkpoint(model, trial)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        eval_results: dict | None = None,
        dataset_options: dict | None = None,
        **kwargs,
    ):
        """
        Write a model card (`README.md`) to `args.output_dir`.

        The card says what the model was trained on (`dataset_name`, the prm-builder config and `dataset_options`,
        rows per source) between `<!-- prm-train:training-data:begin/end -->` markers. Score sections that
        `prm-eval --update-card` wrote into an earlier card there (`<!-- prm-eval:...:begin/end -->`) are kept.

        Args:
            model_name (`str`, *optional*):
                Title of the card; defaults to the output directory's name.
            dataset_name (`str`, *optional*):
                The training dataset; listed in the card's metadata when it is a Hub id.
            tags (`str` or `list[str]`, *optional*):
                Tags added to the card's metadata.
            eval_results (`dict`, *optional*):
                Metrics to show in the card, e.g. what [`evaluate_reward_model`] returned.
            dataset_options (`dict`, *optional*):
                The builder options the dataset was made with (e.g. `prm-builder build` or `--dataset_options`).
            kwargs:
                Accepted for compatibility with [`~transformers.Trainer.push_to_hub`], which passes its own.
        """
        if self.is_world_process_zero():
            write_model_card(self, model_name, dataset_name, tags, eval_results, dataset_options)
