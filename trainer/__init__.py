"""prm_trainer: train process reward models on step-labelled rows, and evaluate them.

    from prm_trainer import PRMConfig, PRMTrainer, evaluate_reward_model

`PRMConfig` and `PRMTrainer` are drop-in replacements for TRL 1.9's `trl.experimental.prm`.
"""

from .config import PRMConfig
from .evaluation import evaluate_reward_model
from .trainer import PRMTrainer

__all__ = ["PRMConfig", "PRMTrainer", "evaluate_reward_model"]
