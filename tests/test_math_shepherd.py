"""The `math_shepherd` config: exact rows for the 7 real sample lines, bad lines counted by reason."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from datasets import load_dataset

import prm_builder  # noqa: F401  (registers the builder)
from prm_builder import math_shepherd, math_shepherd_convert
from prm_builder.drops import Dropped, recorded_drops

SAMPLES = Path("math_shepherd") / "samples.jsonl"

JANET = {
    "id": "train/0/0",
    "prompt": "Janet pays $40/hour for 3 hours per week of clarinet lessons and $28/hour for 5 hours a week of piano "
    "lessons. How much more does she spend on piano lessons than clarinet lessons in a year?",
    "completions": [
        "Janet spends 3 hours + 5 hours = 8 hours per week on music lessons.",
        "She spends 40 * 3 = 120 on clarinet lessons per week.",
        "She spends 28 * 5 = 140 on piano lessons per week.",
        "Janet spends 120 + 140 = 260 on music lessons per week.",
        "She spends 260 * 52 = 13520 on music lessons in a year. The answer is: 13520",
    ],
    "labels": [True, True, True, True, False],
    "first_error": 4,
    "final_answer": "13520",
    "reference_answer": "",
    "source": "math_shepherd/gsm8k",
}
BUZZ = {
    "id": "train/0/{}",  # the byte offset of the 5th line, filled in by line_ids
    "prompt": "If Buzz bought a pizza with 78 slices at a restaurant and then decided to share it with the waiter in "
    "the ratio of 5:8, with Buzz's ratio being 5, what's twenty less the number of slices of pizza that the waiter ate?",
    "completions": [
        "The total ratio representing the pizza is 5+8 = 13.",
        "The waiter ate 13 x 8 / 13 = 6 slices of the pizza.",
        "Buzz ate 78 - 6 = 72 slices of the pizza.",
        "The waiter ate 20 less than the number of slices that Buzz ate which is 72 - 20 = 52.",
        "The waiter ate 52 slices of the pizza. The answer is: 52",
    ],
    "labels": [True, False, False, False, False],
    "first_error": 1,
    "final_answer": "52",
    "reference_answer": "",
    "source": "math_shepherd/gsm8k",
}
# (number of steps, labels, first_error, final_answer) of every sample line, read off the data by hand.
ALL_LINES = [
    (5, [True, True, True, True, False], 4, "13520"),
    (3, [False, False, False], 0, "16000"),
    (2, [False, False], 0, "40"),
    (5, [False] * 5, 0, "900"),
    (5, [True, False, False, False, False], 1, "52"),
    (2, [False, False], 0, "2.2"),
    (3, [False, False, False], 0, "210"),
]


def line_ids(path, split="train") -> list[str]:
    """Row ids are "<split>/<file index>/<byte offset of the line>": the offsets of every line of a file."""
    offsets, offset = [], 0
    for line in Path(path).read_bytes().splitlines(keepends=True):
        offsets.append(f"{split}/0/{offset}")
        offset += len(line)
    return offsets


def load(path, **options):
    return load_dataset("prm_builder", "math_shepherd", data_files=str(path), **options)


def test_the_seven_real_lines(test_data):
    dataset = load(test_data / SAMPLES)
    rows = dataset["train"].to_list()
    ids = line_ids(test_data / SAMPLES)
    assert rows[0] == JANET and rows[4] == {**BUZZ, "id": ids[4]}
    assert [r["id"] for r in rows] == ids
    assert [(len(r["completions"]), r["labels"], r["first_error"], r["final_answer"]) for r in rows] == ALL_LINES
    assert {r["source"] for r in rows} == {"math_shepherd/gsm8k"}
    assert all("<<" not in step and not step.startswith("Step ") for r in rows for step in r["completions"])
    assert recorded_drops(dataset) == {}


def test_step_prefix_and_calculator_annotations_kept_on_request(test_data):
    row = load(test_data / SAMPLES, strip_step_prefix=False, keep_calculator_annotations=True)["train"][0]
    assert row["completions"][0] == "Step 1: Janet spends 3 hours + 5 hours = <<3+5=8>>8 hours per week on music lessons."
    assert row["completions"][4] == (
        "Step 5: She spends 260 * 52 = <<260*52=13520>>13520 on music lessons in a year. The answer is: 13520"
    )
    assert row["labels"] == JANET["labels"] and row["prompt"] == JANET["prompt"]


def bad_lines(real: dict) -> list:
    """Hand-made broken variants of a real line, each with the reason it is dropped."""
    text, label = real["input"], real["label"]
    return [
        ({**real, "input": text.replace(" ки", ""), "label": label}, "no_tag"),
        ({**real, "label": label[: label.rindex(" -")]}, "tag_label_count_mismatch"),
        ({**real, "label": label.replace("clarinet", "violin")}, "label_text_differs"),
        ({**real, "label": label.replace("lessons. +", "lessons. ?", 1)}, "label_text_differs"),
        ({**real, "input": text + "\nStep 6: more", "label": label + "\nStep 6: more"}, "text_after_last_tag"),
        ({**real, "input": text.replace("Step 1:", "First:"), "label": label.replace("Step 1:", "First:")}, "no_first_step"),
        ({**real, "input": text.replace("Step 2: She spends 40 * 3 = <<40*3=120>>120 on clarinet lessons per week.", ""),
          "label": label.replace("Step 2: She spends 40 * 3 = <<40*3=120>>120 on clarinet lessons per week.", "")},
         "empty_step"),
        ({"input": text, "task": "GSM8K"}, "missing_field"),
        ({**real, "task": "MATH"}, "other_task"),
    ]  # fmt: skip


def test_bad_lines_are_skipped_and_counted_by_reason(test_data, tmp_path):
    lines = (test_data / SAMPLES).read_text(encoding="utf-8").splitlines()
    real = json.loads(lines[0])
    bad = bad_lines(real)
    mixed = tmp_path / "mixed.jsonl"
    # Bad lines between the good ones, plus a broken JSON line and a blank one.
    body = [json.dumps(line) for line, _ in bad] + ["{not json", ""]
    mixed.write_text("\n".join(lines[:3] + body + lines[3:]) + "\n", encoding="utf-8")
    dataset = load(mixed, tasks="gsm8k")
    rows = dataset["train"].to_list()
    assert [r["completions"] for r in rows] == [r["completions"] for r in load(test_data / SAMPLES)["train"]]
    # Ids are byte offsets of the lines: the good lines after the 11 inserted ones moved down.
    ids = line_ids(mixed)
    assert [r["id"] for r in rows] == [ids[n] for n in (0, 1, 2, 14, 15, 16, 17)]
    expected = Counter(reason for _, reason in bad) + Counter(not_json=1)
    assert recorded_drops(dataset) == {"train": expected}


def test_line_row_reasons_match_the_columnwise_checks(test_data):
    """Every bad line fails the Python parser with the reason the Arrow path counted."""
    real = json.loads((test_data / SAMPLES).read_text(encoding="utf-8").splitlines()[0])
    config = math_shepherd.MathShepherdConfig(name="math_shepherd")
    for line, reason in bad_lines(real):
        if "label" not in line or line["task"] == "MATH":
            continue
        with pytest.raises(Dropped, match=reason):
            math_shepherd_convert.line_row(config, line["input"], line["label"], "gsm8k")
    assert math_shepherd_convert.line_row(config, real["input"], real["label"], "gsm8k") == {
        k: v for k, v in JANET.items() if k != "id"
    }


def test_tasks_and_max_examples(test_data, tmp_path):
    lines = [json.loads(line) for line in (test_data / SAMPLES).read_text(encoding="utf-8").splitlines()]
    tagged = tmp_path / "tasks.jsonl"
    tagged.write_text("".join(json.dumps({**line, "task": "MATH" if i % 2 else "GSM8K"}) + "\n" for i, line in enumerate(lines)))
    math_only = load(tagged, tasks=["math"])["train"]
    ids = line_ids(tagged)
    assert math_only["id"] == [ids[1], ids[3], ids[5]]
    assert set(math_only["source"]) == {"math_shepherd/math"}
    assert load(tagged, max_examples=3)["train"]["id"] == ids[:3]


def test_data_dir_split_files(test_data, tmp_path):
    (tmp_path / "train.jsonl").write_text((test_data / SAMPLES).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "test.jsonl").write_text((test_data / SAMPLES).read_text(encoding="utf-8").splitlines()[0] + "\n")
    dataset = load_dataset("prm_builder", "math_shepherd", data_dir=str(tmp_path))
    assert {split: len(rows) for split, rows in dataset.items()} == {"train": 7, "test": 1}
    assert dataset["test"][0]["id"] == "test/0/0"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tasks": "physics"}, r"tasks must be a non-empty list of \['gsm8k', 'math'\], got 'physics'"),
        ({"max_examples": 0}, r"max_examples must be >= 1, got 0"),
        ({"strip_step_prefix": "yes"}, r"strip_step_prefix must be True or False, got 'yes'"),
        ({"data_dir": "/nonexistent/ms"}, r"data_dir must be a folder .*got '/nonexistent/ms': no such folder"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("prm_builder", "math_shepherd", **options)


def test_offline_download_names_the_hub_file():
    with pytest.raises(ConnectionError, match=r"math_shepherd downloads https://huggingface.co/datasets/peiyi9979/"
                       r"Math-Shepherd/resolve/main/math-shepherd.jsonl .* could not: .*pass data_files="):
        load_dataset("prm_builder", "math_shepherd")


def test_lines_with_a_nul_byte_convert(test_data, tmp_path):
    # Lines with a NUL byte in the text go through the Python parser (once needed by the column-wise
    # label check, kept so rows keep their order), which converts them after the other lines of their range.
    lines = [json.loads(line) for line in (test_data / SAMPLES).read_text(encoding="utf-8").splitlines()]
    odd = {key: lines[0][key].replace("clarinet lessons per", "clarinet\x00lessons per") for key in ("input", "label")}
    path = tmp_path / "nul.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in [{**lines[0], **odd}, *lines[1:]]))
    rows = load(path)["train"].to_list()
    assert [r["id"] for r in rows] == line_ids(path)[1:] + line_ids(path)[:1]
    assert rows[-1]["completions"][1] == "She spends 40 * 3 = 120 on clarinet\x00lessons per week."
    assert rows[-1]["labels"] == JANET["labels"]


def test_many_byte_ranges_give_the_same_rows(test_data, monkeypatch):
    one_range = load(test_data / SAMPLES)["train"].to_list()
    monkeypatch.setattr(math_shepherd, "SHARD_BYTES", 1500)  # 6 ranges, converted in threads
    assert load(test_data / SAMPLES, max_examples=5)["train"].to_list() == one_range[:5]
    assert load(test_data / SAMPLES, download_mode="force_redownload")["train"].to_list() == one_range


@pytest.mark.slow  # worker processes
def test_num_proc_gives_the_same_rows(test_data, monkeypatch):
    one_process = load(test_data / SAMPLES)["train"].to_list()
    monkeypatch.setattr(math_shepherd, "SHARD_BYTES", 1500)
    assert load(test_data / SAMPLES, num_proc=2, download_mode="force_redownload")["train"].to_list() == one_process


def test_a_math_line_with_latex_and_a_multiline_problem(tmp_path):
    problem = "Let $f(x) = x^2$.\nWhat is $\\sqrt{36 \\times \\sqrt{16}}$?"
    steps = ["Step 1: I know that $\\sqrt{16} = 4$, and <<not an annotation>> stays.",
             "Step 2: So $\\sqrt{36 \\times 4} = \\sqrt{144} = 12$. The answer is: 12"]  # fmt: skip
    line = {"input": f"{problem} " + " ки\n".join(steps) + " ки",
            "label": f"{problem} " + " +\n".join(steps) + " -", "task": "MATH"}  # fmt: skip
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (row,) = load(path)["train"].to_list()
    assert row == {
        "id": "train/0/0",
        "prompt": problem,
        "completions": ["I know that $\\sqrt{16} = 4$, and <<not an annotation>> stays.",
                        "So $\\sqrt{36 \\times 4} = \\sqrt{144} = 12$. The answer is: 12"],  # fmt: skip
        "labels": [True, False],
        "first_error": 1,
        "final_answer": "12",
        "reference_answer": "",
        "source": "math_shepherd/math",
    }


# Fragments that stress the column-wise step rewriting (steps cut by byte offsets, prefixes read
# off each step's first bytes, annotations found from the positions of "<", "=" and ">"):
# prefixes inside and at the edges of steps, with long numbers or no colon, annotations at the
# edges of steps or running into the next one, nested or with two "=", a step made only of an
# annotation, Unicode spaces, and a repeated answer phrase.
FRAGMENTS = ["Step 2:", "Step 10: ", "Step :", "Step 123:", "Step 4", "12345678901", ":", " ", "\u00a0", "\u2003",
             "\n", "<<", ">>", "=", "<<4*2=8>>", "<<a=b=c>>", "<<<1=1>>>", "<<1=\n2>>", "x", "é", "7",
             "The answer is: 3", "ки"]  # fmt: skip
# How steps after the first start: numbered as in Math-Shepherd, or not quite (an Arabic-Indic
# digit is a digit to Python's \d, not a step number to either reading).
NUMBERING = ["Step {k}: ", "Step {k}:", "", "Step 10{k}:", "Step 1234567890{k}: ", "Step {k} :", "Step \u0663: "]


@settings(max_examples=40, deadline=None)
@example(steps=["x <<7", "=8>> y", "<<4*2=8>>"], marks=list("+-+-"), numbering=NUMBERING[0], strip_step_prefix=True,
         keep_calculator_annotations=False)  # fmt: skip
@example(steps=["", ""], marks=list("++++"), numbering="", strip_step_prefix=True, keep_calculator_annotations=False)
@example(steps=["x", "y"], marks=list("+-+-"), numbering=NUMBERING[-1], strip_step_prefix=True, keep_calculator_annotations=False)
@given(
    steps=st.lists(st.lists(st.sampled_from(FRAGMENTS[:-1]), max_size=6).map("".join), min_size=1, max_size=4),
    marks=st.lists(st.sampled_from("+-"), min_size=4, max_size=4),
    numbering=st.sampled_from(NUMBERING),
    strip_step_prefix=st.booleans(),
    keep_calculator_annotations=st.booleans(),
)
def test_columnwise_rows_match_line_row(steps, marks, numbering, strip_step_prefix, keep_calculator_annotations):
    config = math_shepherd.MathShepherdConfig(
        name="math_shepherd", strip_step_prefix=strip_step_prefix, keep_calculator_annotations=keep_calculator_annotations
    )
    # Each step also on its own line, and all of them in one: rows of several lines share one buffer.
    lines = [[step] for step in steps] + [steps]
    numbered = [["Step 1: " + line[0]] + [numbering.format(k=k + 2) + s for k, s in enumerate(line[1:])] for line in lines]
    inputs = ["Q? " + "".join(f"{s} ки\n" for s in line) for line in numbered]
    labels = ["Q? " + "".join(f"{s} {m}\n" for s, m in zip(line, marks)) for line in numbered]
    records = pa.table({"input": inputs, "label": labels, "task": ["GSM8K"] * len(lines)})
    ids = pa.array([str(index) for index in range(len(lines))])
    drops = Counter()
    rows = {row.pop("id"): row for row in math_shepherd_convert.convert(config, records, ids, drops).to_pylist()}
    expected, expected_drops = {}, Counter()
    for index, (text, label) in enumerate(zip(inputs, labels)):
        try:
            expected[str(index)] = math_shepherd_convert.line_row(config, text, label, "gsm8k")
        except Dropped as error:
            expected_drops[error.reason] += 1
    assert rows == expected
    assert drops == expected_drops
