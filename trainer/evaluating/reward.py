"""A trained PRM as a reward: loading one (full model or LoRA adapter), and `PRMReward` for TRL's GRPOTrainer.

    from trl import GRPOTrainer
    from prm_trainer import PRMReward

    trainer = GRPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", reward_funcs=PRMReward("my-prm"), ...)

GRPOTrainer calls each reward function as `f(prompts=..., completions=..., completion_ids=..., **dataset_columns)`
and wants one float per completion (None for "cannot score"). `PRMReward` splits each completion into steps at the
step separator, scores every step as evaluation does (the probability of label 1 at the step's last token), and
aggregates the step scores into one reward.
"""

import math
from pathlib import Path

import warnings

from .evaluation import AGGREGATIONS, MAX_BATCH_TOKENS, aggregate_steps, check_scoring_options, score_steps
from ..common.loading import (
    adapter_base,
    expected_head_report,
    loading_bars,
    peft_reading_deprecated_checkpointing_flag,
)
from ..common.tokenization import StepFormat, Truncation, saved_step_format


def resolve_device(device: str | None = None) -> str:
    """`auto` (or None): the first CUDA device when there is one, else the CPU."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_prm(path: str, device: str | None = "auto", dtype: str = "auto", revision: str | None = None,
             progress: bool = True):
    """A PRM and its tokenizer, from a folder or Hub id holding a full model or a LoRA adapter.

    An adapter (a folder with `adapter_config.json`) is loaded on top of the base model its config names, with the
    classification head it saved. The tokenizer comes from `path`, else from the base model. `progress=False` hides
    transformers' "Loading weights" bar and the Hub's download bars.
    """
    with loading_bars(progress):
        return _load_prm(path, device, dtype, revision)


def _load_prm(path: str, device: str | None, dtype: str, revision: str | None):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    base = path
    adapter = _adapter_config(path, revision)
    if adapter is not None:
        base = adapter_base(path, adapter.base_model_name_or_path)
        if not adapter.modules_to_save:
            raise ValueError(
                f"{path}: the adapter saved no classification head (modules_to_save is empty; task_type is "
                f"{adapter.task_type!r}, a PRM adapter has TOKEN_CLS): its scores would come from a random head"
            )
    with expected_head_report():  # a missing head is our error below; an adapter brings its own
        model, loading = AutoModelForTokenClassification.from_pretrained(
            base, num_labels=2, dtype=torch_dtype, revision=None if adapter is not None else revision,
            output_loading_info=True,
        )
    if adapter is None and loading["missing_keys"]:
        # A causal LM loads too, with a freshly initialized head: its "scores" would be noise.
        raise ValueError(
            f"{path} is not a trained PRM: its checkpoint lacks {sorted(loading['missing_keys'])}, so they would be "
            "random. Pass a model trained with prm-train (or PRMTrainer)."
        )
    if adapter is not None:
        from peft import PeftModel

        with peft_reading_deprecated_checkpointing_flag():
            model = PeftModel.from_pretrained(model, path, revision=revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError):
        if adapter is None:
            raise
        tokenizer = AutoTokenizer.from_pretrained(base)
    model.to(resolve_device(device)).eval()
    return model, tokenizer


def _adapter_config(path: str, revision: str | None):
    """The PEFT config at `path` when it holds an adapter (`adapter_config.json`), else None."""
    if Path(path).is_dir():
        if not Path(path, "adapter_config.json").is_file():
            return None  # a full model: peft (slow to import) is not needed
    else:
        from huggingface_hub import constants, file_exists, try_to_load_from_cache

        if constants.HF_HUB_OFFLINE:  # offline, a Hub id can only be what the cache holds
            found = isinstance(try_to_load_from_cache(path, "adapter_config.json", revision=revision), str)
        else:
            found = file_exists(path, "adapter_config.json", revision=revision)
        if not found:
            return None
    from peft import PeftConfig

    return PeftConfig.from_pretrained(path, revision=revision)


def _text(content, where: str) -> str:
    """A message's content: a string, or a list of parts whose text parts are kept."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TypeError(f"{where}: 'content' must be a string or a list of parts, got {type(content).__name__}")
    texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
    for number, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{where}, text part {number}: 'text' must be a string, got {type(text).__name__}")
    return "".join(texts)


def _messages(value, where: str) -> list[dict]:
    """A conversation, checked: a list of dicts that each have a `content`, or a TypeError naming the position."""
    if not isinstance(value, list):
        raise TypeError(f"{where} must be a string or a list of messages, got {type(value).__name__}: {value!r:.60}")
    for number, message in enumerate(value):
        if not isinstance(message, dict):
            raise TypeError(f"{where}, message {number}: expected a dict with 'role' and 'content', got "
                            f"{type(message).__name__}")
        if "content" not in message:
            raise TypeError(f"{where}, message {number}: has no 'content' (keys: {sorted(message)})")
    return value


def prompt_text(prompt, where: str = "prompt") -> str:
    """The problem a prompt poses: the text itself, or the content of the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [message for message in _messages(prompt, where) if message.get("role") == "user"]
    if not users:
        raise ValueError(f"{where}: a conversational prompt needs a user message, got roles "
                         f"{[m.get('role') for m in prompt]}")
    return _text(users[-1]["content"], f"{where}, last user message")


def completion_text(completion, where: str = "completion") -> str:
    """A completion's text: the text itself, or its assistant messages' contents joined. Anything else (None, a
    number, a message without `content`) is a TypeError naming `where`."""
    if isinstance(completion, str):
        return completion
    messages = _messages(completion, where)
    return "".join(_text(message["content"], f"{where}, message {number}")
                   for number, message in enumerate(messages) if message.get("role") == "assistant")


class PRMReward:
    """A process reward model as a reward function for TRL's `GRPOTrainer` (and anything with its signature).

    Args:
        model: a PRM (token classification model with 2 labels, or a PeftModel of one), or a path / Hub id loaded
            with `load_prm` (adapters included) onto `device`.
        tokenizer: its tokenizer; loaded from `model`'s path when None.
        aggregation: how the step scores become one reward: `min` (default: a solution is as good as its worst
            step), `prod` (the product of the step probabilities), `last` or `mean`.
        step_separator: where a completion is split into steps, and what follows each step when it is scored, as in
            training. Default: the separator the PRM was trained with, read from its folder's `prm_step_format.json`
            (written by `PRMTrainer`), else `"\\n"` (`PRMConfig`'s default). Passing another than the saved one warns.
        batch_size: completions per forward pass, at most; max_batch_tokens: padded tokens per forward pass, at most.
        truncation: the `Truncation` to cut scored sequences with; default: the saved one, else none. Scoring never
            goes past the model's maximum length either. A completion with a step cut off gets the reward None (no
            advantage in GRPO).
        device: where a model loaded from a path goes (`auto`: CUDA when available). A model object stays where it is;
            inputs go to its device.
        step_format: the separator and truncation as one `StepFormat`, instead of the two arguments above.

    Rewards are computed without gradients and with the model in eval mode. A completion with no step (empty or
    only separators) gets None. Each completion must be a string or a list of messages with `content` (as
    GRPOTrainer passes them); anything else (None, a number, a message without `content`) raises a TypeError that
    names its position. After each call, `last_step_scores` holds the per-step scores; `step_scores()` computes them
    for any prompts and completions, and under GRPOTrainer they also appear in the completions table as the column
    `prm_step_scores`.
    """

    def __init__(self, model, tokenizer=None, aggregation: str = "min", step_separator: str | None = None,
                 batch_size: int = 8, truncation: Truncation | None = None, device: str | None = "auto",
                 step_format: StepFormat | None = None, max_batch_tokens: int = MAX_BATCH_TOKENS):
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if step_separator is not None and (not isinstance(step_separator, str) or not step_separator):
            raise ValueError(f"step_separator must be a non-empty string, got {step_separator!r}")
        check_scoring_options(0.5, batch_size, max_batch_tokens)
        saved = saved_step_format(model)
        if isinstance(model, (str, Path)):
            loaded, loaded_tokenizer = load_prm(str(model), device=device)
            model, tokenizer = loaded, tokenizer or loaded_tokenizer
        if tokenizer is None:
            from transformers import AutoTokenizer

            name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", "")
            if not name:
                raise ValueError("pass the PRM's tokenizer: the model does not say where it was loaded from")
            tokenizer = AutoTokenizer.from_pretrained(name)
        num_labels = getattr(getattr(model, "config", None), "num_labels", 2)
        if num_labels != 2:
            raise ValueError(f"a PRM has a token classification head with 2 labels, got num_labels={num_labels}")
        step_format = (step_format or saved or StepFormat()).override(step_separator, truncation)
        if not step_format.step_separator:
            raise ValueError("step_separator must be a non-empty string: completions are split into steps at it")
        if saved is not None and step_format.step_separator != saved.step_separator:
            warnings.warn(
                f"PRMReward splits and scores at {step_format.step_separator!r}, but the PRM was trained with "
                f"{saved.step_separator!r} (its prm_step_format.json): leave step_separator unset to use it",
                UserWarning, stacklevel=2,
            )
        self.model, self.tokenizer, self.aggregation, self.step_format = model, tokenizer, aggregation, step_format
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.last_step_scores: list[list[float]] = []
        # GRPOTrainer names the reward (in `rewards/<name>/mean`) after this.
        self.__name__ = "prm_reward"

    @property
    def step_separator(self) -> str:
        return self.step_format.step_separator

    @property
    def truncation(self) -> Truncation:
        return self.step_format.truncation

    def split_steps(self, completion, where: str = "completion") -> list[str]:
        """The steps of one completion: its text cut at the separator, blank pieces dropped."""
        text = completion_text(completion, where)
        return [step for step in text.split(self.step_format.step_separator) if step.strip()]

    def step_scores(self, prompts: list, completions: list) -> list[list[float]]:
        """Per completion, the PRM's probability that each step is still correct (NaN for a step cut by truncation)."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions; expected one each")
        rows = [
            {"prompt": prompt_text(prompt, f"prompts[{index}]"),
             "completions": self.split_steps(completion, f"completions[{index}]")}
            for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))
        ]
        return score_steps(self.model, self.tokenizer, rows, self.step_format, batch_size=self.batch_size,
                           max_batch_tokens=self.max_batch_tokens)

    def reward(self, step_scores: list[float]) -> float | None:
        """One completion's reward from its step scores; None when it has no step or an unscored one."""
        if not step_scores or any(math.isnan(score) for score in step_scores):
            return None
        value = aggregate_steps(step_scores, self.aggregation)
        return math.exp(value) if self.aggregation == "prod" else value  # prod is aggregated as a sum of logs

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float | None]:
        scores = self.step_scores(prompts, completions)
        self.last_step_scores = scores
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            log_extra("prm_step_scores", [" ".join(f"{score:.3f}" for score in row) for row in scores])
        return [self.reward(row) for row in scores]
