"""model_sampled's judge and consensus labels: the judge's options, its backend, and one solution's
verdicts asked for through the scheduler (the prompt and the parsing are judge.py's, shared with
`prm-eval --judge-model`).

A solution's verdicts are one group of the generation cache, `verdict:<problem>:<hash>`, the hash
over the judge's identity (model, prompt template, samples, sampling, seed) and its rendered
prompt (the problem and the steps): verdicts are resumable after kill -9 and shared between
builds like generations, and another judge, prompt, sample count or seed never reuses them.
"""

import dataclasses
import hashlib
import json

from datasets import Value

from .backends import BACKENDS
from .judge import VerdictSlots, check_template, parse_verdict, render_judge_prompt
from ..common.options import check_choice, check_int, check_number, check_string, check_urls
from .scheduler import LazyBackend, Want

METHODS = ("consensus", "judge")
# mc_first_error of a row no Monte Carlo search labelled (label_method="judge").
NO_MC = -2
# Bumped when the meaning of cached verdicts changes; part of every verdict group's key.
JUDGE_FORMAT = 1
COLUMNS = {
    # The judge's voted first error (-1: every step right).
    "judge_first_error": Value("int32"),
    # Monte Carlo's first error (-1: every step right; -2: no Monte Carlo ran, label_method="judge").
    "mc_first_error": Value("int32"),
    "judge_model": Value("string"),
}


def validate_options(config) -> None:
    """Check the judge_* options of a ModelSampledConfig; fill in judge_backend and judge_base_url."""
    if config.label_method not in METHODS:
        # Any judge_* option set away from its default would be silently unused: refuse it, naming it.
        defaults = {field.name: field.default for field in dataclasses.fields(config)}
        given = [name for name in defaults if name.startswith("judge_")
                 and getattr(config, name) not in (None, "", []) and getattr(config, name) != defaults[name]]
        if given:
            raise ValueError(f"{given[0]} is only used with label_method='judge' or 'consensus', got label_method={config.label_method!r}")
        return
    if config.judge_model is None:
        raise ValueError(f"label_method={config.label_method!r} needs judge_model (the judge's Hub name, folder or served name), got None")
    config.judge_model = check_string("judge_model", config.judge_model)
    config.judge_backend = config.backend if config.judge_backend is None else config.judge_backend
    check_choice("judge_backend", config.judge_backend, list(BACKENDS))
    urls = check_urls("judge_base_url", config.judge_base_url)
    if config.judge_backend == "openai":
        urls = urls or config.base_url
        if not urls:
            raise ValueError("judge_backend='openai' needs judge_base_url (or base_url), e.g. 'http://localhost:8001/v1', got None")
    elif urls:
        raise ValueError(f"judge_base_url is only used with judge_backend='openai', got judge_backend={config.judge_backend!r}")
    config.judge_base_url = urls
    for name in ("judge_samples", "judge_max_new_tokens"):
        check_int(name, getattr(config, name), minimum=1)
    config.judge_temperature = check_number("judge_temperature", config.judge_temperature, minimum=0)
    config.judge_prompt_template = check_template(check_string("judge_prompt_template", config.judge_prompt_template))


def identity(config) -> str:
    """What a verdict depends on besides the solution."""
    return json.dumps(
        {
            "format": JUDGE_FORMAT,
            "model": config.judge_model,
            "prompt_template": config.judge_prompt_template,
            "samples": config.judge_samples,
            "temperature": config.judge_temperature,
            "max_new_tokens": config.judge_max_new_tokens,
            "seed": config.seed,
        },
        sort_keys=True,
    )


def backend(config) -> LazyBackend | None:
    """The judge's backend, built (like the policy's) only once a verdict is missing from the cache;
    thinking allowed. None when the label method needs no judge."""
    if config.label_method not in METHODS:
        return None
    remote = {"timeout": config.request_timeout, "max_retries": config.max_retries} if config.judge_backend == "openai" else {}
    return LazyBackend(
        config.judge_backend, config.judge_model, None, config.judge_sampling(),
        concurrency=config.concurrency, base_urls=config.judge_base_url, thinking=True, **remote,
    )  # fmt: skip


def judge_first_error(config, problem, steps: list[str]):
    """The judge's voted first error of a solution, or the reason there is none (a drop); a task
    for the scheduler. An unparsable verdict asks for the next index of the group (judge.VerdictSlots)."""
    user = render_judge_prompt(config.judge_prompt_template, problem.text, steps)
    digest = hashlib.sha256(f"{identity(config)}\n{user}".encode("utf-8")).hexdigest()[:16]
    group = f"verdict:{problem.key}:{digest}"
    slots = VerdictSlots(config.judge_samples, config.max_retries)
    while not slots.done:
        (generations,) = yield [Want(problem.key, group, slots.wanted(), user, "", backend="judge")]
        slots.read([parse_verdict(generation.text, len(steps)) for generation in generations])
    return slots.result()


def disagreement(judge_error: int, mc_error: int) -> str:
    """The drop reason of a solution whose judge and Monte Carlo first errors differ (judge.DISAGREEMENTS)."""
    if judge_error == -1:
        return "disagree_judge_all_right"
    if mc_error == -1:
        return "disagree_mc_all_right"
    return "disagree_judge_earlier" if judge_error < mc_error else "disagree_judge_later"
