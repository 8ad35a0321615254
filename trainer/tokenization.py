"""Step-labelled rows as token sequences, for training and for scoring, with one set of truncation rules.

A row (`prompt`, `completions`, `labels`) becomes one sequence: the prompt (after the tokenizer's BOS token, if any),
then every step followed by the step separator. Each step's label sits on the last token of the step and its
separator; every other token is ignored (-100). Evaluation and reward scoring put a step's index where training puts
its label, so a score is always read at the very position its label was trained on, truncation included.

    truncation = Truncation(max_length=1024, max_prompt_length=256)      # or PRMConfig(...).truncation
    input_ids, positions = tokenize_for_scoring(prompt, steps, tokenizer, "\\n", truncation)

Nothing heavy is imported at module level: `prm-eval` and `prm-train --help` start through here.
"""

from collections import Counter
from dataclasses import asdict, dataclass

IGNORE = -100  # the label of a token that carries no step label (PyTorch's cross-entropy ignore_index)


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

    def as_kwargs(self) -> dict:
        """The three fields as keyword arguments, e.g. for `evaluate_reward_model(..., **truncation.as_kwargs())`."""
        return asdict(self)


def tokenize_steps(prompt: str, completions, step_labels, tokenizer, step_separator: str, truncation: Truncation):
    """`input_ids` and token labels of one row, `step_labels[i]` on the last token of step i (kept as given)."""
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
    # One batched call: the same ids as tokenizing step by step, much faster for fast tokenizers.
    steps_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"] if completions else []
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


def tokenize_row(
    features,
    tokenizer,
    step_separator,
    max_length,
    max_completion_length,
    train_on_last_step_only,
    is_eval,
    max_prompt_length=None,
):
    r"""
    Tokenize one row into `input_ids` and token `labels`. Pure: no model, no state.

    The signature of TRL 1.9's `PRMTrainer.tokenize_row` (plus `max_prompt_length`), which `PRMTrainer.tokenize_row`
    still is. The prompt (after the tokenizer's BOS token, if it has one) is labelled -100. Each step is tokenized on
    its own with `step_separator` appended; its label (`int(label)`) sits on the last of those tokens, -100 elsewhere.
    Without truncation the output equals TRL 1.9's, token for token.

    Args:
        features (`dict`):
            A row with `"prompt"` (str), `"completions"` (list of str) and `"labels"` (list of bool or int, one per
            step).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer; special tokens other than BOS are not added.
        step_separator (`str`):
            Appended to every step, the last one included.
        max_length, max_completion_length, max_prompt_length (`int` or `None`):
            The fields of [`Truncation`].
        train_on_last_step_only (`bool`):
            Label only the last step (training rows only, see `is_eval`).
        is_eval (`bool`):
            Whether the row is an evaluation row, where every step stays labelled.

    Returns:
        `dict[str, list[int]]`: `input_ids` and `labels`, of equal length.

    Example:
    ```python
    >>> row = {"prompt": "2 + 3 * 4?", "completions": ["3 * 4 = 12.", "2 + 12 = 15."], "labels": [True, False]}
    >>> tokenize_row(row, tokenizer, "\n", None, None, False, False)
    {'input_ids': [...], 'labels': [-100, ..., 1, -100, ..., 0]}
    ```
    """
    truncation = Truncation(max_length, max_prompt_length, max_completion_length)
    step_labels = [int(label) for label in features["labels"]]
    if train_on_last_step_only and not is_eval and step_labels:
        step_labels = [IGNORE] * (len(step_labels) - 1) + step_labels[-1:]
    input_ids, labels = tokenize_steps(
        features["prompt"], features["completions"], step_labels, tokenizer, step_separator, truncation
    )
    return {"input_ids": input_ids, "labels": labels}


def tokenize_for_scoring(prompt: str, completions, tokenizer, step_separator: str, truncation: Truncation):
    """The `input_ids` of a row to score, and `(token position, step index)` for every step that kept its token.

    Steps cut by truncation, or empty steps with an empty separator, have no position: their score is unknown.
    """
    input_ids, labels = tokenize_steps(
        prompt, completions, list(range(len(completions))), tokenizer, step_separator, truncation
    )
    return input_ids, [(position, step) for position, step in enumerate(labels) if step != IGNORE]


def _tokenize_and_check(row, *, tokenizer, step_separator, truncation, train_on_last_step_only, is_eval):
    """`tokenize_row` plus the bookkeeping needed to drop and count rows that lost every label."""
    options = dict(step_separator=step_separator, train_on_last_step_only=train_on_last_step_only, is_eval=is_eval)
    tokenized = tokenize_row(row, tokenizer, **truncation.as_kwargs(), **options)
    labelled = sum(label != IGNORE for label in tokenized["labels"])
    # A step carries its label only if it has a token: an empty step with an empty separator has none.
    steps = [step for step in row["completions"] if step or step_separator]
    expected = min(len(steps), 1) if train_on_last_step_only and not is_eval else len(steps)
    reason = ""
    if labelled == 0:
        if not row["completions"]:
            reason = "no_steps"
        elif expected == 0:
            reason = "empty_steps"
        else:
            prompt_only = {"prompt": row["prompt"], "completions": [], "labels": []}
            prompt_length = len(
                tokenize_row(
                    prompt_only, tokenizer, max_length=None, max_completion_length=None,
                    max_prompt_length=truncation.max_prompt_length, **options,
                )["input_ids"]
            )
            too_long = truncation.max_length is not None and prompt_length >= truncation.max_length
            reason = "prompt_too_long" if too_long else "completion_truncated"
    return {**tokenized, "_drop_reason": reason, "_labels_cut": 0 if reason else expected - labelled}


def _keep_rows(reasons: list[str]) -> list[bool]:
    return [reason == "" for reason in reasons]


def tokenize_dataset(dataset, tokenizer, args, *, is_eval: bool, name: str):
    """Tokenize a `datasets` dataset for `PRMTrainer`: drop rows with no labelled token left, count them by reason.

    `args` is the `PRMConfig`. Returns the tokenized dataset (columns `input_ids`, `labels`) and the dropped rows as
    `{reason: count}` (empty for a streamed dataset, which cannot be counted ahead of time).
    """
    import datasets
    from datasets import Features, List, Value
    from transformers.utils import logging

    logger = logging.get_logger(__name__)
    if tokenizer is None:
        raise ValueError(f"`processing_class` (a tokenizer) is required to tokenize the {name} dataset")
    missing = {"prompt", "completions", "labels"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"the {name} dataset needs columns prompt, completions and labels (or input_ids and labels); "
            f"missing {sorted(missing)}, got {dataset.column_names}"
        )
    # Declared, not inferred: `Dataset.map` would otherwise keep the input's bool type for `labels` and turn every
    # -100 into True (DESIGN.md, known traps).
    features = Features(
        {
            "input_ids": List(Value("int64")),
            "labels": List(Value("int64")),
            "_drop_reason": Value("string"),
            "_labels_cut": Value("int32"),
        }
    )
    fn_kwargs = dict(
        tokenizer=tokenizer, step_separator=args.step_separator, truncation=Truncation.from_args(args),
        train_on_last_step_only=args.train_on_last_step_only, is_eval=is_eval,
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
