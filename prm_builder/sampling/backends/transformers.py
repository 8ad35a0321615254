"""The transformers backend: `model.generate` on batches of left-padded prompts, on one device.

The simplest way to run a model (no server, no extra dependency) and the one the tests use
with a tiny model on CPU. `concurrency` is the batch size in sequences: a request for n
generations takes n rows of a batch. Each batch seeds torch with its first request's seed, so a
rerun of the same batches samples the same text.
"""

from collections import deque
from collections.abc import Iterator

from . import Backend, Generation, Request, prompt_token_ids


class TransformersBackend(Backend):
    def __init__(self, *args, device: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.batch_size = self.concurrency
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, revision=self.revision, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.network = AutoModelForCausalLM.from_pretrained(self.model, revision=self.revision, dtype="auto")
        self.network.to(device).eval()
        eos = self.network.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos])

    def generate(self, queue: deque[Request]) -> Iterator[tuple[Request, list[Generation]]]:
        while queue:
            batch = [queue.popleft()]
            while queue and sum(r.n for r in batch) + queue[0].n <= self.batch_size:
                batch.append(queue.popleft())
            texts = self._generate_batch(batch)
            start = 0
            for request in batch:
                yield request, texts[start : start + request.n]
                start += request.n

    def _generate_batch(self, batch: list[Request]) -> list[Generation]:
        import torch

        rows = [prompt_token_ids(self.tokenizer, r.user, r.prefix, self.thinking) for r in batch for _ in range(r.n)]
        inputs = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.network.device)
        torch.manual_seed(batch[0].seed)
        sample = self.sampling.temperature > 0
        with torch.inference_mode():
            output = self.network.generate(
                **inputs,
                do_sample=sample,
                temperature=self.sampling.temperature if sample else None,
                top_p=self.sampling.top_p if sample else None,
                top_k=0 if sample else None,  # pure temperature + nucleus sampling, as on every backend
                max_new_tokens=self.sampling.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        generations = []
        for tokens in new_tokens:
            stop = next((i for i, token in enumerate(tokens) if token in self.stop_ids), None)
            kept = tokens if stop is None else tokens[:stop]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            generations.append(Generation(text, "length" if stop is None else "stop"))
        return generations

    def close(self) -> None:
        self.network = None
