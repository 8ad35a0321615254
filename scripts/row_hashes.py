"""A sha256 of the rows of every config, built on the test data, to check a refactoring changed none.

Each case is one config with one set of options; for every split it prints the hash of the rows
in order (each row as sorted-key JSON, NaN written as NaN), the row count, the hash of the
features and the drop counts recorded beside the Arrow files. Save the output before a change,
run it again after, and compare:

    python scripts/row_hashes.py > before.txt      # on the unchanged code
    python scripts/row_hashes.py > after.txt && diff before.txt after.txt

Offline, in a temporary datasets cache (so every case is built, never read back from a cache).
model_sampled runs against the stub OpenAI-compatible server of tests/ on 127.0.0.1, answering
deterministically from each request; a case that fails prints its error in place of hashes, so
a failure that changes is a difference too.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def cases(scratch: Path, stub_url: str) -> list[tuple[str, str, dict]]:
    """(case name, config, options)."""
    gsm8k, prm800k, shepherd = DATA / "gsm8k", DATA / "prm800k" / "samples.jsonl", DATA / "math_shepherd" / "samples.jsonl"
    small_gsm8k = scratch / "gsm8k_small"
    small_gsm8k.mkdir()
    for split, count in (("train", 300), ("test", 60)):
        lines = (gsm8k / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:count]
        (small_gsm8k / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    # PRM800K and Math-Shepherd with a broken line and a blank line among the real ones.
    broken_prm800k = scratch / "prm800k_broken.jsonl"
    broken_prm800k.write_text(prm800k.read_text(encoding="utf-8") + "\n{not json\n[1, 2]\n", encoding="utf-8")
    broken_shepherd = scratch / "shepherd_broken.jsonl"
    broken_shepherd.write_text(
        shepherd.read_text(encoding="utf-8") + '\n{"input": "x"}\nnot json\n'
        '{"input": "Q Step 1: a ки", "label": "Q Step 1: a +", "task": "other"}\n', encoding="utf-8"
    )
    prm800k_dir = scratch / "prm800k_dir" / "prm800k" / "data"
    prm800k_dir.mkdir(parents=True)
    for name in ("phase1_train", "phase1_test", "phase2_train", "phase2_test"):
        shutil.copy(prm800k, prm800k_dir / f"{name}.jsonl")
    # The sample lines of MATH500 problems only (all but the one about "7.8 minutes"), and phase 1 only.
    sample_lines = prm800k.read_text(encoding="utf-8").splitlines(keepends=True)
    math500_lines = scratch / "prm800k_math500.jsonl"
    math500_lines.write_text("".join(line for line in sample_lines if "7.8 minutes" not in line), encoding="utf-8")
    phase1_lines = scratch / "prm800k_phase1.jsonl"
    phase1_lines.write_text("".join(line for line in sample_lines if '"generation": null' in line), encoding="utf-8")
    stepwise_file = scratch / "stepwise_rows.jsonl"
    stepwise_file.write_text("".join(json.dumps(row) + "\n" for row in _stepwise_rows()), encoding="utf-8")
    stepwise_renamed = scratch / "stepwise_renamed.jsonl"
    stepwise_renamed.write_text(
        "".join(json.dumps({"question": r["prompt"], "steps": r["completions"], "step_labels": r["labels"], "gold": "4"}) + "\n"
                for r in _stepwise_rows()), encoding="utf-8"
    )  # fmt: skip
    problems = scratch / "sampling_problems.jsonl"
    lines = (gsm8k / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:5]
    math500 = (DATA / "math500" / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:3]
    problems.write_text("".join(lines + math500), encoding="utf-8")
    sampled = {
        "model": "stub-model", "backend": "openai", "base_url": stub_url, "problems": str(problems),
        "num_samples_per_problem": 3, "mc_rollouts": 3, "concurrency": 4, "exclude_problems": "none",
    }  # fmt: skip
    prm800k_files = {"train": [str(prm800k)], "test": [str(prm800k)]}
    return [
        ("synthetic/default", "synthetic", {"problems": str(gsm8k)}),
        ("synthetic/num_proc=2", "synthetic", {"problems": str(gsm8k), "num_proc": 2}),
        ("synthetic/options", "synthetic", {
            "problems": str(small_gsm8k), "seed": 7, "num_incorrect_per_problem": 5, "include_correct": False,
            "strategies": "flip_number,calculation_error", "keep_calculator_annotations": True,
        }),  # fmt: skip
        ("synthetic/max_examples", "synthetic", {"problems": str(small_gsm8k), "max_examples": 101}),
        ("synthetic/sample", "synthetic", {"problems": "sample"}),
        ("synthetic/one_file", "synthetic", {"problems": str(small_gsm8k / "test.jsonl"), "exclude_problems": "none"}),
        ("synthetic/exclude_all_test", "synthetic", {"problems": str(small_gsm8k), "exclude_problems": "gsm8k_test"}),
        ("prm800k/default", "prm800k", {"data_files": prm800k_files}),
        ("prm800k/neutral_negative", "prm800k", {"data_files": prm800k_files, "neutral_as": "negative"}),
        ("prm800k/alternatives", "prm800k", {"data_files": prm800k_files, "alternatives": True}),
        ("prm800k/alternatives_negative", "prm800k", {
            "data_files": prm800k_files, "alternatives": True, "neutral_as": "negative", "include_screening": True,
        }),  # fmt: skip
        ("prm800k/phase2_only", "prm800k", {"data_files": prm800k_files, "phases": [2], "exclude_problems": "none"}),
        ("prm800k/data_dir", "prm800k", {"data_dir": str(scratch / "prm800k_dir"), "phases": "1"}),
        ("prm800k/skip_bad_lines", "prm800k", {"data_files": {"train": [str(broken_prm800k)]}, "on_bad_lines": "skip"}),
        ("prm800k/bad_line_error", "prm800k", {"data_files": {"train": [str(broken_prm800k)]}}),
        ("prm800k/exclude_everything", "prm800k", {"data_files": prm800k_files, "exclude_problems": "math500"}),
        ("prm800k/empty_test_split", "prm800k", {
            "data_files": {"train": [str(prm800k)], "test": [str(math500_lines)]}, "exclude_problems": "math500",
            "alternatives": True,
        }),  # fmt: skip
        ("prm800k/no_row_anywhere", "prm800k", {"data_files": {"train": [str(phase1_lines)]}, "phases": [2]}),
        ("prm800k/num_proc=2", "prm800k", {"data_files": prm800k_files, "alternatives": True, "num_proc": 2}),
        ("math_shepherd/default", "math_shepherd", {"data_files": {"train": [str(shepherd)]}}),
        ("math_shepherd/options", "math_shepherd", {
            "data_files": {"train": [str(shepherd)], "test": [str(broken_shepherd)]}, "tasks": "gsm8k",
            "strip_step_prefix": False, "keep_calculator_annotations": True,
        }),  # fmt: skip
        ("math_shepherd/max_examples", "math_shepherd", {"data_files": {"train": [str(broken_shepherd)]}, "max_examples": 4}),
        ("math_shepherd/exclude_math500", "math_shepherd", {"data_files": {"train": [str(shepherd)]}, "exclude_problems": "math500"}),
        ("stepwise/data_files", "stepwise", {"data_files": {"train": [str(stepwise_file)], "test": [str(stepwise_file)]}}),
        ("stepwise/column_map", "stepwise", {
            "data_files": {"train": [str(stepwise_renamed)]}, "column_map": "reference_answer=gold", "max_examples": 4,
        }),  # fmt: skip
        ("stepwise/exclude_texts", "stepwise", {
            "data_files": {"train": [str(stepwise_file)]}, "exclude_problems": ["What is 2 + 2?", "What is 3 + 3?"],
        }),  # fmt: skip
        ("model_sampled/mc_binary", "model_sampled", {**sampled, "generation_cache_dir": str(scratch / "gen1")}),
        ("model_sampled/mc_linear", "model_sampled", {
            **sampled, "mc_search": "linear", "generation_cache_dir": str(scratch / "gen1"),
        }),  # fmt: skip
        ("model_sampled/outcome", "model_sampled", {
            **sampled, "label_method": "outcome", "num_samples_per_problem": 4, "generation_cache_dir": str(scratch / "gen2"),
        }),  # fmt: skip
        ("model_sampled/exclude_one", "model_sampled", {
            **sampled, "exclude_problems": [json.loads(lines[1])["question"]], "generation_cache_dir": str(scratch / "gen1"),
        }),  # fmt: skip
        ("model_sampled/exclude_default", "model_sampled", {
            **sampled, "exclude_problems": "default", "max_problems": 4, "generation_cache_dir": str(scratch / "gen1"),
        }),  # fmt: skip
    ]


def _stepwise_rows() -> list[dict]:
    return [
        {"prompt": "What is 2 + 2?", "completions": ["2 + 2 = 4.", "The answer is 4."], "labels": [True, True], "reference_answer": "4"},
        {"prompt": "What is 3 + 3?", "completions": ["3 + 3 = 7.", "\\boxed{7}"], "labels": ["+", "-"], "id": "custom-1"},
        {"prompt": "What is 5 * 2?", "completions": ["5 * 2 = 10", "#### 10"], "labels": [1, -1]},
        {"prompt": "", "completions": ["x"], "labels": [True]},
        {"prompt": "Bad labels", "completions": ["x", "y"], "labels": [True, "maybe"]},
        {"prompt": "Count mismatch", "completions": ["x", "y"], "labels": [True]},
        {"prompt": "No steps", "completions": [], "labels": []},
        {"prompt": "What is 9 - 1?", "completions": ["9 - 1 = 8."], "labels": ["correct"], "reference_answer": "8"},
    ]


def responder_for(problem_file: Path):
    """A deterministic "model": each answer a function of the request alone."""
    from tests.openai_stub_server import ScriptedRequest

    references = {}
    for line in problem_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = row.get("question", row.get("problem"))
        answer = row["answer"]
        references[text] = answer.rsplit("####", 1)[1].strip().replace(",", "") if "####" in answer else answer.strip()

    def respond(request: ScriptedRequest) -> list:
        problem = next(text for text in references if text in request.user)
        right = references[problem]
        answers = []
        for choice in range(request.n):
            digest = int(hashlib.sha256(f"{request.user}|{request.prefix}|{request.seed}|{choice}".encode()).hexdigest(), 16)
            if not request.prefix:
                steps = [f"Step {i}: {'a slip' if digest % 7 == i else 'fine'} ({digest % 1000})." for i in range(digest % 4 + 1)]
                final = right if digest % 3 else f"{right}1"
                answers.append("\n\n".join([*steps, f"The answer is \\boxed{{{final}}}."]))
            else:
                good = "a slip" not in request.prefix or digest % 4 == 0
                answers.append(f"So the answer is \\boxed{{{right if good else right + '9'}}}.")
        return answers

    return respond


def row_hash(dataset) -> str:
    digest = hashlib.sha256()
    for row in dataset:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def describe(name: str, config: str, options: dict, scratch: Path) -> list[str]:
    from datasets import load_dataset

    from prm_builder.drops import recorded_drops

    try:
        built = load_dataset("prm_builder", config, **options)
    except Exception as error:  # noqa: BLE001 - a failure is an outcome to compare too
        while type(error).__name__ == "DatasetGenerationError" and error.__cause__ is not None:
            error = error.__cause__
        message = str(error).replace(str(scratch), "<scratch>").replace(str(ROOT), "<root>")
        return [f"{name}: error {type(error).__name__}: {message.splitlines()[0] if message else ''}"]
    drops = recorded_drops(built)
    lines = []
    for split in sorted(built):
        dataset = built[split]
        features = hashlib.sha256(json.dumps(dataset.features.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
        counts = ", ".join(f"{reason}={n}" for reason, n in sorted(drops.get(split, {}).items())) or "none"
        lines.append(f"{name} [{split}]: {len(dataset)} rows sha256={row_hash(dataset)} features={features} drops: {counts}")
    for split in sorted(set(drops) - set(built)):
        counts = ", ".join(f"{reason}={n}" for reason, n in sorted(drops[split].items()))
        lines.append(f"{name} [{split}] left out: drops: {counts}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="a regular expression: run the cases whose name matches")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="row_hashes-"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_CACHE"] = str(scratch / "hf_cache")
    os.environ["HF_HOME"] = str(scratch / "hf_home")
    sys.path.insert(0, str(ROOT))
    import datasets

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    import prm_builder  # noqa: F401 - registers the builder
    from tests.openai_stub_server import StubServer

    try:
        placeholder = scratch / "placeholder"
        placeholder.mkdir()
        # The problems file is written by cases(); the server reads it once the cases exist.
        responder = {}
        with StubServer(lambda request: responder["respond"](request)) as server:
            selected = cases(scratch, server.url)
            responder["respond"] = responder_for(scratch / "sampling_problems.jsonl")
            for name, config, options in selected:
                if args.only and not re.search(args.only, name):
                    continue
                for line in describe(name, config, options, scratch):
                    print(line, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
