"""Step-labelled rows as token sequences, for training and for scoring, with one set of truncation rules.

A row (`prompt`, `completions`, `labels`) becomes one sequence: the prompt (after the tokenizer's BOS token, if any),
then every step followed by the step separator. Each step's label sits on the last token of the step and its
separator; every other token is ignored (-100). Evaluation and reward scoring put a step's index where training puts
its label, so a score is always read at the very position its label was trained on, truncation included.

    truncation = Truncation(max_length=1024, max_prompt_length=256)      # or PRMConfig(...).truncation
    input_ids, positions = tokenize_for_scoring(prompt, steps, tokenizer, "\\n", truncation)

Nothing heavy is imported at module level: `prm-eval` and `prm-train --help` start through here.
"""

import math
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


def step_targets(values, *, soft: bool, last_only: bool) -> list:
    """The per-step targets of a row: classes 0/1 (`int(label)`), or for soft labels the float itself (NaN, a step
    never measured, becomes -100: no target). `last_only` keeps the last step's target alone."""
    if soft:
        targets = [IGNORE if value is None or math.isnan(value) else float(value) for value in values]
    else:
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
    targets = step_targets(features["labels"], soft=False, last_only=train_on_last_step_only and not is_eval)
    input_ids, labels = tokenize_steps(
        features["prompt"], features["completions"], targets, tokenizer, step_separator, truncation
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


def check_rows(dataset, split: str, label_column: str = "labels", soft: bool = False) -> None:
    """Fail before any training if a row cannot be trained on, naming the split, row and field of the first such row.

    Checks the columns (`prompt` a string, `completions` a list of strings, `label_column` a list of booleans or 0/1
    integers, or for soft labels of numbers in [0, 1] or NaN) and every row: no missing value, one label per step.
    Soft labels refuse `step_scores` from early-stopped Monte Carlo (rows with `step_rollouts`): they are no estimates.
    Runs on Arrow columns: a million rows take about 0.3 s (1.5 s shuffled). A streamed dataset gets the column checks
    only.
    """
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if dataset.column_names is None:
        return  # a stream whose columns are unknown until read: tokenize_row checks each row as it comes
    missing = sorted({"prompt", "completions", label_column} - set(dataset.column_names))
    if missing:
        hint = " (rows built with model_sampled's label_method='mc' have `step_scores`)" if soft else ""
        raise ValueError(
            f"the {split} split needs columns prompt, completions and {label_column} (or input_ids and labels); "
            f"missing {missing}, got {dataset.column_names}{hint}"
        )
    if soft and label_column == "step_scores" and "step_rollouts" in dataset.column_names:
        raise ValueError(
            f"the {split} split was built with model_sampled's mc_early_stop=True (it has a `step_rollouts` column): a "
            f"step's rollouts stopped at the first success, so its step_scores is successes over the few rollouts "
            f"made, not an estimate over mc_rollouts, and would teach a good step a score of 1.0; rebuild with "
            f"mc_early_stop=False for soft labels (no generation is repeated: the cached rollouts are reused), or "
            f"train with label_type='hard'"
        )
    if isinstance(dataset, datasets.IterableDataset):
        return
    columns = ["prompt", "completions", label_column] + (["id"] if "id" in dataset.column_names else [])
    table = dataset.data.table.select(columns)
    # After `select` or `shuffle` a Dataset reads its rows through an indices mapping (datasets' `_indices`, private
    # but unchanged for years); one `take` applies it in half a second per million rows, where the formatter's
    # gathering took 8 to 26 s.
    indices = getattr(dataset, "_indices", None)
    if indices is not None:
        table = table.take(indices.column(0))
    label_kinds = (pa.types.is_floating, pa.types.is_integer, pa.types.is_boolean) if soft else (
        pa.types.is_boolean, pa.types.is_integer)
    expected = {
        "prompt": ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        "completions": ("a list of strings", lambda t: _is_list_of(t, (pa.types.is_string, pa.types.is_large_string))),
        label_column: (
            "a list of numbers in [0, 1]" if soft else "a list of booleans (or 0/1 integers)",
            lambda t: _is_list_of(t, label_kinds),
        ),
    }
    for field, (what, accepts) in expected.items():
        if not accepts(table.schema.field(field).type):
            raise ValueError(
                f"the {split} split: field {field!r} must be {what}, one per step; got {dataset.features[field]}"
            )

    prompts, steps, labels = (table.column(name).combine_chunks() for name in ("prompt", "completions", label_column))
    values = pc.list_flatten(labels)
    owners = pc.list_parent_indices(labels)
    if soft:
        out_of_range = pc.or_(pc.less(values, 0), pc.greater(values, 1))
    else:
        out_of_range = pc.and_(pc.not_equal(values, 0), pc.not_equal(values, 1)) if pa.types.is_integer(
            values.type) else pc.is_null(values)
    problems = [  # (first bad row or -1, field, what is wrong there)
        (_first(pc.is_null(prompts)), "prompt", "is missing"),
        (_first(pc.is_null(steps)), "completions", "is missing"),
        (_owner(pc.is_null(pc.list_flatten(steps)), pc.list_parent_indices(steps)), "completions", "has a null step"),
        (_first(pc.is_null(labels)), label_column, "is missing"),
        (_owner(pc.fill_null(out_of_range, not soft), owners), label_column,
         "has a value outside [0, 1]" if soft else "has a label that is not true/false (0/1)"),
        (_first(pc.not_equal(pc.list_value_length(steps), pc.list_value_length(labels))), label_column, None),
    ]
    bad = [problem for problem in problems if problem[0] >= 0]
    if not bad:
        return
    row, field, problem = min(bad, key=lambda problem: problem[0])
    if problem is None:
        count, num_steps = len(labels[row]), len(steps[row])
        problem = f"has {count} values for {num_steps} steps in 'completions' (one per step expected)"
        if soft and count == 0:
            problem += "; rows built with model_sampled's label_method='outcome' have no step scores: train on them "
            problem += "with label_type='hard'"
    row_id = f" (id {table.column('id')[row].as_py()!r})" if "id" in table.column_names else ""
    raise ValueError(f"the {split} split, row {row}{row_id}: field {field!r} {problem}")


def _is_list_of(arrow_type, element_checks) -> bool:
    import pyarrow as pa

    if not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
        return False
    element = arrow_type.value_type
    return pa.types.is_null(element) or any(check(element) for check in element_checks)


def _first(mask) -> int:
    """Index of the first true value of a boolean array (nulls count as false), -1 if none."""
    import pyarrow.compute as pc

    return pc.index(pc.fill_null(mask, False), True).as_py()


def _owner(element_mask, parents) -> int:
    """The row of the first true element of a flattened list column, -1 if none."""
    index = _first(element_mask)
    return -1 if index < 0 else parents[index].as_py()


def _tokenize_and_check(row, *, tokenizer, step_separator, truncation, last_only, label_column, soft):
    """One row tokenized for training, plus the bookkeeping needed to drop and count rows that lost every label."""
    targets = step_targets(row[label_column], soft=soft, last_only=last_only)
    input_ids, labels = tokenize_steps(
        row["prompt"], row["completions"], targets, tokenizer, step_separator, truncation
    )
    labelled = sum(label != IGNORE for label in labels)
    # A step carries its label only if it has a token (an empty step with an empty separator has none) and a target.
    expected = sum(
        target != IGNORE for step, target in zip(row["completions"], targets, strict=True) if step or step_separator
    )
    reason = ""
    if labelled == 0:
        if not row["completions"]:
            reason = "no_steps"
        elif expected == 0:
            reason = "unscored_steps" if soft and any(step or step_separator for step in row["completions"]) \
                else "empty_steps"
        else:
            prompt_only = Truncation(max_prompt_length=truncation.max_prompt_length)
            prompt_length = len(tokenize_steps(row["prompt"], [], [], tokenizer, step_separator, prompt_only)[0])
            too_long = truncation.max_length is not None and prompt_length >= truncation.max_length
            reason = "prompt_too_long" if too_long else "completion_truncated"
    return {"input_ids": input_ids, "labels": labels, "_drop_reason": reason,
            "_labels_cut": 0 if reason else expected - labelled}


def _keep_rows(reasons: list[str]) -> list[bool]:
    return [reason == "" for reason in reasons]


def tokenize_dataset(dataset, tokenizer, args, *, is_eval: bool, name: str):
    """Tokenize a `datasets` dataset for `PRMTrainer`: drop rows with no labelled token left, count them by reason.

    `args` is the `PRMConfig`. Training rows take their targets from `args.label_column` (soft ones with
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
    # -100 into True (DESIGN.md, known traps).
    features = Features(
        {
            "input_ids": List(Value("int64")),
            "labels": List(Value("float32" if soft else "int64")),
            "_drop_reason": Value("string"),
            "_labels_cut": Value("int32"),
        }
    )
    fn_kwargs = dict(
        tokenizer=tokenizer, step_separator=args.step_separator, truncation=Truncation.from_args(args),
        last_only=args.train_on_last_step_only and not is_eval, label_column=label_column, soft=soft,
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
