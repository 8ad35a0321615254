"""Generation backends: one small interface, one module per way of running a model.

    backend = BACKENDS[name](model, revision, sampling, concurrency=..., base_urls=...)
    for request, generations in backend.generate(queue):
        ...
    backend.close()

`BACKENDS[name].queue_target(concurrency)` says how many requests to keep queued so that the
backend never waits for work.

A backend class may also offer `generate_together(lanes)`, which runs several of its backends at
once (each lane an `(open, queue)` pair, `open()` giving the backend once its queue holds a
request) and yields their results as `generate` does: the openai backend's, so that a policy's
servers and a judge's both stay full. The in-process backends have none: they take turns.

`queue` is a `collections.deque` of `Request`s that the caller may extend while iterating (the
next prefix of a Monte Carlo search is only known once a rollout comes back); `generate` ends
when the queue is empty and nothing is in flight, and yields results in completion order,
each with exactly `request.n` generations. Every backend samples with the same parameters
(`Sampling`: temperature, top_p, max_new_tokens; no top-k, no penalties) and the same prompt
(`render_prompt`), so a generation cached by one backend is a valid draw for any other.

Heavy libraries (torch, vllm, openai) are imported when a backend is built, not here: a build
whose generations are all cached never loads them.
"""

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class Request:
    """Generate `n` continuations of `prefix` as the assistant's answer to the user message `user`."""

    user: str
    prefix: str  # partial assistant message to continue ("" for a fresh solution)
    n: int
    seed: int
    tag: Any = None  # the caller's, returned untouched


@dataclass(frozen=True)
class Generation:
    text: str  # the continuation only, without the prompt or the prefix
    finish_reason: str  # "stop" (end of sequence) or "length" (max_new_tokens reached)


FINISH_REASONS = ("stop", "length")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class Backend:
    """What every backend is constructed with and offers (see the module docstring)."""

    def __init__(
        self,
        model: str,
        revision: str | None,
        sampling: Sampling,
        *,
        concurrency: int = 32,
        base_urls: list[str] | None = None,
        thinking: bool = False,
    ):
        self.model = model
        self.revision = revision
        self.sampling = sampling
        self.concurrency = concurrency  # requests in flight, or sequences per batch
        self.base_urls = base_urls  # servers to call (openai only)
        # Off for the policy (step labels are for the visible solution), allowed for a judge.
        self.thinking = thinking

    # Runs several backends of this class at once (see the module docstring); None: they take turns.
    generate_together = None

    @staticmethod
    def queue_target(concurrency: int) -> int:
        """Requests to keep queued so that the backend never waits for work."""
        return concurrency

    def generate(self, queue: deque[Request]) -> Iterator[tuple[Request, list[Generation]]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the model or the connections; the backend is not used afterwards."""


def invalid_generations(generations, n: int) -> str | None:
    """What is wrong with a backend's answer to a request for `n` generations, or None when nothing is."""
    if not isinstance(generations, list) or len(generations) != n:
        return f"{len(generations) if isinstance(generations, list) else repr(generations)} generations, expected n={n}"
    for generation in generations:
        if not isinstance(generation, Generation) or not isinstance(generation.text, str):
            return f"a generation without text: {generation!r}"
        if generation.finish_reason not in FINISH_REASONS:
            return f"finish reason {generation.finish_reason!r}, expected one of {FINISH_REASONS}"
    return None


def without_thinking(text: str) -> str | None:
    """`text` without the model's thinking (`<think>...</think>` blocks, or everything before a
    lone `</think>` when the prompt opened the block); None when thinking never ended."""
    if THINK_CLOSE in text and THINK_OPEN not in text.split(THINK_CLOSE, 1)[0]:
        text = text.split(THINK_CLOSE, 1)[1]
    visible = []
    while THINK_OPEN in text:
        before, _, text = text.partition(THINK_OPEN)
        if THINK_CLOSE not in text:
            return None
        visible.append(before)
        text = text.split(THINK_CLOSE, 1)[1]
    return "".join(visible) + text


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, user: str, prefix: str, thinking: bool = False) -> str:
    """The model's input text: the chat template when the tokenizer has one, else the plain message.

    The assistant turn is opened and `prefix` written into it, so the model continues its own
    partial answer. Thinking is switched off (`enable_thinking=False`, which templates without
    the switch ignore): step labels are for the visible solution. A judge (`thinking=True`) gets
    the template's default, which for a reasoning model is to think first.
    """
    if has_chat_template(tokenizer):
        switch = {} if thinking else {"enable_thinking": False}
        opened = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True, **switch
        )
        return opened + prefix
    return f"{user}\n\n{prefix}"


def prompt_token_ids(tokenizer, user: str, prefix: str, thinking: bool = False) -> list[int]:
    """Token ids of `render_prompt`; a chat template already holds its special tokens, so none are added."""
    text = render_prompt(tokenizer, user, prefix, thinking)
    return tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]


from .openai import OpenAIBackend  # noqa: E402
from .transformers import TransformersBackend  # noqa: E402
from .vllm import VLLMBackend  # noqa: E402

BACKENDS = {
    "transformers": TransformersBackend,
    "vllm": VLLMBackend,
    "openai": OpenAIBackend,
}
