"""Step-labelled rows as token sequences, for training and for scoring, with one set of truncation rules.

A row (`prompt`, `completions`, `labels`) becomes one sequence: the prompt (after the tokenizer's BOS token, if any),
then every step followed by the step separator. Each step's label sits on the last token of the step and its
separator; every other token is ignored (-100). Evaluation and reward scoring put a step's index where training puts
its label, so a score is always read at the very position its label was trained on, truncation included.

The separator and the truncation travel together as one `StepFormat`, from the `PRMConfig` through training into the
saved model's folder (`prm_step_format.json`), and from there to `prm-eval` and `PRMReward`:

    step_format = StepFormat("\\n", Truncation(max_length=1024, max_prompt_length=256))   # or StepFormat.from_args(config)
    input_ids, positions = tokenize_for_scoring(prompt, steps, tokenizer, step_format)

Nothing heavy is imported at module level: `prm-eval` and `prm-train --help` start through here.
"""

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .row_checks import check_rows  # noqa: F401 - prm-train's data loading checks its splits through here

IGNORE = -100  # the label of a token that carries no step label (PyTorch's cross-entropy ignore_index)
# Written by PRMTrainer beside the weights (full model or LoRA adapter), read by prm-eval and PRMReward.
STEP_FORMAT_FILE = "prm_step_format.json"


@dataclass(frozen=True)
class Truncation:
    """How long a tokenized row may be; the one object both training and evaluation cut rows with.

    Attributes:
        max_length: cut the whole sequence to this many tokens, from the right. `None`: no cut.
        max_prompt_length: keep at most this many prompt tokens (BOS included), dropping the prompt's beginning,
            before `max_length` applies, so that a long prompt cannot push the labelled steps out. `None`: no cut.
        max_completion_length: cut the completion (steps and separators) to this many tokens, from the right.
            `None`: no cut.
    """

    max_length: int | None = None
    max_prompt_length: int | None = None
    max_completion_length: int | None = None

    @classmethod
    def from_args(cls, args) -> "Truncation":
        """The truncation of a `PRMConfig` (or any object with the three fields)."""
        return cls(args.max_length, args.max_prompt_length, args.max_completion_length)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}")

    def as_kwargs(self) -> dict:
        """The three fields as keyword arguments, e.g. for `evaluate_reward_model(..., **truncation.as_kwargs())`."""
        return asdict(self)

    def capped(self, limit: int | None) -> "Truncation":
        """This truncation with `max_length` at most `limit` (a model's context): what scoring cuts rows with."""
        if limit is None or (self.max_length is not None and self.max_length <= limit):
            return self
        return Truncation(limit, self.max_prompt_length, self.max_completion_length)


@dataclass(frozen=True)
class StepFormat:
    """How a row becomes a token sequence: the step separator and the `Truncation`, one object from training to scoring.

    `PRMTrainer` writes the format it trained with into the saved model's folder (`prm_step_format.json`, beside the
    weights of a full model or of a LoRA adapter, so it travels with `save_model`, checkpoints and `push_to_hub`);
    `prm-eval` and `PRMReward` read it back (`StepFormat.saved`) and use it unless told otherwise.

    Attributes:
        step_separator: appended to every step; a step's label sits on the last token of the step and separator.
        truncation: how long a tokenized row may be (see `Truncation`).
    """

    step_separator: str = "\n"
    truncation: Truncation = field(default_factory=Truncation)

    def __post_init__(self):
        if not isinstance(self.step_separator, str):
            raise ValueError(f"`step_separator` must be a string, got {type(self.step_separator).__name__}")
        if not isinstance(self.truncation, Truncation):
            raise ValueError(f"`truncation` must be a Truncation, got {type(self.truncation).__name__}")

    @classmethod
    def from_args(cls, args) -> "StepFormat":
        """The format of a `PRMConfig` (or any object with `step_separator` and the three truncation fields)."""
        return cls(args.step_separator, Truncation.from_args(args))

    def override(self, step_separator: str | None = None, truncation: Truncation | None = None) -> "StepFormat":
        """This format with the parts that are given (not None) replaced: how an explicit `step_separator` or
        `truncation` of prm-eval, `evaluate` or `PRMReward` lands on the saved format."""
        return StepFormat(self.step_separator if step_separator is None else step_separator,
                          self.truncation if truncation is None else truncation)

    def as_dict(self) -> dict:
        """Flat and JSON-ready: `{"step_separator": ..., "max_length": ..., ...}` (what the scores files record)."""
        return {"step_separator": self.step_separator, **self.truncation.as_kwargs()}

    @classmethod
    def from_dict(cls, data: dict, where: str = "the step format") -> "StepFormat":
        """The inverse of `as_dict`; unknown or missing keys are refused, naming `where` they came from."""
        expected = {"step_separator", "max_length", "max_prompt_length", "max_completion_length"}
        if not isinstance(data, dict) or set(data) != expected:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}: expected the keys {sorted(expected)}, got {got}")
        try:
            return cls(data["step_separator"], Truncation(
                data["max_length"], data["max_prompt_length"], data["max_completion_length"]))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def save(self, folder: str | Path) -> Path:
        """Write `prm_step_format.json` into `folder` (created if needed); returns its path."""
        path = Path(folder, STEP_FORMAT_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def saved(cls, model_path: str | Path, revision: str | None = None) -> "StepFormat | None":
        """The format a PRM was trained with, from `prm_step_format.json` in its folder or Hub repository; None for a
        model saved without one (trained elsewhere, or before the file existed)."""
        path = Path(model_path, STEP_FORMAT_FILE)
        if not Path(model_path).is_dir():
            path = _hub_file(str(model_path), STEP_FORMAT_FILE, revision)
            if path is None:
                return None
        elif not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(data, str(path))


def saved_step_format(model) -> StepFormat | None:
    """The `StepFormat` saved with a PRM given as a folder, a Hub id, or a model object loaded from a folder (found
    through its `name_or_path`); None when there is none."""
    if isinstance(model, (str, Path)):
        return StepFormat.saved(model)
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return StepFormat.saved(name) if isinstance(name, str) and name and Path(name).is_dir() else None


def _hub_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """A file of a Hub model repository (downloaded once, through the cache); None when the repository lacks it or
    cannot be read now: loading the model itself then says why, in its own words."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        if constants.HF_HUB_OFFLINE:
            found = try_to_load_from_cache(repo_id, filename, revision=revision)
            return Path(found) if isinstance(found, str) else None
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except (EntryNotFoundError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError, OSError):
        return None  # no such file or repository, not a repository id, gated, or no network


def _encode_steps(tokenizer, steps: list[str]) -> list[list[int]]:
    """Each step's ids, without special tokens. A fast tokenizer takes them in one batched call (the same ids, much
    faster); any other is called once per text, as TRL did, so a tokenizer that only takes one string works too."""
    if getattr(tokenizer, "is_fast", False) is True:
        return tokenizer(steps, add_special_tokens=False)["input_ids"] if steps else []
    return [tokenizer(step, add_special_tokens=False)["input_ids"] for step in steps]


def tokenize_steps(prompt: str, completions, step_labels, tokenizer, step_format: StepFormat):
    """`input_ids` and token labels of one row, `step_labels[i]` on the last token of step i (kept as given)."""
    step_separator, truncation = step_format.step_separator, step_format.truncation
    if len(completions) != len(step_labels):
        raise ValueError(
            f"a row needs one label per step: got {len(completions)} completions and {len(step_labels)} labels"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos_ids = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    if truncation.max_prompt_length is not None:
        room = max(truncation.max_prompt_length - len(bos_ids), 0)
        # The end of the prompt (the question itself) is what the steps follow from; its beginning goes first.
        prompt_ids = prompt_ids[len(prompt_ids) - room :] if room < len(prompt_ids) else prompt_ids
    prompt_ids = bos_ids + prompt_ids

    separator_ids = tokenizer.encode(step_separator, add_special_tokens=False)
    steps_ids = _encode_steps(tokenizer, list(completions))
    completion_ids, completion_labels = [], []
    for step_ids, label in zip(steps_ids, step_labels, strict=True):
        step_ids = step_ids + separator_ids
        if not step_ids:
            continue  # an empty step with an empty separator has no token to carry its label
        completion_ids += step_ids
        completion_labels += [IGNORE] * (len(step_ids) - 1) + [label]
    if truncation.max_completion_length is not None:
        completion_ids = completion_ids[: truncation.max_completion_length]
        completion_labels = completion_labels[: truncation.max_completion_length]

    input_ids = prompt_ids + completion_ids
    labels = [IGNORE] * len(prompt_ids) + completion_labels
    if truncation.max_length is not None:
        input_ids, labels = input_ids[: truncation.max_length], labels[: truncation.max_length]
    return input_ids, labels


def step_targets(values, *, soft: bool, last_only: bool) -> list:
    """The per-step targets of a row: classes 0/1 (`int(label)`), or for soft labels the float itself (NaN, a step
    never measured, becomes -100: no target). `last_only` keeps the last step's target alone.

    A hard label is a boolean, or a number that is exactly 0 or 1 (`0.0`/`1.0` included, as TRL accepted); any other
    value (0.5, NaN, None) is refused rather than rounded: numbers in between are soft labels (`label_type="soft"`).
    """
    if soft:
        targets = [IGNORE if value is None or math.isnan(value) else float(value) for value in values]
    else:
        for index, value in enumerate(values):
            if isinstance(value, str) or value not in (0, 1):
                raise ValueError(
                    f"step {index}: a hard label must be true/false (or exactly 0/1), got {value!r}; numbers between "
                    "0 and 1 are soft labels: train on them with label_type='soft'"
                )
        targets = [int(value) for value in values]
    if last_only and targets:
        targets = [IGNORE] * (len(targets) - 1) + targets[-1:]
    return targets


def tokenize_row(
    features,
    tokenizer,
    step_separator,
    max_length,
    max_completion_length,
    train_on_last_step_only,
    is_eval,
    max_prompt_length=None,
    label_type="hard",
):
    r"""
    Tokenize one row into `input_ids` and token `labels`. Pure: no model, no state.

    The signature of TRL 1.9's `PRMTrainer.tokenize_row` (plus `max_prompt_length` and `label_type`), which
    `PRMTrainer.tokenize_row` is, and which training maps over the rows through `self.tokenize_row`: a subclass that
    overrides it changes what is trained on, as in TRL. The prompt (after the tokenizer's BOS token, if it has one) is
    labelled -100. Each step is tokenized on its own with `step_separator` appended; its label (`int(label)`) sits on
    the last of those tokens, -100 elsewhere. Without `max_prompt_length` the output equals TRL 1.9's, token for token.

    Args:
        features (`dict`):
            A row with `"prompt"` (str), `"completions"` (list of str) and `"labels"` (list of bool or int, one per
            step).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer; special tokens other than BOS are not added.
        step_separator (`str`):
            Appended to every step, the last one included.
        max_length, max_completion_length, max_prompt_length (`int` or `None`):
            The fields of [`Truncation`]. PRMTrainer passes `max_prompt_length` (and `label_type`) only when they
            are set, so an override with TRL's seven arguments keeps working.
        train_on_last_step_only (`bool`):
            Label only the last step (training rows only, see `is_eval`).
        is_eval (`bool`):
            Whether the row is an evaluation row, where every step stays labelled.
        label_type (`str`):
            `"hard"`: labels are booleans or exactly 0/1 (other numbers are refused); `"soft"`: numbers in [0, 1],
            kept as float targets (NaN: no target).

    Returns:
        `dict[str, list[int]]`: `input_ids` and `labels`, of equal length.

    Example:
    ```python
    >>> row = {"prompt": "2 + 3 * 4?", "completions": ["3 * 4 = 12.", "2 + 12 = 15."], "labels": [True, False]}
    >>> tokenize_row(row, tokenizer, "\n", None, None, False, False)
    {'input_ids': [...], 'labels': [-100, ..., 1, -100, ..., 0]}
    ```
    """
    if label_type not in ("hard", "soft"):
        raise ValueError(f"label_type must be 'hard' or 'soft', got {label_type!r}")
    step_format = StepFormat(step_separator, Truncation(max_length, max_prompt_length, max_completion_length))
    last_only = train_on_last_step_only and not is_eval
    targets = step_targets(features["labels"], soft=label_type == "soft", last_only=last_only)
    input_ids, labels = tokenize_steps(features["prompt"], features["completions"], targets, tokenizer, step_format)
    return {"input_ids": input_ids, "labels": labels}


def tokenize_for_scoring(prompt: str, completions, tokenizer, step_format: StepFormat):
    """The `input_ids` of a row to score, and `(token position, step index)` for every step that kept its token.

    Steps cut by truncation, or empty steps with an empty separator, have no position: their score is unknown.
    """
    input_ids, labels = tokenize_steps(prompt, completions, list(range(len(completions))), tokenizer, step_format)
    return input_ids, [(position, step) for position, step in enumerate(labels) if step != IGNORE]


def _tokenize_and_check(row, *, tokenize_row, tokenizer, step_format, last_only, is_eval, label_column, soft):
    """One row tokenized for training by `tokenize_row` (the trainer's own, so that a subclass's override is what
    trains), plus the bookkeeping needed to drop and count rows that lost every label."""
    truncation, separator = step_format.truncation, step_format.step_separator
    # TRL's seven arguments always; ours only when set, so that an override written for TRL keeps working.
    extra = {"max_prompt_length": truncation.max_prompt_length} if truncation.max_prompt_length is not None else {}
    if soft:
        extra["label_type"] = "soft"
    features = row if label_column == "labels" else {**row, "labels": row[label_column]}
    tokenized = tokenize_row(features, tokenizer, separator, truncation.max_length, truncation.max_completion_length,
                             last_only, is_eval, **extra)
    input_ids, labels = tokenized["input_ids"], tokenized["labels"]
    labelled = sum(label != IGNORE for label in labels)
    # A step carries its label only if it has a token (an empty step with an empty separator has none) and a target.
    targets = step_targets(row[label_column], soft=soft, last_only=last_only and not is_eval)
    expected = sum(
        target != IGNORE for step, target in zip(row["completions"], targets, strict=True) if step or separator
    )
    reason = ""
    if labelled == 0:
        if not row["completions"]:
            reason = "no_steps"
        elif expected == 0:
            reason = "unscored_steps" if soft and any(step or separator for step in row["completions"]) \
                else "empty_steps"
        else:
            prompt_only = StepFormat(separator, Truncation(max_prompt_length=truncation.max_prompt_length))
            prompt_length = len(tokenize_steps(row["prompt"], [], [], tokenizer, prompt_only)[0])
            too_long = truncation.max_length is not None and prompt_length >= truncation.max_length
            reason = "prompt_too_long" if too_long else "completion_truncated"
    # Labels lost to truncation are counted for our own tokenize_row only: an override may leave labels out on purpose.
    own = tokenize_row is globals()["tokenize_row"]
    return {"input_ids": input_ids, "labels": labels, "_drop_reason": reason,
            "_labels_cut": 0 if reason or not own else max(expected - labelled, 0)}


def _keep_rows(reasons: list[str]) -> list[bool]:
    return [reason == "" for reason in reasons]


def tokenize_dataset(dataset, tokenizer, args, *, is_eval: bool, name: str, tokenize_row=tokenize_row):
    """Tokenize a `datasets` dataset for `PRMTrainer`: drop rows with no labelled token left, count them by reason.

    `args` is the `PRMConfig`; `tokenize_row` the function each row goes through (`PRMTrainer` passes its own
    `self.tokenize_row`, so that a subclass's override is used, as in TRL). Training rows take their targets from `args.label_column` (soft ones with
    `args.label_type="soft"`); evaluation rows always from the hard `labels`, which the metrics compare against.
    Returns the tokenized dataset (columns `input_ids`, `labels`) and the dropped rows as `{reason: count}` (empty for
    a streamed dataset, which cannot be counted ahead of time).
    """
    import datasets
    from datasets import Features, List, Value
    from transformers.utils import logging

    logger = logging.get_logger(__name__)
    if tokenizer is None:
        raise ValueError(f"`processing_class` (a tokenizer) is required to tokenize the {name} dataset")
    soft = args.label_type == "soft" and not is_eval
    label_column = args.label_column if not is_eval else "labels"
    check_rows(dataset, name, label_column=label_column, soft=soft)
    # Declared, not inferred: `Dataset.map` would otherwise keep the input's bool type for `labels` and turn every
    # -100 into True.
    features = Features(
        {
            "input_ids": List(Value("int64")),
            "labels": List(Value("float32" if soft else "int64")),
            "_drop_reason": Value("string"),
            "_labels_cut": Value("int32"),
        }
    )
    fn_kwargs = dict(
        tokenize_row=tokenize_row, tokenizer=tokenizer, step_format=StepFormat.from_args(args),
        last_only=args.train_on_last_step_only, is_eval=is_eval, label_column=label_column, soft=soft,
    )
    streamed = isinstance(dataset, datasets.IterableDataset)
    map_kwargs = {} if streamed else {"num_proc": args.dataset_num_proc, "desc": f"Tokenizing {name} dataset"}
    with args.main_process_first(desc=f"tokenizing the {name} dataset"):
        dataset = dataset.map(
            _tokenize_and_check, fn_kwargs=fn_kwargs, remove_columns=dataset.column_names, features=features,
            **map_kwargs,
        )
        if streamed:
            # A stream cannot be counted ahead of time: rows without labels are skipped as they come.
            dataset = dataset.filter(_keep_rows, input_columns="_drop_reason", batched=True)
            return dataset.remove_columns(["_drop_reason", "_labels_cut"]), {}
        reasons = Counter(dataset["_drop_reason"])
        kept = reasons.pop("", 0)
        labels_cut = list(dataset["_labels_cut"])
        rows_cut = sum(count > 0 for count in labels_cut)
        if reasons:
            dataset = dataset.filter(
                _keep_rows, input_columns="_drop_reason", batched=True, num_proc=args.dataset_num_proc,
                desc=f"Dropping {name} rows without labels",
            )
        dataset = dataset.remove_columns(["_drop_reason", "_labels_cut"])

    if args.process_index == 0:
        if reasons:
            details = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
            logger.warning(
                f"Dropped {sum(reasons.values())} of {kept + sum(reasons.values())} {name} rows with no labelled "
                f"token left: {details}. Raise `max_length`, or set `max_prompt_length` to trim long prompts "
                "from the left."
            )
        if rows_cut:
            logger.warning(
                f"{rows_cut} {name} rows lost {sum(labels_cut)} step labels to truncation (rows kept, with the "
                "steps that fit)."
            )
    if kept == 0:
        raise ValueError(f"no {name} row has a labelled token left after tokenization: {dict(reasons)}")
    return dataset, dict(reasons)
