"""The model_sampled config: options, problem files, the Monte Carlo searches as pure functions,
and a build end to end with a tiny model through the transformers backend.

Exact labels from scripted answers, request counting, retries and kill -9 resume are in
test_backends_openai.py, against a real local HTTP server."""

import json
import math
import sys

import pytest
from datasets import load_dataset

import prm_builder  # noqa: F401 - registers the builder
from prm_builder import grading, problems, scheduler
from prm_builder.generation_cache import list_caches
from prm_builder.mc_search import BinarySearch, LinearSearch
from prm_builder.model_sampled import ModelSampledConfig, solution_steps
from prm_builder.problems import GSM8K_FILES, read_problem_file

# -- the searches --------------------------------------------------------------------------------


def run_search(search, scores: list[float]) -> list[int]:
    """Drive a search with given per-step scores; return the steps it evaluated, in order."""
    evaluated = []
    while not search.done:
        (step,) = search.next_steps()
        assert search.next_steps() == []  # one prefix at a time: the next depends on this one
        evaluated.append(step)
        search.record(step, scores[step])
    return evaluated


@pytest.mark.parametrize("num_steps", range(1, 17))
def test_binary_search_finds_the_first_bad_step_in_log_evaluations(num_steps):
    for first_bad in range(num_steps + 1):  # num_steps: no bad step
        scores = [0.5 if step < first_bad else 0.0 for step in range(num_steps)]
        search = BinarySearch(num_steps)
        evaluated = run_search(search, scores)
        assert search.labels() == [step < first_bad for step in range(num_steps)]
        assert len(evaluated) <= math.ceil(math.log2(num_steps + 1))
        assert len(set(evaluated)) == len(evaluated)
        assert [s for s in search.scores if not math.isnan(s)] == [scores[s] for s in sorted(evaluated)]


def test_binary_search_evaluation_order_on_eight_steps():
    search = BinarySearch(8)
    assert run_search(search, [1, 1, 1, 0, 0, 0, 0, 0]) == [4, 2, 3]
    assert search.labels() == [True, True, True, False, False, False, False, False]
    assert [None if math.isnan(s) else s for s in search.scores] == [None, None, 1, 0, 0, None, None, None]


def test_linear_search_keeps_every_measured_label():
    search = LinearSearch(4)
    assert search.next_steps() == [0, 1, 2, 3] and search.next_steps() == []
    for step, score in enumerate([0.25, 0.0, 0.5, 0.0]):
        assert not search.done
        search.record(step, score)
    assert search.done
    # Not forced monotone: step 2 recovered (Math-Shepherd's per-step hard estimate).
    assert search.labels() == [True, False, True, False]


def test_solution_steps():
    assert solution_steps("  a\n\nb \n\n\n\nc\n\n", "\n\n") == ["a", "b", "c"]
    assert solution_steps(" \n\n ", "\n\n") == []
    assert solution_steps("Step 1: x ки Step 2: y ки", "ки") == ["Step 1: x", "Step 2: y"]


def test_runs_and_request_seeds():
    assert list(scheduler.runs([0, 1, 2, 5, 7, 8])) == [(0, 3), (5, 1), (7, 2)]
    assert list(scheduler.runs([])) == []
    seed = scheduler.request_seed(0, "sample:abc", 0)
    assert seed == scheduler.request_seed(0, "sample:abc", 0) and 0 <= seed < 2**31
    assert seed != scheduler.request_seed(1, "sample:abc", 0)


# -- options ---------------------------------------------------------------------------------------


def test_option_validation_names_option_expected_and_got(tmp_path):
    cases = [
        ({"backend": "ollama"}, r"backend must be one of \['transformers', 'vllm', 'openai'\], got 'ollama'"),
        ({"backend": "openai"}, "backend='openai' needs base_url"),
        ({"base_url": "http://x:8000"}, "base_url is only used with backend='openai'"),
        ({"backend": "openai", "base_url": "ftp://x"}, "base_url must be http"),
        ({"problems": str(tmp_path / "nope.jsonl")}, "problems must be 'gsm8k', 'math500', 'sample' or an existing"),
        ({"problems": None}, r"problems must be 'gsm8k', 'math500', 'sample' or a local path, got None"),
        ({"model": None}, "model must be a non-empty string, got None"),
        ({"temperature": -1}, r"temperature must be a number >= 0, got -1"),
        ({"temperature": float("inf")}, r"temperature must be a finite number, got inf"),
        ({"temperature": None}, r"temperature must be a finite number, got None"),
        ({"top_p": 0}, r"top_p must be a number > 0 and <= 1, got 0"),
        ({"top_p": float("nan")}, r"top_p must be a finite number, got nan"),
        ({"seed": None}, r"seed must be an integer, got None"),
        ({"request_timeout": 0}, r"request_timeout must be a number > 0, got 0"),
        ({"max_retries": -1}, r"max_retries must be >= 0, got -1"),
        ({"num_samples_per_problem": 0}, "num_samples_per_problem must be >= 1, got 0"),
        ({"mc_rollouts": "8"}, "mc_rollouts must be an integer, got '8'"),
        ({"label_method": "prm"}, r"label_method must be one of \['consensus', 'judge', 'mc', 'outcome'\], got 'prm'"),
        ({"mc_search": "ternary"}, r"mc_search must be one of \['binary', 'linear'\]"),
        ({"prompt_template": "Solve: {question}"}, "prompt_template must contain {problem}"),
        ({"step_separator": ""}, "step_separator must be a non-empty string"),
        ({"force_regenerate": "yes"}, "force_regenerate must be True or False"),
        ({"mc_early_stop": 1}, "mc_early_stop must be True or False"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            ModelSampledConfig(name="model_sampled", **options)
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset("prm_builder", "model_sampled", num_samples=3)


def test_option_normalization(tmp_path):
    config = ModelSampledConfig(
        name="model_sampled",
        backend="openai",
        base_url="http://a:8000, http://b:8000/v1/",
        step_separator="\\n\\n",
        temperature=1,
        generation_cache_dir=str(tmp_path / "x" / ".." / "gen"),
    )
    assert config.base_url == ["http://a:8000/v1", "http://b:8000/v1"]
    assert config.step_separator == "\n\n" and config.temperature == 1.0
    assert config.generation_cache_dir == str(tmp_path / "gen")
    config.validate()  # idempotent
    assert config.base_url == ["http://a:8000/v1", "http://b:8000/v1"] and config.step_separator == "\n\n"


def test_generation_options_change_the_cache_and_labelling_options_do_not(tmp_path):
    def cache(**options):
        return ModelSampledConfig(name="model_sampled", generation_cache_dir=str(tmp_path), **options).generation_cache()

    base = cache().path
    for options in ({"temperature": 0.7}, {"top_p": 0.9}, {"max_new_tokens": 9}, {"seed": 1}, {"model": "m"},
                    {"model_revision": "abc"}, {"prompt_template": "{problem}"}):  # fmt: skip
        assert cache(**options).path != base, options
    for options in ({"label_method": "outcome"}, {"mc_rollouts": 16}, {"mc_search": "linear"}, {"mc_early_stop": False},
                    {"num_samples_per_problem": 2}, {"max_problems": 5}, {"step_separator": "\n"}, {"problems": "math500"},
                    {"backend": "openai", "base_url": "http://h:1"}, {"concurrency": 3}):  # fmt: skip
        assert cache(**options).path == base, options


def test_arrow_key_ignores_how_rows_are_made_but_not_what_they_are(tmp_path):
    def config_id(**options):
        config = ModelSampledConfig(name="model_sampled", **options)
        return config.create_config_id({})

    default = config_id()
    assert config_id(backend="openai", base_url="http://h:1", concurrency=3, generation_cache_dir=str(tmp_path)) == default
    assert config_id(mc_search="linear") != default and config_id(temperature=0.5) != default
    assert config_id(mc_early_stop=False) != default  # other scores, and no step_rollouts column
    # A forced build never lands on the Arrow files of the generations it replaces.
    assert config_id(force_regenerate=True) == f"{default}-epoch1"


# -- problems --------------------------------------------------------------------------------------


def test_bundled_sample_problems_need_no_network():
    sample = problems.load_problems("sample", dl_manager=None)
    assert {split: len(items) for split, items in sample.items()} == {"train": len(sample["train"]), "test": len(sample["test"])}
    assert sample["train"] and sample["test"] and not {p.key for p in sample["train"]} & {p.key for p in sample["test"]}
    first = sample["train"][0]
    assert first.id == "train-00000" and first.style == grading.NUMERIC and first.reference.isdigit()
    assert ModelSampledConfig(name="model_sampled", problems="sample").local_inputs() == []


def test_a_file_without_problems_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'train.jsonl'}: no problems in this file"):
        problems.load_problems(str(tmp_path), dl_manager=None)


def test_source_names_a_local_model_by_its_folder(tmp_path):
    local = tmp_path / "models" / "my-model"
    local.mkdir(parents=True)
    for model, name in ((str(local), "my-model"), (str(local) + "/", "my-model"), ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B"),
                        ("./models/x", "x"), ("served-name", "served-name")):  # fmt: skip
        assert ModelSampledConfig(name="model_sampled", model=model).model_name == name


def test_read_problem_file_styles_and_ids(tmp_path, gsm8k_dir, test_data):
    gsm8k = read_problem_file(gsm8k_dir / "test.jsonl", "test")
    assert len(gsm8k) == 1319
    assert (gsm8k[0].id, gsm8k[0].reference, gsm8k[0].style) == ("test-00000", "18", grading.NUMERIC)
    assert gsm8k[0].text.startswith("Janet\u2019s ducks lay 16 eggs")
    math500 = read_problem_file(test_data / "math500" / "test.jsonl", "test")
    assert len(math500) == 500
    first = math500[0]
    assert (first.id, first.reference, first.style) == (
        "test/precalculus/807.json",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        grading.MATH,
    )
    assert len({p.key for p in math500}) == 500


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"question": "q", "answer": "1"}', "{not json"], r"bad.jsonl, line 2: expected a JSON object, got invalid JSON"),
        (['{"question": "q"}'], r"line 1: expected a JSON object with a string 'question' \(or 'problem'\) and a string 'answer'"),
        (['["q", "a"]'], "line 1: expected a JSON object"),
        (['{"question": "q", "answer": "1"}', '{"question": "caf\xe9", "answer": "1"}'],
         r"bad.jsonl, line 2: expected UTF-8 text, got byte 0xe9 at column 18; save the file as UTF-8"),  # fmt: skip
        (['{"problem": "a", "answer": "1", "unique_id": "x"}', '{"problem": "b", "answer": "2", "unique_id": "x"}'],
         "line 2: unique_id 'x' already used on line 1"),  # fmt: skip
    ],
)
def test_read_problem_file_errors_name_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(ValueError, match=message):
        read_problem_file(path, "train")


# -- end to end with a tiny model --------------------------------------------------------------------


def test_tiny_model_end_to_end_through_transformers(tiny_chat_model_path, gsm8k_dir, tmp_path):
    problems = tmp_path / "train.jsonl"
    with open(gsm8k_dir / "train.jsonl", encoding="utf-8") as file:
        problems.write_text("".join(next(file) for _ in range(2)))
    generations = tmp_path / "generations"
    options = {
        "model": str(tiny_chat_model_path),
        "problems": str(problems),
        "num_samples_per_problem": 2,
        "max_new_tokens": 12,
        "mc_rollouts": 2,
        "mc_search": "linear",
        # Random weights rarely write a blank line: split on a frequent byte-level token instead.
        "step_separator": "e",
        "generation_cache_dir": str(generations),
        "concurrency": 8,
    }
    dataset = load_dataset("prm_builder", "model_sampled", **options)
    assert list(dataset) == ["train"]
    rows = dataset["train"].to_list()
    (summary,) = list_caches(generations)
    drops = prm_builder.load_drops(dataset["train"].cache_files[0]["filename"].rsplit("/", 1)[0])
    assert rows and len(rows) + drops.get("train", {}).get("empty_solution", 0) == 4
    assert summary.generations["sample"] == 4
    cache = ModelSampledConfig(name="model_sampled", **options).generation_cache().load()
    assert len(cache) == 2 and all(len(groups[f"sample:{problem}"]) == 2 for problem, groups in cache.items())
    prefixes = {}  # (problem, prefix) -> rollouts made from it
    for row in rows:
        problem = read_problem_file(problems, "train")[int(row["id"][6:11])]
        text = cache[problem.key][f"sample:{problem.key}"][row["sample_index"]]
        assert row["completions"] == solution_steps(text.text, "e") and row["generation_end"] == text.finish_reason
        assert len(row["labels"]) == len(row["step_scores"]) == len(row["completions"]) >= 1
        assert row["labels"] == [score > 0 for score in row["step_scores"]]
        assert all(score in (0.0, 0.5, 1.0) for score in row["step_scores"])
        # Early stop (the default, waves of 1, 1): a bad step makes both rollouts, a good one stops at
        # its first success; a score is successes over the rollouts made.
        for label, score, made in zip(row["labels"], row["step_scores"], row["step_rollouts"]):
            assert made == 2 if not label else made in (1, 2) and (score * made).is_integer()
        assert row["first_error"] == next((i for i, label in enumerate(row["labels"]) if not label), -1)
        assert row["outcome"] in (grading.CORRECT, grading.INCORRECT, grading.NO_ANSWER)
        assert row["reference_answer"] == problem.reference and row["prompt"] == problem.text
        for i, made in enumerate(row["step_rollouts"]):
            prefixes[(problem.key, "e".join(row["completions"][: i + 1]) + "e")] = made
    assert summary.generations["rollout"] == sum(prefixes.values())

    # Other labelling options reuse every generation: no new segment is written.
    segments = sorted((summary.path / "segments").iterdir())
    for changed in ({"mc_search": "binary"}, {"label_method": "outcome"}):
        relabelled = load_dataset("prm_builder", "model_sampled", **{**options, **changed})["train"]
        assert [r["completions"] for r in relabelled] == [r["completions"] for r in rows]
    assert sorted((summary.path / "segments").iterdir()) == segments


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch):
    from prm_builder.backends import Sampling, vllm

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(ImportError, match=r"backend='vllm' needs vLLM .*pip install 'prm-builder\[vllm\]'"):
        vllm.VLLMBackend("m", None, Sampling(1.0, 1.0, 8))
    monkeypatch.setenv("PRM_BUILDER_VLLM_ARGS", '{"tensor_parallel_size": 2}')
    assert vllm._options_from_environment() == {"tensor_parallel_size": 2}
    monkeypatch.setenv("PRM_BUILDER_VLLM_ARGS", "tensor_parallel_size=2")
    with pytest.raises(ValueError, match="PRM_BUILDER_VLLM_ARGS must be a JSON object"):
        vllm._options_from_environment()


class LocalDownloads:
    """Stands in for datasets' download manager: serves local copies of the URLs asked for."""

    def __init__(self, files: dict[str, str]):
        self.files = files

    def download(self, urls: dict[str, str]) -> dict[str, str]:
        return {key: self.files[url] for key, url in urls.items()}


def test_gsm8k_problems_come_from_the_hub_parquet_files(test_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prm_builder import synthetic

    files = {}
    for split, url in GSM8K_FILES.items():  # the Hub's Parquet layout, made from the local copy
        with open(test_data / "gsm8k" / f"{split}.jsonl", encoding="utf-8") as file:
            rows = [json.loads(line) for line in file]
        files[url] = str(tmp_path / f"{split}.parquet")
        pq.write_table(pa.Table.from_pylist(rows), files[url])
    gsm8k = problems.load_problems("gsm8k", LocalDownloads(files))
    assert {split: len(problems) for split, problems in gsm8k.items()} == {"train": 7473, "test": 1319}
    assert (gsm8k["test"][0].id, gsm8k["test"][0].reference, gsm8k["test"][0].style) == ("test-00000", "18", grading.NUMERIC)


def test_math500_is_downloaded_from_prm800k_and_verified(test_data, tmp_path, monkeypatch):
    """Through the real download path, from a local HTTP server standing in for GitHub's LFS media host.

    The shared MATH500 copy holds the same 500 problems serialized differently (450,564 bytes, not
    PRM800K's 446,564), so the download must be refused, saying so: only PRM800K's file is trusted.
    """
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import datasets
    import huggingface_hub
    from datasets import DownloadConfig, DownloadManager

    from prm_builder.prm800k_download import VerificationError

    site = tmp_path / "site" / "prm800k" / "math_splits"
    site.mkdir(parents=True)
    shutil.copy(test_data / "math500" / "test.jsonl", site / "test.jsonl")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    handler.log_message = lambda *args: None
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("PRM_BUILDER_PRM800K_URL", url)
        # The test session is offline; only this local server is reached.
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        downloads = DownloadManager(download_config=DownloadConfig(cache_dir=str(tmp_path / "downloads")))
        config = ModelSampledConfig(name="model_sampled", problems="math500")
        try:
            with pytest.raises(VerificationError, match=rf"{url}/prm800k/math_splits/test.jsonl is larger than expected: "
                                                         r"expected 446,564 bytes, got 450,564 bytes"):  # fmt: skip
                problems.load_problems(config.problems, downloads)
        finally:
            server.shutdown()
