"""Best-of-N with a PRM: how often does reranking N sampled solutions pick a right one, as N grows?

The input is a JSON Lines file, one problem per line: `prompt`, `reference_answer` and `candidates`, the N sampled
solutions, each a list of steps or one text (split into steps at the step separator). A candidate is right when the
final answer it states (prm_builder's grading: `\\boxed{}`, `####`, "the answer is") matches the reference.

For each N in 1, 2, 4, ... (and the largest N), the candidates of a problem are cut into consecutive groups of N and
every figure is the mean over all groups of all problems: the PRM's pick under each aggregation of step scores, majority
vote over the stated answers, pass@N (some candidate is right) and a random pick (the share of right candidates). Ties
count as the expected accuracy of breaking them at random, so the figures need no seed.
"""

from pathlib import Path

from .evaluation import AGGREGATIONS, answer_is_correct, best_of_n_selection


def _steps(candidate, separator: str, where: str) -> list[str]:
    if isinstance(candidate, str):
        return [step for step in candidate.split(separator) if step.strip()] if separator else [candidate]
    if isinstance(candidate, list) and all(isinstance(step, str) for step in candidate):
        return list(candidate)
    raise ValueError(f"{where}: a candidate must be a text or a list of step strings, got {type(candidate).__name__}")


def read_candidates(path: str | Path, step_separator: str = "\n") -> list[dict]:
    """The problems of a candidates file, each with `prompt`, `reference_answer` and `candidates` as step lists."""
    from prm_builder.common.jsonl import read_objects

    problems = []
    for number, item in read_objects(path):
        where = f"{path}, line {number}"
        missing = [key for key in ("prompt", "reference_answer", "candidates") if key not in item]
        if missing:
            raise ValueError(f"{where}: missing {missing} (each line needs prompt, reference_answer, candidates)")
        if not isinstance(item["candidates"], list) or not item["candidates"]:
            raise ValueError(f"{where}: 'candidates' must be a non-empty list")
        candidates = [_steps(c, step_separator, f"{where}, candidate {i}") for i, c in enumerate(item["candidates"])]
        problems.append({"prompt": str(item["prompt"]), "reference_answer": str(item["reference_answer"]),
                         "candidates": candidates})
    if not problems:
        raise ValueError(f"{path}: no problems found")
    return problems


def group_sizes(num_candidates: int) -> list[int]:
    """1, 2, 4, ... up to `num_candidates`, which is always included."""
    sizes = [1]
    while sizes[-1] * 2 <= num_candidates:
        sizes.append(sizes[-1] * 2)
    return sizes if sizes[-1] == num_candidates else sizes + [num_candidates]


def best_of_n_curve(scores: list[list[list[float]]], problems: list[dict], aggregations=AGGREGATIONS) -> dict:
    """Accuracy against N, from the step scores of every candidate of every problem (same nesting as `problems`)."""
    from prm_builder.common.grading import extract_final_answer

    num_candidates = min(len(problem["candidates"]) for problem in problems)
    answers, correct = [], []
    for problem in problems:
        stated = [extract_final_answer("\n".join(steps)) or "" for steps in problem["candidates"]]
        answers.append(stated)
        correct.append([answer_is_correct(answer, problem["reference_answer"]) for answer in stated])
    curve = {}
    for size in group_sizes(num_candidates):
        keys, flat_scores, flat_correct, flat_answers = [], [], [], []
        for p, problem in enumerate(problems):
            groups = len(problem["candidates"]) // size
            for c in range(groups * size):
                keys.append(f"{p}/{c // size}")
                flat_scores.append(scores[p][c])
                flat_correct.append(correct[p][c])
                flat_answers.append(answers[p][c])
        figures = {}
        for aggregation in aggregations:
            result = best_of_n_selection(flat_scores, keys, flat_correct, flat_answers, aggregation)
            figures[f"prm_{aggregation}"] = result["best_of_n_accuracy"]
        figures.update(
            majority_vote=result["best_of_n_majority_vote"],
            pass_at_n=result["best_of_n_oracle"],
            random=result["best_of_n_random"],
            groups=result["best_of_n_num_problems"],
            unscored=result["best_of_n_unscored_solutions"],
        )
        curve[size] = figures
    return {"num_problems": len(problems), "max_n": num_candidates, "by_n": curve}


def evaluate_best_of_n(scorer, candidates: str | Path, step_separator: str = "\n", aggregations=AGGREGATIONS) -> dict:
    """Read the candidates file, score every candidate's steps with `scorer(rows, name)`, and compute the curve."""
    problems = read_candidates(candidates, step_separator)
    rows = [{"prompt": p["prompt"], "completions": steps} for p in problems for steps in p["candidates"]]
    flat = scorer(rows, "candidates")
    nested, start = [], 0
    for problem in problems:
        nested.append(flat[start : start + len(problem["candidates"])])
        start += len(problem["candidates"])
    return {"benchmark": "best_of_n", "candidates": str(candidates), **best_of_n_curve(nested, problems, aggregations)}
