"""Run model_sampled's GPU-only paths on a GPU machine: the vllm backend tests, then a small
throughput figure of vLLM against transformers on the same GPU and prompts.

Nothing is downloaded (such machines are often offline): the model is a tiny Qwen2 built
locally, as in tests/conftest.py, widened to the head size vLLM's kernels support. vLLM must be
installed already (`pip install 'prm-builder[vllm]'`).

    python scripts/gpu_check.py [--skip-throughput] [--out DIR]

Exit status: 0 when everything ran and passed, 1 on a failure, 2 when there is no GPU or no vLLM.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root, for its tests package
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def environment() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import vllm

        info["vllm"] = vllm.__version__
    except ImportError as error:
        info["vllm"] = f"not installed ({error})"
    return info


def run_tests(out: Path) -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "tests/", f"--junitxml={out / 'gpu_tests.xml'}"]
    print("$", " ".join(command), flush=True)
    return subprocess.call(command, cwd=ROOT)


def throughput(work: Path, prompts: int, samples: int, tokens: int) -> dict:
    """Generations per second of each backend on the same requests (model load excluded)."""
    import torch
    from tests.test_backends_vllm import ENGINE_OPTIONS, build_vllm_model

    from prm_builder.backends import Request, Sampling
    from prm_builder.backends.transformers import TransformersBackend
    from prm_builder.backends.vllm import VLLMBackend

    model = str(build_vllm_model(work / "tiny-vllm"))
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=tokens)
    requests = [Request(f"Problem {i}: what is {i} + {i}?", "", samples, i) for i in range(prompts)]
    results = {}
    for name, make in (
        ("vllm", lambda: VLLMBackend(model, None, sampling, engine_options=ENGINE_OPTIONS)),
        ("transformers", lambda: TransformersBackend(model, None, sampling, concurrency=256)),
    ):
        backend = make()
        try:
            start = time.perf_counter()
            generated = sum(len(gens) for _, gens in backend.generate(deque(requests)))
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        finally:
            backend.close()
        results[name] = {"generations": generated, "seconds": round(seconds, 2), "per_second": round(generated / seconds, 1)}
        print(name, results[name], flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment()}
    print(json.dumps(report["environment"]), flush=True)
    if not report["environment"]["cuda"] or not report["environment"]["vllm"][:1].isdigit():
        print("gpu_check: needs a CUDA GPU and vLLM installed; nothing run", file=sys.stderr)
        return 2
    report["tests_exit_status"] = run_tests(args.out)
    if not args.skip_throughput:
        with tempfile.TemporaryDirectory() as folder:
            report["throughput"] = throughput(Path(folder), args.prompts, args.samples, args.tokens)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["tests_exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
