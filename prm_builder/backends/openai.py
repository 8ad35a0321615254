"""The openai backend: any OpenAI-compatible server (`vllm serve`, SGLang, TGI), one or many.

This is how a build scales out: start one server per GPU or node and pass all their URLs;
requests go round-robin over them, with `concurrency` requests in flight in all (a sliding
window: a new request starts as soon as one finishes). The official `openai` client retries
429, 5xx, timeouts and dropped connections with exponential backoff (honouring Retry-After);
whatever still fails after `max_retries` stops the build with the URL in the message, once the
requests already in flight have finished: the generation cache keeps every generation that came back.

Prompts go to the completions endpoint, rendered here with the model's chat template, because
a Monte Carlo rollout continues a partial assistant message, which the chat endpoint cannot
express portably. When the tokenizer cannot be loaded (a served name that is not a Hub model),
the chat endpoint is used instead, and rollouts ask the server to continue the last assistant
message with vLLM's and SGLang's `continue_final_message` extension.
"""

import asyncio
import itertools
import os
from collections import deque
from collections.abc import Iterator

from datasets.utils import logging

from . import Backend, Generation, Request, render_prompt

logger = logging.get_logger(__name__)

MAX_RETRIES = 5
REQUEST_TIMEOUT_S = 600.0


class OpenAIBackend(Backend):
    def __init__(self, *args, max_retries: int = MAX_RETRIES, timeout: float = REQUEST_TIMEOUT_S, **kwargs):
        super().__init__(*args, **kwargs)
        from openai import AsyncOpenAI

        if not self.base_urls:
            raise ValueError("backend='openai' needs base_url, e.g. 'http://localhost:8000/v1', got none")
        self.max_retries = max_retries
        self.tokenizer = _load_tokenizer(self.model, self.revision)
        # Local servers take any key; a real one reads it from the usual variable.
        api_key = os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.loop = asyncio.new_event_loop()
        self.clients = [
            (url, AsyncOpenAI(base_url=url, api_key=api_key, max_retries=max_retries, timeout=timeout))
            for url in self.base_urls
        ]
        self.next_client = itertools.cycle(self.clients)

    def generate(self, queue: deque[Request]) -> Iterator[tuple[Request, list[Generation]]]:
        in_flight: dict[asyncio.Task, tuple[Request, str]] = {}
        failure = None
        try:
            while (queue and failure is None) or in_flight:
                while queue and failure is None and len(in_flight) < self.concurrency:
                    request = queue.popleft()
                    url, client = next(self.next_client)
                    in_flight[self.loop.create_task(self._call(client, request))] = (request, url)
                done, _ = self.loop.run_until_complete(
                    asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                )
                for task in done:
                    request, url = in_flight.pop(task)
                    try:
                        generations = self._result(task, request, url)
                    except (ConnectionError, ValueError, RuntimeError) as error:
                        # Start nothing new, but let what is in flight finish: those generations
                        # are paid for (other servers may be healthy) and reach the cache.
                        failure = failure or error
                        continue
                    yield request, generations
            if failure is not None:
                raise failure
        finally:
            # Interrupted (Ctrl-C, an error, or the caller stopped): nothing may keep running.
            for task in in_flight:
                task.cancel()
            if in_flight:
                self.loop.run_until_complete(asyncio.gather(*in_flight, return_exceptions=True))

    async def _call(self, client, request: Request) -> list[Generation]:
        common = dict(
            model=self.model,
            n=request.n,
            temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
            max_tokens=self.sampling.max_new_tokens,
            seed=request.seed,
        )
        if self.tokenizer is not None:
            prompt = render_prompt(self.tokenizer, request.user, request.prefix)
            response = await client.completions.create(prompt=prompt, **common)
            choices = sorted(response.choices, key=lambda choice: choice.index)
            return [Generation(c.text, _finish(c.finish_reason)) for c in choices]
        messages = [{"role": "user", "content": request.user}]
        extra = None
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        response = await client.chat.completions.create(messages=messages, extra_body=extra, **common)
        choices = sorted(response.choices, key=lambda choice: choice.index)
        return [Generation(c.message.content or "", _finish(c.finish_reason)) for c in choices]

    def _result(self, task: asyncio.Task, request: Request, url: str) -> list[Generation]:
        import openai

        try:
            generations = task.result()
        except openai.APIConnectionError as error:
            raise ConnectionError(
                f"cannot reach the OpenAI-compatible server at {url} ({error}; gave up after "
                f"{self.max_retries} retries); is it running? e.g. `vllm serve {self.model}`"
            ) from error
        except (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError) as error:
            raise ValueError(f"the server at {url} refused a request for model {self.model!r}: {error}") from error
        except openai.APIStatusError as error:  # 429 and 5xx that outlasted the retries: the server is unavailable
            raise ConnectionError(
                f"the server at {url} still answered HTTP {error.status_code} after {self.max_retries} retries: {error}"
            ) from error
        if len(generations) != request.n:
            raise RuntimeError(f"the server at {url} returned {len(generations)} choices, expected n={request.n}")
        return generations

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.run_until_complete(self._close_clients())
        self.loop.close()

    async def _close_clients(self) -> None:
        await asyncio.gather(*(client.close() for _, client in self.clients))


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _load_tokenizer(model: str, revision: str | None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as error:
        logger.warning(
            f"no tokenizer for {model!r} ({error.__class__.__name__}); prompts go to the chat endpoint, "
            f"and rollouts need a server that supports continue_final_message (vLLM, SGLang)"
        )
        return None
