"""An LLM judge scored as a critic, with the metrics and tables of a PRM (`prm-eval --judge-model`).

ProcessBench (Zheng et al. 2024) scores critic models by the first wrong step they name; so does this,
with the judge prompt and verdict parsing that `model_sampled` labels with (prm_builder/sampling/judge.py). The
judge's voted first error becomes step scores (1 before it, 0 from it on), which the benchmarks then
read at threshold 0.5 exactly like a PRM's. A solution without a verdict (unparsable after the retries,
cut off while thinking, a tie or no majority) counts as a miss, as ProcessBench's own evaluation counts
an unparsable critique: its scores are the opposite of every label, so every step and its first error
are wrong; `no_verdict` in the results says how many, by reason.
"""

import hashlib
from collections import Counter, deque

from prm_builder.sampling.backends import Request, Sampling
from prm_builder.sampling.judge import (
    DEFAULT_JUDGE_PROMPT_TEMPLATE,
    VerdictSlots,
    labels_from_first_error,
    parse_verdict,
    render_judge_prompt,
)
from prm_builder.sampling.scheduler import request_seed

THRESHOLD = 0.5  # scores are 0 or 1: any threshold in (0, 1] reads them the same


class CriticScorer:
    """`scorer(rows, name) -> step scores` from a judge behind OpenAI-compatible server(s)."""

    def __init__(
        self,
        judge_model: str,
        base_urls: list[str],
        samples: int = 1,
        max_new_tokens: int = 8192,
        temperature: float = 0.6,
        concurrency: int = 32,
        max_retries: int = 3,
        request_timeout: float = 300.0,
        prompt_template: str = DEFAULT_JUDGE_PROMPT_TEMPLATE,
        seed: int = 0,
    ):
        self.judge_model = judge_model
        self.base_urls = base_urls
        self.samples = samples
        self.sampling = Sampling(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self.prompt_template = prompt_template
        self.seed = seed
        self.no_verdict: dict[str, Counter] = {}
        self.requests = 0
        self.backend = None

    def __call__(self, rows: list[dict], name: str) -> list[list[float]]:
        from prm_builder.sampling.backends.openai import OpenAIBackend

        if self.backend is None:
            self.backend = OpenAIBackend(
                self.judge_model, None, self.sampling, concurrency=self.concurrency, base_urls=self.base_urls,
                thinking=True, max_retries=self.max_retries, timeout=self.request_timeout,
            )  # fmt: skip
        users = [render_judge_prompt(self.prompt_template, row["prompt"], list(row["completions"])) for row in rows]
        slots = [VerdictSlots(self.samples, self.max_retries) for _ in rows]
        texts: list[list[str]] = [[] for _ in rows]
        while True:
            queue = deque()
            for index, (slot, user) in enumerate(zip(slots, users)):
                if not slot.done:
                    first = len(texts[index])
                    key = hashlib.sha256(user.encode("utf-8")).hexdigest()[:16]
                    seed = request_seed(self.seed, f"critic:{key}", first)
                    queue.append(Request(user, "", slot.wanted() - first, seed, tag=index))
            if not queue:
                break
            self.requests += len(queue)
            for request, generations in self.backend.generate(queue):
                index = request.tag
                texts[index] += [generation.text for generation in generations]
                steps = len(rows[index]["completions"])
                slots[index].read([parse_verdict(text, steps) for text in texts[index]])
        scores, missing = [], Counter()
        for row, slot in zip(rows, slots):
            verdict = slot.result()
            labels = [bool(label) for label in row["labels"]]
            if isinstance(verdict, str):
                missing[verdict] += 1
                scores.append([0.0 if label else 1.0 for label in labels])  # a miss at every step
            else:
                scores.append([1.0 if label else 0.0 for label in labels_from_first_error(verdict, len(labels))])
        self.no_verdict[name] = missing
        return scores

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def evaluate_critic(
    judge_model: str,
    base_urls: list[str],
    benchmark: str = "processbench",
    *,
    samples: int = 1,
    max_new_tokens: int = 8192,
    temperature: float = 0.6,
    concurrency: int = 32,
    max_retries: int = 3,
    request_timeout: float = 300.0,
    subsets=None,
    data=None,
    revision: str | None = None,
    endpoint: str | None = None,
    dataset=None,
    dataset_options: dict | None = None,
    split: str = "test",
) -> dict:
    """Score a judge on ProcessBench or a built split; the same results dict as `evaluate` gives for a PRM."""
    from .benchmark_suites import _load_split, built_metrics
    from .processbench import SUBSETS, evaluate_processbench

    if benchmark not in ("processbench", "built"):
        raise ValueError(f"a judge is scored on processbench or built, got benchmark {benchmark!r}")
    scorer = CriticScorer(judge_model, base_urls, samples, max_new_tokens, temperature, concurrency, max_retries, request_timeout)
    try:
        if benchmark == "processbench":
            results = evaluate_processbench(scorer, subsets or SUBSETS, data, THRESHOLD, None, revision, endpoint)
        else:
            if dataset is None:
                raise ValueError("the built benchmark needs a dataset (--dataset DIR_OR_CONFIG)")
            rows = _load_split(dataset, dataset_options, split)
            source = str(dataset)
            results = {"benchmark": "built", "dataset": source, "split": split, "threshold": THRESHOLD,
                       **built_metrics(scorer(rows, split), rows, THRESHOLD)}  # fmt: skip
    finally:
        scorer.close()
    critic = {
        "judge_samples": samples,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "requests": scorer.requests,
        "no_verdict": {name: dict(counts) for name, counts in scorer.no_verdict.items()},
    }
    return {"model": judge_model, **results, "critic": critic}
