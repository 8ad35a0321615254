"""An LLM judge of a solution's steps: the prompt it reads and how its verdicts are read back.

Shared by `model_sampled` (label_method "judge" and "consensus") and `prm-eval --judge-model`
(a judge scored as a critic on ProcessBench or a built split), so a judge is asked the same
question, and held to the same parsing, wherever it is used.

The judge sees the problem and the steps, each marked with its index from 0, and ends its answer
with the index of the earliest wrong step, or -1 when every step is right, as `\\boxed{...}`
(the convention of ProcessBench's critic evaluation, Zheng et al. 2024). Only the last `\\boxed{}`
of the visible answer counts: a reasoning model's thinking (`<think>...</think>`, or
`reasoning_content` kept as such by the openai backend) may box tentative indices on the way.

A verdict is one of:
  an int in -1..steps-1    the judge's first error;
  UNPARSABLE               no boxed integer, or one outside -1..steps-1 (worth sampling again);
  CUT_WHILE_THINKING       the answer ran out of tokens inside the thinking (not worth sampling
                           again at the same max_new_tokens: counted as a drop at once).
"""

import re
from collections import Counter

from .backends import without_thinking

STEPS_PLACEHOLDER = "{steps}"
PROBLEM_PLACEHOLDER = "{problem}"
DEFAULT_JUDGE_PROMPT_TEMPLATE = (
    "The following is a math problem and a proposed solution, split into steps. Each step is enclosed "
    "in tags that carry its index, counted from 0.\n\n"
    "[Problem]\n{problem}\n\n"
    "[Solution]\n{steps}\n\n"
    "Check the solution step by step: its calculations, its facts, whether each step follows from the "
    "problem and the steps before it, and whether it reads the problem right. Find the earliest step "
    "that is wrong. A step that only builds on an earlier error is not the earliest one. Once you have "
    "checked every step you need to, end your answer with the index of the earliest wrong step in the "
    "form \\boxed{INDEX}, or \\boxed{-1} if every step is correct."
)
UNPARSABLE = "unparsable"
CUT_WHILE_THINKING = "cut_while_thinking"
# Drop reasons a judge's verdicts can give (model_sampled counts them; prm-eval counts them as misses).
DROP_UNPARSABLE = "judge_unparsable"
DROP_CUT_WHILE_THINKING = "judge_truncated_while_thinking"
DROP_TIE = "judge_tie"
DROP_NO_MAJORITY = "judge_no_majority"
JUDGE_DROPS = (DROP_UNPARSABLE, DROP_CUT_WHILE_THINKING, DROP_TIE, DROP_NO_MAJORITY)
# Why consensus dropped a solution both labelled (the judge's first error vs Monte Carlo's).
DISAGREEMENTS = ("disagree_judge_earlier", "disagree_judge_later", "disagree_judge_all_right", "disagree_mc_all_right")

_BOXED = "\\boxed{"
_INTEGER = re.compile(r"[+-]?\d+")


def check_template(template: str, option: str = "judge_prompt_template") -> str:
    missing = [p for p in (PROBLEM_PLACEHOLDER, STEPS_PLACEHOLDER) if p not in template]
    if missing:
        raise ValueError(f"{option} must contain {PROBLEM_PLACEHOLDER} and {STEPS_PLACEHOLDER}, got {template!r} (missing {', '.join(missing)})")
    return template


def render_steps(steps: list[str]) -> str:
    return "\n\n".join(f"<step_{index}>\n{step}\n</step_{index}>" for index, step in enumerate(steps))


def render_judge_prompt(template: str, problem: str, steps: list[str]) -> str:
    """The judge's user message. Placeholders are replaced in one pass, so a problem that itself
    contains `{steps}` is never expanded a second time."""
    values = {PROBLEM_PLACEHOLDER: problem, STEPS_PLACEHOLDER: render_steps(steps)}
    return re.sub(r"\{problem\}|\{steps\}", lambda match: values[match.group(0)], template)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces balanced), or None."""
    start = text.rfind(_BOXED)
    while start != -1:
        depth, position = 1, start + len(_BOXED)
        while position < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        if depth == 0:
            return text[start + len(_BOXED) : position - 1]
        start = text.rfind(_BOXED, 0, start)  # an unclosed box (cut off): look further back
    return None


def parse_verdict(text: str, num_steps: int) -> int | str:
    """The judge's first error from its raw answer (see the module docstring for the values)."""
    visible = without_thinking(text)
    if visible is None:
        return CUT_WHILE_THINKING
    boxed = last_boxed(visible)
    if boxed is None:
        return UNPARSABLE
    # "$2$", "\text{2}", " 2 " all mean 2; anything else around the number does not.
    core = re.sub(r"\\text\{([^{}]*)\}", r"\1", boxed).replace("$", "").strip()
    if not _INTEGER.fullmatch(core):
        return UNPARSABLE
    index = int(core)
    return index if -1 <= index < num_steps else UNPARSABLE


def usable(verdict: int | str) -> bool:
    return isinstance(verdict, int)


def majority(votes: list[int], samples: int) -> int | str:
    """The index named by more than half of `samples` verdicts, else DROP_TIE (two indices share
    the most votes) or DROP_NO_MAJORITY (one leads, without a majority)."""
    counts = Counter(votes).most_common()
    if counts and counts[0][1] * 2 > samples:
        return counts[0][0]
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return DROP_TIE
    return DROP_NO_MAJORITY


def labels_from_first_error(index: int, num_steps: int) -> list[bool]:
    """Steps before the first error are right, it and every step after it wrong (-1: all right)."""
    return [index == -1 or step < index for step in range(num_steps)]


class VerdictSlots:
    """Reads a growing list of verdicts (in the order of their generation index) into
    `samples` votes, each slot sampled again up to `max_retries` times while its verdict is
    unparsable. Deterministic in the verdicts alone, so a resumed build reads the cached ones
    exactly as the first build did."""

    def __init__(self, samples: int, max_retries: int):
        self.samples = samples
        self.max_retries = max_retries
        self.consumed = 0
        self.votes: list[int] = []
        self.attempts = 0  # unparsable verdicts of the current slot
        self.drop: str | None = None

    @property
    def done(self) -> bool:
        return self.drop is not None or len(self.votes) == self.samples

    def wanted(self) -> int:
        """Generations to have in all before the next read: one per slot still open."""
        return self.consumed + self.samples - len(self.votes)

    def read(self, verdicts: list[int | str]) -> None:
        for verdict in verdicts[self.consumed :]:
            if self.done:
                return
            self.consumed += 1
            if verdict == CUT_WHILE_THINKING:
                self.drop = DROP_CUT_WHILE_THINKING
            elif usable(verdict):
                self.votes.append(verdict)
                self.attempts = 0
            else:
                self.attempts += 1
                if self.attempts > self.max_retries:
                    self.drop = DROP_UNPARSABLE

    def result(self) -> int | str:
        """The voted first error, or the drop reason."""
        return self.drop if self.drop is not None else majority(self.votes, self.samples)
