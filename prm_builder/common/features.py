"""The one row schema every config yields: TRL's stepwise supervision plus provenance.

Configs may add columns of their own (`with_extra_columns`), never rename or retype these.
"""

from collections.abc import Sequence

from datasets import Features, List, Value

CORE_FEATURES = Features(
    {
        # Stable across rebuilds and num_proc: derived from source ids, never from row order.
        "id": Value("string"),
        "prompt": Value("string"),
        # One step per item, and one label per step: is this step still correct?
        "completions": List(Value("string")),
        "labels": List(Value("bool")),
        # Index of the first False label, -1 when every step is correct.
        "first_error": Value("int32"),
        # The answer the solution itself states ("" if none) and the ground truth.
        "final_answer": Value("string"),
        "reference_answer": Value("string"),
        # e.g. "synthetic/calculation_error", "prm800k/phase2", "model_sampled/<model>".
        "source": Value("string"),
    }
)


def with_extra_columns(**extra) -> Features:
    """The core schema followed by a config's own columns (which must not shadow core ones)."""
    clashes = sorted(set(extra) & set(CORE_FEATURES))
    if clashes:
        raise ValueError(f"extra columns {clashes} would redefine core columns; choose other names")
    return Features({**CORE_FEATURES, **extra})


def first_error(labels: Sequence[bool]) -> int:
    """Index of the first False label, or -1 when all steps are correct."""
    for index, label in enumerate(labels):
        if not label:
            return index
    return -1
