"""The vllm backend: vLLM's offline engine (`LLM.generate`) on this machine's GPUs.

Much faster than transformers for sampling: continuous batching, and automatic prefix caching,
which matters here because all rollouts of a step prefix share it, and the prefixes of one
solution share each other. A request becomes one vLLM prompt with `SamplingParams(n=...)`.
Prompts are passed as token ids rendered here, so vLLM adds no second BOS to a chat template.

Each `LLM.generate` call takes what the queue holds (at most MAX_REQUESTS_PER_CALL): results
reach the generation cache call by call, and the next Monte Carlo prefixes join the next call.
Engine options (tensor_parallel_size, gpu_memory_utilization, max_model_len, ...) come as JSON
in the environment variable PRM_BUILDER_VLLM_ARGS, e.g. '{"tensor_parallel_size": 4}'.
Install with `pip install 'prm-builder[vllm]'`.
"""

import json
import os
from collections import deque
from collections.abc import Iterator

from . import Backend, Generation, Request, prompt_token_ids

MAX_REQUESTS_PER_CALL = 2048
ENGINE_OPTIONS_VARIABLE = "PRM_BUILDER_VLLM_ARGS"


class VLLMBackend(Backend):
    def __init__(self, *args, engine_options: dict | None = None, **kwargs):
        """`engine_options` (over those in PRM_BUILDER_VLLM_ARGS) go to `vllm.LLM`."""
        super().__init__(*args, **kwargs)
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError(
                f"backend='vllm' needs vLLM ({error}); install it with `pip install 'prm-builder[vllm]'`, "
                f"or use backend='transformers', or backend='openai' against a running `vllm serve`"
            ) from error
        options = {"enable_prefix_caching": True, **_options_from_environment(), **(engine_options or {})}
        self.llm = LLM(model=self.model, revision=self.revision, **options)
        self.tokenizer = self.llm.get_tokenizer()

    @staticmethod
    def queue_target(concurrency: int) -> int:
        """Requests to keep queued: vLLM batches best with many prompts per call."""
        return MAX_REQUESTS_PER_CALL

    def generate(self, queue: deque[Request]) -> Iterator[tuple[Request, list[Generation]]]:
        from vllm import SamplingParams

        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), MAX_REQUESTS_PER_CALL))]
            prompts = [{"prompt_token_ids": prompt_token_ids(self.tokenizer, r.user, r.prefix, self.thinking)} for r in batch]
            params = [
                SamplingParams(
                    n=r.n,
                    temperature=self.sampling.temperature,
                    top_p=self.sampling.top_p,
                    max_tokens=self.sampling.max_new_tokens,
                    seed=r.seed,
                )
                for r in batch
            ]
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            for request, output in zip(batch, outputs):
                choices = sorted(output.outputs, key=lambda choice: choice.index)
                # Anything but stop or length (an aborted request) is passed on as it is, and the
                # scheduler refuses it: it must not be cached as a finished generation.
                yield request, [Generation(c.text, c.finish_reason) for c in choices]

    def close(self) -> None:
        self.llm = None


def _options_from_environment() -> dict:
    text = os.environ.get(ENGINE_OPTIONS_VARIABLE, "").strip()
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{ENGINE_OPTIONS_VARIABLE} must be a JSON object of vllm.LLM options, got {text!r} ({error.msg})"
        ) from None
    if not isinstance(options, dict):
        raise ValueError(f"{ENGINE_OPTIONS_VARIABLE} must be a JSON object of vllm.LLM options, got {text!r}")
    return options
