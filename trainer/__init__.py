"""prm_trainer: train process reward models on step-labelled rows, and evaluate them.

    from prm_trainer import PRMConfig, PRMTrainer, evaluate_reward_model

`PRMConfig` and `PRMTrainer` are drop-in replacements for TRL 1.9's `trl.experimental.prm`.
"""

import importlib

# Exported name -> the module that defines it. Loaded on first use, so that the command-line tools (and importing
# `prm_trainer.evaluating.evaluation` or `prm_trainer.common.tokenization`) do not pay for torch and
# transformers up front.
_EXPORTS = {
    "PRMConfig": ".training.config",
    "PRMTrainer": ".training.trainer",
    "Truncation": ".common.tokenization",
    "evaluate_reward_model": ".evaluating.benchmark_suites",
    "evaluate": ".evaluating.benchmark_suites",
    "EvalOptions": ".evaluating.benchmark_suites",
    "StepFormat": ".common.tokenization",
    "PRMReward": ".evaluating.reward",
    "load_prm": ".evaluating.reward",
    "compute_accuracy": ".training.trainer",
    "load_mixture": ".training.mixture",
    "MixtureArguments": ".training.mixture",
}
# Modules that docs named before the subpackages existed: `prm_trainer.trainer.compute_accuracy` (TRL's name for the
# metric) and `prm_trainer.mixture.load_mixture` keep working, as does `from prm_trainer import trainer`.
_MOVED_MODULES = {"trainer": ".training.trainer", "mixture": ".training.mixture"}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _MOVED_MODULES:
        return importlib.import_module(_MOVED_MODULES[name], __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
