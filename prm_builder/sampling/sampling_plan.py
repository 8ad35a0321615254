"""What a `model_sampled` split will ask the backends for, said before the first request (a
line in the log), so a user sees the size of a build before paying for it."""

from . import judge_labels
from .mc_search import wave_ends


def plan(config, split: str, problems: int) -> str:
    """What a split will ask the backend for, said before the first request: exact for the samples,
    an upper bound for the rollouts (a solution's steps are known only once it is sampled)."""
    solutions = problems * config.num_samples_per_problem
    line = (
        f"model_sampled {split}: {problems:,} problems x {config.num_samples_per_problem} samples = {solutions:,} "
        f"solutions: {problems:,} sample requests at most"
    )
    if config.label_method in judge_labels.METHODS:
        line += (f"; the judge ({config.judge_model_name}): one request of {config.judge_samples} verdict(s) per solution, "
                 f"one more per unparsable verdict")  # fmt: skip
        if config.runs_monte_carlo:
            line += ", then Monte Carlo on the solutions it labelled"
    if not config.runs_monte_carlo:
        return f"{line}; label_method={config.label_method!r} makes no rollouts"
    rollouts = config.mc_rollouts
    if config.mc_search == "binary":
        line += (f"; Monte Carlo (binary search): at most {rollouts} rollouts for each of ceil(log2(n + 1)) step "
                 f"prefixes of an n-step solution ({4 * rollouts} for 10 steps)")  # fmt: skip
    else:
        line += f"; Monte Carlo (linear search): {rollouts} rollouts for each step prefix ({10 * rollouts} for 10 steps)"
    if config.mc_early_stop:
        line += (f", in waves of {wave_sizes(rollouts)} stopped at the first success (mc_early_stop): an upper "
                 f"bound, since the rollouts made are known only as they come back")  # fmt: skip
    else:
        line += ", one request per prefix"
    return line + "; cached generations are not requested again"


def wave_sizes(rollouts: int) -> str:
    ends = wave_ends(rollouts, early_stop=True)
    return ", ".join(str(end - start) for start, end in zip([0, *ends], ends))
