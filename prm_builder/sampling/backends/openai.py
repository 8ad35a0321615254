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
message with vLLM's and SGLang's `continue_final_message` extension, and thinking is switched
off with `chat_template_kwargs` as on the completions endpoint. A reasoning model's answer that
is all reasoning (`reasoning` or `reasoning_content` with an empty `content`: cut by max_tokens
while thinking) is kept as `<think>...` so the rows can count it as a drop. A judge's backend
(`thinking=True`) leaves thinking to the model's default and is never asked to continue.

Several openai backends (a policy and a judge, each with its own servers and window) run at the
same time with `generate_together`: every backend built in one thread shares that thread's event
loop, so one loop keeps every backend's window full, and neither server idles while the other works.
"""

import asyncio
import importlib
import itertools
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from datasets.utils import logging

from ...common.redact import redact_url
from . import Backend, Generation, Request, render_prompt

logger = logging.get_logger(__name__)

MAX_RETRIES = 3
REQUEST_TIMEOUT_S = 300.0
# A request still unanswered after this long is reported (and again every as long).
WAIT_NOTICE_S = 60.0
# Backoff before retrying a bad answer: BAD_ANSWER_BACKOFF_S * 2**attempt, at most 8 s.
BAD_ANSWER_BACKOFF_S = 0.25
# Servers' finish reasons: vLLM/SGLang/OpenAI say stop or length, TGI eos_token or stop_sequence.
SERVER_FINISH_REASONS = {"stop": "stop", "eos_token": "stop", "stop_sequence": "stop", "length": "length"}
EXCERPT_CHARS = 200


class BadAnswerError(ValueError):
    """A server answer that is no usable generation."""


class OpenAIBackend(Backend):
    def __init__(self, *args, max_retries: int = MAX_RETRIES, timeout: float = REQUEST_TIMEOUT_S, **kwargs):
        super().__init__(*args, **kwargs)
        from openai import AsyncOpenAI

        if not self.base_urls:
            raise ValueError("backend='openai' needs base_url, e.g. 'http://localhost:8000/v1', got none")
        self.max_retries = max_retries
        self.timeout = timeout
        self.tokenizer = _load_tokenizer(self.model, self.revision, rollouts=not self.thinking)
        # Local servers take any key; a real one reads it from the usual variable.
        api_key = os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.clients = [
            (
                redact_url(url),
                AsyncOpenAI(
                    base_url=url, api_key=api_key, max_retries=max_retries, timeout=timeout,
                    http_client=_deadline_http_client(timeout),
                ),
            )
            for url in self.base_urls
        ]
        self.next_client = itertools.cycle(self.clients)
        self.loop = _acquire_loop()  # the clients' connections belong to the loop that first uses them

    def generate(self, queue: deque[Request]) -> Iterator[tuple[Request, list[Generation]]]:
        return generate_together([(lambda: self, queue)])

    def _report_waiting(self, in_flight) -> None:
        oldest = min(started for _, _, started in in_flight)
        urls = sorted({url for _, url, _ in in_flight})
        logger.warning(
            f"waiting for {len(in_flight)} request(s) to {', '.join(urls)}, the oldest sent "
            f"{time.monotonic() - oldest:.0f} s ago (each gives up after request_timeout={self.timeout:g} s "
            f"and max_retries={self.max_retries}); is the server busy or hung?"
        )

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
            prompt = render_prompt(self.tokenizer, request.user, request.prefix, self.thinking)
            send = lambda: client.completions.with_raw_response.create(prompt=prompt, **common)  # noqa: E731
            endpoint = "completions"
        else:
            messages = [{"role": "user", "content": request.user}]
            # The policy's thinking is switched off; a judge's is left to the server's default.
            extra = {} if self.thinking else {"chat_template_kwargs": {"enable_thinking": False}}
            if request.prefix:
                messages.append({"role": "assistant", "content": request.prefix})
                extra.update(continue_final_message=True, add_generation_prompt=False)
            send = lambda: client.chat.completions.with_raw_response.create(messages=messages, extra_body=extra, **common)  # noqa: E731
            endpoint = "chat"
        for attempt in range(self.max_retries + 1):
            raw = await send()
            try:
                return parse_answer(raw.text, endpoint, request.n)
            except BadAnswerError as error:
                problem = error
            if attempt < self.max_retries:
                await asyncio.sleep(min(BAD_ANSWER_BACKOFF_S * 2**attempt, 8.0))
        raise problem

    def _result(self, task: asyncio.Task, request: Request, url: str) -> list[Generation]:
        import openai

        try:
            return task.result()
        except BadAnswerError as error:
            raise BadAnswerError(
                f"the server at {url} gave no usable answer for model {self.model!r} "
                f"(tried {self.max_retries + 1} times): {error}"
            ) from None
        except openai.APITimeoutError as error:
            raise ConnectionError(
                f"the server at {url} did not answer within request_timeout={self.timeout:g} s "
                f"(tried {self.max_retries + 1} times); raise request_timeout or check the server"
            ) from error
        except openai.APIConnectionError as error:
            raise ConnectionError(
                f"cannot reach the OpenAI-compatible server at {url} ({error}; gave up after "
                f"{self.max_retries} retries); is it running? e.g. `vllm serve {self.model}`"
            ) from error
        except (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError) as error:
            raise ValueError(
                f"the server at {url} refused a request for model {self.model!r}: HTTP {error.status_code}: "
                f"{_excerpt(error.response.text)}"
            ) from None
        except openai.APIStatusError as error:  # 429 and 5xx that outlasted the retries: the server is unavailable
            raise ConnectionError(
                f"the server at {url} still answered HTTP {error.status_code} after {self.max_retries} retries: "
                f"{_excerpt(error.response.text)}"
            ) from None

    def close(self) -> None:
        if self.clients is None:
            return
        self.loop.run_until_complete(self._close_clients())
        self.clients = None
        _release_loop(self.loop)

    async def _close_clients(self) -> None:
        await asyncio.gather(*(client.close() for _, client in self.clients))


@dataclass
class _Lane:
    """One backend's part of `generate_together`: its queue, and its window of requests in flight."""

    open: Callable[[], OpenAIBackend]
    queue: deque[Request]
    backend: OpenAIBackend | None = None  # opened once its queue first holds a request
    in_flight: dict[asyncio.Task, tuple[Request, str, float]] = field(default_factory=dict)

    def full(self) -> bool:
        return self.backend is not None and len(self.in_flight) >= self.backend.concurrency


def generate_together(lanes: list[tuple[Callable[[], OpenAIBackend], deque[Request]]]) -> Iterator[tuple[Request, list[Generation]]]:
    """Run several openai backends at once, each over its own queue with its own window of
    `concurrency` requests in flight, on the event loop they share (the thread's); yields results in
    completion order, whichever backend made them. Each lane is `(open, queue)`: `open()` gives the
    backend, called only once its queue holds a request (a build whose verdicts are all cached
    never builds the judge). The caller may extend any queue while iterating; a request that joins
    one while every window waits starts as soon as any request of any backend comes back, since the
    caller extends queues only then. Ends when every queue is empty and nothing is in flight.

    A failure (after the backend's retries) starts nothing new on any backend, lets what is in
    flight finish (those generations are paid for and reach the cache), then is raised.
    """
    lanes = [_Lane(open_backend, queue) for open_backend, queue in lanes]
    owners: dict[asyncio.Task, _Lane] = {}
    loop, failure = None, None
    try:
        while (failure is None and any(lane.queue for lane in lanes)) or owners:
            for lane in lanes:
                while lane.queue and failure is None and not lane.full():
                    if lane.backend is None:
                        lane.backend = lane.open()
                        loop = _same_loop(loop, lane.backend)
                    request = lane.queue.popleft()
                    url, client = next(lane.backend.next_client)
                    task = loop.create_task(lane.backend._call(client, request))
                    lane.in_flight[task], owners[task] = (request, url, time.monotonic()), lane
            done, _ = loop.run_until_complete(asyncio.wait(owners, timeout=WAIT_NOTICE_S, return_when=asyncio.FIRST_COMPLETED))
            if not done:
                for lane in lanes:
                    if lane.in_flight:
                        lane.backend._report_waiting(lane.in_flight.values())
            for task in done:  # in the order asyncio.wait's set gives: completion order is no promise anyway
                lane = owners.pop(task)
                request, url, _ = lane.in_flight.pop(task)
                try:
                    generations = lane.backend._result(task, request, url)
                except (ConnectionError, ValueError) as error:
                    # Start nothing new, but let what is in flight finish: those generations
                    # are paid for (other servers may be healthy) and reach the cache.
                    failure = failure or error
                    continue
                yield request, generations
        if failure is not None:
            raise failure
    finally:
        # Interrupted (Ctrl-C, an error, or the caller stopped): nothing may keep running.
        for task in owners:
            task.cancel()
        if owners:
            loop.run_until_complete(asyncio.gather(*owners, return_exceptions=True))


OpenAIBackend.generate_together = staticmethod(generate_together)


def _same_loop(loop, backend: OpenAIBackend):
    if loop is not None and backend.loop is not loop:
        # Only backends built in one thread share a loop; their clients' connections belong to it.
        raise RuntimeError(
            f"the openai backends of {backend.model!r} and another model were built in different threads; "
            f"generate_together runs only backends built in the thread that runs it"
        )
    return backend.loop


# This thread's event loop, shared by every openai backend built in it, and how many use each loop.
# Keyed by process too: a forked worker (datasets' num_proc) must never reuse its parent's loop,
# whose selector it would share.
_THREAD = threading.local()
_LOOP_USERS: dict[asyncio.AbstractEventLoop, int] = {}
_LOOP_LOCK = threading.Lock()


def _acquire_loop() -> asyncio.AbstractEventLoop:
    with _LOOP_LOCK:
        owner, loop = getattr(_THREAD, "loop", (None, None))
        if owner != os.getpid() or loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            _THREAD.loop = (os.getpid(), loop)
        _LOOP_USERS[loop] = _LOOP_USERS.get(loop, 0) + 1
        return loop


def _release_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The last backend using `loop` closes it."""
    with _LOOP_LOCK:
        _LOOP_USERS[loop] -= 1
        if _LOOP_USERS[loop]:
            return
        del _LOOP_USERS[loop]
    loop.close()


def parse_answer(text: str, endpoint: str, n: int) -> list[Generation]:
    """The `n` generations of a completions or chat answer, or BadAnswerError saying what came back."""
    try:
        body = json.loads(text)
    except ValueError:
        raise BadAnswerError(f"expected a JSON body, got {_excerpt(text)}") from None
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise BadAnswerError(f"expected an OpenAI {endpoint} body with a list of choices, got {_excerpt(text)}")
    if len(choices) != n:
        raise BadAnswerError(f"expected {n} choices, got {len(choices)}: {_excerpt(text)}")
    generations = []
    for choice in sorted(choices, key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0):
        finish = SERVER_FINISH_REASONS.get(choice.get("finish_reason"))
        if finish is None:
            raise BadAnswerError(f"expected finish_reason stop or length, got {choice.get('finish_reason')!r}: {_excerpt(text)}")
        generation = _choice_text(choice, endpoint)
        if not isinstance(generation, str):
            field = "text" if endpoint == "completions" else "message content"
            raise BadAnswerError(f"expected a string {field}, got {generation!r}: {_excerpt(text)}")
        if not generation.isascii():
            try:  # JSON can spell half of a surrogate pair ("\ud800"), which is no text: Arrow cannot store it
                generation.encode("utf-8")
            except UnicodeEncodeError as error:
                lone = generation[error.start].encode("unicode_escape").decode()
                raise BadAnswerError(
                    f"expected UTF-8 text, got the lone surrogate {lone} at character {error.start}: {_excerpt(text)}"
                ) from None
        generations.append(Generation(generation, finish))
    return generations


def _choice_text(choice: dict, endpoint: str):
    if endpoint == "completions":
        return choice.get("text")
    message = choice.get("message")
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if content in (None, "") and isinstance(reasoning, str) and reasoning:
        # The reasoning parser took everything: the model never left its thinking (or left it
        # without an answer). Closed only when the model closed it, so the rows can tell.
        return f"<think>{reasoning}" + ("</think>" if choice.get("finish_reason") != "length" else "")
    return content


def _excerpt(text: str) -> str:
    text = text if isinstance(text, str) else repr(text)
    if not text.strip():
        return "an empty answer"
    return repr(text[:EXCERPT_CHARS]) + (f" ({len(text):,} characters)" if len(text) > EXCERPT_CHARS else "")


def _deadline_http_client(timeout: float):
    """The openai client's HTTP client, with `timeout` bounding each attempt as a whole.

    httpx's timeouts bound each read, so a server that sends its headers and then a byte every
    few seconds would hold a request forever. Past the deadline the attempt fails with httpx's
    own ReadTimeout, which the openai client retries and finally reports as APITimeoutError,
    exactly as it does a silent server.
    """
    from openai import DefaultAsyncHttpxClient

    # openai moved from httpx to httpx2; the timeout error must come from the one it catches.
    httpx = importlib.import_module(DefaultAsyncHttpxClient.send.__module__.split(".")[0])

    class DeadlineClient(DefaultAsyncHttpxClient):
        async def send(self, request, **kwargs):
            try:
                return await asyncio.wait_for(super().send(request, **kwargs), timeout)
            except asyncio.TimeoutError:
                raise httpx.ReadTimeout(f"no complete answer within {timeout:g} s", request=request) from None

    return DeadlineClient(timeout=timeout)


def _load_tokenizer(model: str, revision: str | None, rollouts: bool = True):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as error:
        # A judge never continues a partial answer: only the policy's rollouts need the extension.
        needs = ", and rollouts need a server that supports continue_final_message (vLLM, SGLang)" if rollouts else ""
        logger.warning(f"no tokenizer for {model!r} ({error.__class__.__name__}); prompts go to the chat endpoint{needs}")
        return None
