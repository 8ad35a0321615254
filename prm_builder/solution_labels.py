"""One sampled solution of `model_sampled`, from its generation to its row: split into steps,
graded against the reference, and labelled by the config's label method (the module docstring of
model_sampled.py says what each method does). Written as a scheduler task (scheduler.py): it
yields the generations it needs, the samples, then a judge's verdicts (judge_labels.py) and Monte
Carlo rollouts (mc_search.py), and returns the row or the reason it was dropped.
"""

from . import grading, judge_labels
from .backends import without_thinking
from .features import first_error
from .judge import labels_from_first_error
from .mc_search import rollout_labels
from .problems import Problem
from .scheduler import Task, Want


def solution_row(config, problem: Problem, index: int) -> Task:
    """The row of the problem's `index`-th sampled solution, or the reason it was dropped."""
    user = config.user_message(problem.text)
    # Every solution of the problem asks for all samples: one request makes them, for all.
    (samples,) = yield [Want(problem.key, f"sample:{problem.key}", config.num_samples_per_problem, user, "")]
    generation = samples[index]
    text = without_thinking(generation.text)  # step labels are for the answer, not the model's thinking
    if text is None:
        return "truncated_while_thinking"
    steps = solution_steps(text, config.step_separator)
    if not steps:
        return "empty_solution"
    grade = grading.grade(text, problem.reference, problem.style)
    extra = {}
    if config.label_method == "outcome":
        labels, scores = [grade.correct] * len(steps), []
    elif config.label_method == "mc":
        mc = yield from monte_carlo(config, problem, user, steps, extra)
        labels, scores = mc.labels, mc.scores
    else:
        verdict = yield from judge_labels.judge_first_error(config, problem, steps)
        if isinstance(verdict, str):
            return verdict
        labels, scores, mc_error = labels_from_first_error(verdict, len(steps)), [], judge_labels.NO_MC
        if config.label_method == "consensus":
            # Only what the judge labelled is searched: a solution the judge dropped cannot be kept.
            mc = yield from monte_carlo(config, problem, user, steps, extra)
            scores, mc_error = mc.scores, first_error(mc.labels)
            if mc_error != verdict:
                return judge_labels.disagreement(verdict, mc_error)
        extra.update(judge_first_error=verdict, mc_first_error=mc_error, judge_model=config.judge_model_name)
    return {
        "id": f"{problem.id}/sample-{index}",
        "prompt": problem.text,
        "completions": steps,
        "labels": labels,
        "first_error": first_error(labels),
        "final_answer": grade.answer,
        "reference_answer": problem.reference,
        "source": f"model_sampled/{config.model_name}",
        "step_scores": scores,
        "outcome": grade.outcome,
        "generation_end": generation.finish_reason,
        "model": config.model_name,
        "sample_index": index,
        "temperature": config.temperature,
        "top_p": config.top_p,
        **extra,
    }


def monte_carlo(config, problem: Problem, user: str, steps: list[str], extra: dict):
    """One solution's Monte Carlo labels (mc_search.py), for mc and consensus alike; early stop's
    `step_rollouts` go into the row's `extra` columns."""
    mc = yield from rollout_labels(
        problem, user, steps, config.step_separator, config.mc_rollouts, config.mc_search, config.mc_early_stop
    )
    if config.early_stopped:
        extra["step_rollouts"] = mc.rollouts
    return mc


def solution_steps(text: str, separator: str) -> list[str]:
    """A sampled solution's steps: the pieces between separators, stripped, blank ones dropped."""
    return [step.strip() for step in text.split(separator) if step.strip()]

