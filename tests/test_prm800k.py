"""The `prm800k` config: exact rows of the real sample lines, every edge case, download and verify.

Expected rows of the 6 real lines in tests/data/prm800k/samples.jsonl are written out by
hand from the raw JSON: which completion each step of a row is (step index, completion index,
or "human"), the raw ratings, the final answer. Texts are looked up in the raw JSON by those
hand-written positions, so the test never asks the code under test what the rows should be.
"""

import functools
import hashlib
import http.server
import json
import logging
import re
import shutil
import threading
from collections import Counter
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from datasets.exceptions import DatasetGenerationError

import prm_builder
from prm_builder import cli, jsonl, prm800k, prm800k_download
from prm_builder.drops import Dropped, load_drops

SAMPLES = "prm800k/samples.jsonl"
LABEL_FILES = ("phase1_train.jsonl", "phase1_test.jsonl", "phase2_train.jsonl", "phase2_test.jsonl")

L0 = "phase1/e90a38f3-3135-4465-87af-3e6322e3d772/2022-07-30T23:23:32.118856"
L1 = "phase2/cc88bf76-df08-4041-be67-3464279cb3b1/2022-11-22T16:51:29.980606"
L2 = "phase1/e90a38f3-3135-4465-87af-3e6322e3d772/2022-07-13T18:55:54.496450"
L3 = "phase1/d8aa7923-b970-45e1-9734-e4a7f6c4a7db/2022-08-07T22:45:16.994086"
L4 = "phase1/e90a38f3-3135-4465-87af-3e6322e3d772/2022-08-04T19:19:50.318226"
L5 = "phase2/ad8d8d13-47e3-4d75-ba68-f2e107b6f48e/2022-12-24T05:01:11.533682"

# Per sample line: (id base, phase, generation, finish_reason, reference answer, trajectory, alternatives).
# A trajectory is (steps, ratings, final answer); a step is (step index, completion index) or
# (step index, "human"). An alternative is (step, completion, rating, final answer): its row is the
# trajectory's first `step` steps plus that completion.
EXPECTED = [
    (
        L0, 1, None, "solution", "29",
        ([(0, 0), (1, "human"), (2, 0), (3, 0), (4, 0), (5, 4)], [1, 1, 1, 1, 1, 1], "29"),
        [(1, 0, -1, ""), (1, 1, -1, ""), (1, 2, -1, ""), (1, 3, -1, ""), (1, 4, -1, ""),
         (5, 0, 0, ""), (5, 1, 1, ""), (5, 2, 1, ""), (5, 3, 1, "29")],
    ),
    (
        # Phase 2 found_error: step 6 has no chosen completion; the pre-generated step 6 (rated -1) continues.
        L1, 2, 6, "found_error", "28800",
        ([(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0)], [1, 0, 1, 1, 1, 1, -1], "7200"),
        [(6, 1, 1, ""), (6, 2, 1, ""), (6, 3, 1, "")],
    ),
    (
        L2, 1, None, "solution", "468",
        ([(0, 0), (1, 0), (2, 0), (3, 0), (4, 1)], [1, 1, 1, 1, 1], "468"),
        [(4, 0, 0, ""), (4, 2, 1, "468"), (4, 3, 1, "468"), (4, 4, 1, "468"), (4, 5, 1, "468"), (4, 6, 1, "468")],
    ),
    (
        L3, 1, None, "solution", "9",
        ([(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 3), (6, 0)], [1, 1, 1, 1, 1, 1, 1], "9"),
        [(5, 0, -1, ""), (5, 1, -1, ""), (5, 2, 1, ""), (5, 4, 1, ""), (5, 5, -1, ""), (5, 6, 1, "")],
    ),
    (
        # give_up: steps 0-6 chosen, step 7 the labeler's own, step 8 all null (the walk stops).
        L4, 1, None, "give_up", "1+2\\sqrt{3}",
        ([(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, "human")], [1] * 8, ""),
        [(7, k, -1, "") for k in range(6)],
    ),
    (
        # Screening question (generation -1, ground truth null): kept only with include_screening.
        L5, 2, -1, "solution", "",
        ([(i, 0) for i in range(12)], [1] * 12, "8, 3, 1"),
        [],
    ),
]


@pytest.fixture(scope="module")
def raw_lines(test_data) -> list[dict]:
    return [json.loads(line) for line in (test_data / SAMPLES).read_text().splitlines()]


def step_text(raw: dict, step: tuple) -> str:
    entry = raw["label"]["steps"][step[0]]
    return entry["human_completion"]["text"] if step[1] == "human" else entry["completions"][step[1]]["text"]


def labels_of(ratings, neutral_as):
    return [r == 1 or (r == 0 and neutral_as == "positive") for r in ratings]


def first_false(labels):
    return labels.index(False) if False in labels else -1


def expected_rows(raw: dict, spec, neutral_as: str, alternatives: bool) -> list[dict]:
    row_id, phase, generation, finish_reason, reference, (steps, ratings, final), alts = spec
    rows = [(row_id, steps, ratings, final)]
    if alternatives:
        for step, completion, rating, alt_final in alts:
            rows.append(
                (f"{row_id}/step{step}/completion{completion}", steps[:step] + [(step, completion)],
                 ratings[:step] + [rating], alt_final)
            )
    result = []
    for rid, row_steps, row_ratings, row_final in rows:
        labels = labels_of(row_ratings, neutral_as)
        result.append({
            "id": rid,
            "prompt": raw["question"]["problem"],
            "completions": [step_text(raw, s) for s in row_steps],
            "labels": labels,
            "first_error": first_false(labels),
            "final_answer": row_final,
            "reference_answer": reference,
            "source": f"prm800k/phase{phase}",
            "ratings": row_ratings,
            "phase": phase,
            "generation": generation,
            "finish_reason": finish_reason,
        })
    return result


def make_config(**options) -> prm800k.PRM800KConfig:
    return prm800k.PRM800KConfig(name="prm800k", **options)


def rows_of(record: dict, drops: Counter | None = None, **options) -> list[dict]:
    return list(prm800k.line_rows(make_config(**options), record, Counter() if drops is None else drops))


def load(**options):
    # The sample lines come from PRM800K's train and test files alike, and 4 of them are MATH500
    # problems, which the default exclude_problems leaves out of a train split (tested below):
    # the conversion tests read every line.
    return datasets.load_dataset("prm_builder", "prm800k", **{"exclude_problems": "none", **options})


def build_error(**options) -> Exception:
    """The error of a build; datasets wraps those raised while generating rows, so unwrap it."""
    with pytest.raises(Exception) as caught:
        load(**options)
    error = caught.value
    return error.__cause__ if isinstance(error, DatasetGenerationError) else error


# -- the 6 real lines -------------------------------------------------------------------------------


@pytest.mark.parametrize("alternatives", [False, True])
@pytest.mark.parametrize("neutral_as", ["positive", "negative"])
@pytest.mark.parametrize("line", range(6))
def test_sample_line_rows(raw_lines, line, neutral_as, alternatives):
    got = rows_of(raw_lines[line], neutral_as=neutral_as, alternatives=alternatives, include_screening=True)
    assert got == expected_rows(raw_lines[line], EXPECTED[line], neutral_as, alternatives)


def test_row_counts_per_sample_line(raw_lines):
    # Counted by hand from the raw JSON: rated alternatives at the steps each walk reached.
    counts = [len(rows_of(raw, alternatives=True, include_screening=True)) for raw in raw_lines]
    assert counts == [10, 4, 7, 7, 7, 1]


def test_phase2_found_error_row_written_out(raw_lines):
    """One row spelled out in full, texts included: the phase 2 line under neutral_as='negative'."""
    rows = rows_of(raw_lines[1], neutral_as="negative", alternatives=True)
    prefix = [
        "I notice that there are three groups of people: Democrats, Republicans, and Independent.",
        "I wonder how many ways I can arrange these groups around the circle, ignoring the order within each group for now.",
        "I recall that the number of ways to arrange n distinct objects around a circle is (n-1)!, since we can fix one object and then permute the rest.",
        "So, for the three groups, there are (3-1)! = 2! = 2 ways to arrange them around the circle.",
        "For example, one way is D-R-I, and the other way is R-D-I, where D stands for Democrats, R for Republicans, and I for Independent.",
        "Now, I need to consider the order within each group.",
    ]
    common = {
        "prompt": "A Senate committee has 5 Democrats, 5 Republicans, and 1 Independent.  In how many ways can they "
        "sit around a circular table if all the members of each party all sit next to each other?  (Two seatings "
        "are considered equivalent if one is a rotation of the other.)",
        "reference_answer": "28800",
        "source": "prm800k/phase2",
        "phase": 2,
        "generation": 6,
        "finish_reason": "found_error",
    }
    assert rows[0] == {
        "id": L1,
        "completions": prefix + [
            "For the Democrats, there are 5! ways to order them in a line, but only half of them are distinct "
            "around a circle, since reversing the order gives the same seating."
        ],
        "labels": [True, False, True, True, True, True, False],
        "first_error": 1,
        "final_answer": "7200",
        "ratings": [1, 0, 1, 1, 1, 1, -1],
        **common,
    }
    assert rows[1] == {
        "id": f"{L1}/step6/completion1",
        "completions": prefix + ["For the Democrats, there are 5! ways to arrange them in a line, and the same for the Republicans."],
        "labels": [True, False, True, True, True, True, True],
        "first_error": 1,
        "final_answer": "",
        "ratings": [1, 0, 1, 1, 1, 1, 1],
        **common,
    }


def test_human_completion_row_written_out(raw_lines):
    (row,) = rows_of(raw_lines[0])
    assert row["completions"] == [
        "Let's call the price of a pencil p and the price of a jumbo eraser e. Then we can write two equations.",
        "We have $3p+e=1.24$ and $5p+e=1.82$.",
        "To solve this system, let's subtract the first equation from the second equation. This will eliminate e.",
        "$5p+e-3p-e=1.82-1.24$.",
        "This simplifies to $2p=0.58$. So $p=0.29$.",
        "That means a pencil costs 29 cents.\n\n# Answer\n\n29",
    ]
    assert row["labels"] == [True] * 6 and row["ratings"] == [1] * 6 and row["first_error"] == -1


@pytest.mark.parametrize("alternatives", [False, True])
@pytest.mark.parametrize("neutral_as", ["positive", "negative"])
def test_samples_through_load_dataset(test_data, raw_lines, neutral_as, alternatives):
    dataset = load(data_files=str(test_data / SAMPLES), neutral_as=neutral_as, alternatives=alternatives)
    expected = [row for line in range(5) for row in expected_rows(raw_lines[line], EXPECTED[line], neutral_as, alternatives)]
    assert dataset["train"].to_list() == expected
    assert dataset["train"].features == prm800k.FEATURES
    assert load_drops(Path(dataset["train"].cache_files[0]["filename"]).parent) == {"train": Counter(screening_question=1)}


# -- hand-made lines: every edge case ---------------------------------------------------------------


def completion(text, rating):
    return {"text": text, "rating": rating, "flagged": False}


def step(completions=None, chosen=None, human=None):
    return {"completions": completions, "human_completion": human, "chosen_completion": chosen}


def record(steps, *, phase=1, finish_reason="solution", pre_generated=None, answer=None, **fields):
    question = {"problem": "What is 1+1?", "ground_truth_answer": "2"}
    if phase == 2:
        question.update(pre_generated_steps=pre_generated or [], pre_generated_answer=answer)
    return {
        "labeler": "L",
        "timestamp": "T",
        "generation": 3 if phase == 2 else None,
        "is_quality_control_question": False,
        "is_initial_screening_question": False,
        "question": question,
        "label": {"steps": steps, "total_time": 1, "finish_reason": finish_reason},
        **fields,
    }


def summary(rows):
    """(id, completions, ratings, labels, final_answer) of each row, for compact expectations."""
    return [(r["id"], r["completions"], r["ratings"], r["labels"], r["final_answer"]) for r in rows]


def test_null_step_stops_the_walk():
    line = record([step([completion("a", 1)], chosen=0), None, step([completion("c", 1)], chosen=0)])
    assert summary(rows_of(line, alternatives=True)) == [("phase1/L/T", ["a"], [1], [True], "")]


def test_step_with_all_fields_null_stops_the_walk():
    line = record([step([completion("a", 1)], chosen=0), step(), step([completion("c", 1)], chosen=0)])
    assert summary(rows_of(line)) == [("phase1/L/T", ["a"], [1], [True], "")]


def test_null_rating_stops_before_the_step_and_gives_no_alternative():
    line = record([
        step([completion("a", 1)], chosen=0),
        step([completion("b0", -1), completion("b1", None), completion("b2", 0)], chosen=1),
        step([completion("c", 1)], chosen=0),
    ])
    assert summary(rows_of(line, alternatives=True)) == [
        ("phase1/L/T", ["a"], [1], [True], ""),
        ("phase1/L/T/step1/completion0", ["a", "b0"], [1, -1], [True, False], ""),
        ("phase1/L/T/step1/completion2", ["a", "b2"], [1, 0], [True, True], ""),
    ]


def test_null_rated_alternative_gives_no_row():
    line = record([step([completion("a", 1), completion("x", None), completion("y", -1)], chosen=0)])
    assert [r["id"] for r in rows_of(line, alternatives=True)] == ["phase1/L/T", "phase1/L/T/step0/completion2"]


def test_human_completion_is_positive_and_continues():
    human = {"text": "mine\n\n# Answer\n\n2", "rating": None, "source": "human", "flagged": False}
    line = record([
        step([completion("a", 0)], chosen=0),
        step([completion("wrong", -1)], human=human),
    ], finish_reason="solution")
    assert summary(rows_of(line, neutral_as="negative", alternatives=True)) == [
        ("phase1/L/T", ["a", "mine\n\n# Answer\n\n2"], [0, 1], [False, True], "2"),
        ("phase1/L/T/step1/completion0", ["a", "wrong"], [0, -1], [False, False], ""),
    ]


def test_phase1_step_without_choice_stops_and_its_rated_completions_are_alternatives():
    line = record([step([completion("a", 1)], chosen=0), step([completion("b0", -1), completion("b1", -1)])],
                  finish_reason="found_error")
    assert summary(rows_of(line)) == [("phase1/L/T", ["a"], [1], [True], "")]
    assert [r["id"] for r in rows_of(line, alternatives=True)][1:] == [
        "phase1/L/T/step1/completion0", "phase1/L/T/step1/completion1"]


def test_phase2_continues_with_the_pre_generated_step():
    line = record(
        [step([completion("p0", 1)], chosen=0), step([completion("other", 1), completion("p1", -1)])],
        phase=2, finish_reason="found_error", pre_generated=["p0", "p1", "p2\n\n# Answer\n\n5"], answer="5",
    )
    assert summary(rows_of(line, alternatives=True)) == [
        ("phase2/L/T", ["p0", "p1"], [1, -1], [True, False], "5"),
        ("phase2/L/T/step1/completion0", ["p0", "other"], [1, 1], [True, True], ""),
    ]


def test_phase2_without_pre_generated_answer_uses_the_answer_section():
    line = record([step([completion("p0\n# Answer\n 7 ", 1)], chosen=0)], phase=2, pre_generated=["p0"], answer=None)
    assert rows_of(line)[0]["final_answer"] == "7"


def test_empty_trajectory_is_counted_and_alternatives_still_come():
    drops = Counter()
    line = record([step([completion("a", -1), completion("b", 1)])], finish_reason="found_error")
    assert summary(rows_of(line, drops, alternatives=True)) == [
        ("phase1/L/T/step0/completion0", ["a"], [-1], [False], ""),
        ("phase1/L/T/step0/completion1", ["b"], [1], [True], ""),
    ]
    assert drops == Counter(empty_trajectory=1)


@pytest.mark.parametrize(
    ("fields", "options", "reason"),
    [
        ({"label": {"steps": [], "finish_reason": "bad_problem"}}, {}, "bad_problem"),
        ({"is_quality_control_question": True}, {}, "quality_control_question"),
        ({"is_initial_screening_question": True}, {}, "screening_question"),
        ({"generation": -1}, {}, "screening_question"),
        ({}, {"phases": [2]}, "other_phase"),
    ],
)
def test_dropped_lines_are_counted(fields, options, reason):
    drops = Counter()
    line = {**record([step([completion("a", 1)], chosen=0)]), **fields}
    assert rows_of(line, drops, **options) == []
    assert drops == Counter({reason: 1})


def test_include_screening_keeps_screening_and_quality_control_lines():
    line = {**record([step([completion("a", 1)], chosen=0)]), "is_quality_control_question": True, "generation": -1}
    (row,) = rows_of(line, include_screening=True)
    assert (row["phase"], row["generation"]) == (2, -1)


def test_exclude_problems_list_is_applied_by_the_builder_to_each_row(tmp_path):
    # The builder alone applies exclude_problems: prm800k yields the rows, the builder drops and
    # counts each row of an excluded problem (here a trajectory and its alternative).
    lines = tmp_path / "lines.jsonl"
    kept = {**record([step([completion("b", 1)], chosen=0)]), "question": {"problem": "What is 2+2?"}}
    excluded = record([step([completion("a", 1), completion("c", -1)], chosen=0)])
    lines.write_text("".join(json.dumps(line) + "\n" for line in (excluded, kept)))
    dataset = load(data_files=str(lines), alternatives=True, exclude_problems=["  What is 1+1?\n", "other problem"])
    assert dataset["train"]["prompt"] == ["What is 2+2?"]
    drops = load_drops(Path(dataset["train"].cache_files[0]["filename"]).parent)
    assert drops == {"train": Counter({"contaminated:given_problems": 2})}


def test_default_leaves_math500_problems_out_of_the_train_split(test_data):
    dataset = datasets.load_dataset("prm_builder", "prm800k", data_files=str(test_data / SAMPLES))
    assert dataset["train"]["id"] == [L2]
    drops = load_drops(Path(dataset["train"].cache_files[0]["filename"]).parent)
    assert drops == {"train": Counter({"contaminated:math500": 4, "screening_question": 1})}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"labeler": "L", "timestamp": "T", "label": {"steps": []}}, "no_question"),
        ({"labeler": "L", "timestamp": "T", "question": {"problem": "p"}}, "no_label"),
        ({"question": {"problem": "p"}, "label": {"steps": []}}, "no_id"),
        (record([step([completion("a", 1)], chosen=3)]), "bad_chosen_completion"),
        (record([step([completion("a", 2)], chosen=0)]), "bad_rating"),
        (record([step([{"rating": 1}], chosen=0)]), "bad_completion"),
    ],
)
def test_malformed_records_name_the_problem(line, reason):
    with pytest.raises(Dropped) as caught:
        rows_of(line)
    assert caught.value.reason == reason


def test_answer_section():
    assert prm800k.answer_section("So 29 cents.\n\n# Answer\n\n29") == "29"
    assert prm800k.answer_section("# Answer\n\n7200") == "7200"
    assert prm800k.answer_section("no answer here") == ""


# -- files: layouts, bad lines, shards ----------------------------------------------------------------


@pytest.fixture
def label_dir(tmp_path, raw_lines) -> Path:
    """The 6 sample lines spread over the four upstream file names (flat folder)."""
    folder = tmp_path / "labels"
    folder.mkdir()
    phase1 = [raw for raw in raw_lines if raw["generation"] is None]
    phase2 = [raw for raw in raw_lines if raw["generation"] is not None]
    parts = {"phase1_train.jsonl": phase1[:3], "phase1_test.jsonl": phase1[3:],
             "phase2_train.jsonl": phase2[:1], "phase2_test.jsonl": phase2[1:]}
    for name, lines in parts.items():
        (folder / name).write_text("".join(json.dumps(raw) + "\n" for raw in lines))
    return folder


def expected_split_ids():
    return {"train": [L0, L2, L3, L1], "test": [L4]}  # files read phase 1 then phase 2; L5 is screening


def test_data_dir_flat_and_repository_layout(tmp_path, label_dir):
    flat = load(data_dir=str(label_dir))
    assert {split: flat[split]["id"] for split in flat} == expected_split_ids()
    clone = tmp_path / "clone"
    shutil.copytree(label_dir, clone / "prm800k" / "data")
    nested = load(data_dir=str(clone), cache_dir=str(tmp_path / "other_cache"))
    assert {split: nested[split].to_list() for split in nested} == {split: flat[split].to_list() for split in flat}


def test_data_dir_with_phases_reads_only_those_files(label_dir):
    (label_dir / "phase1_train.jsonl").unlink()
    (label_dir / "phase1_test.jsonl").unlink()
    dataset = load(data_dir=str(label_dir), phases="2", include_screening=True)
    assert {split: dataset[split]["id"] for split in dataset} == {"train": [L1], "test": [L5]}


def test_data_dir_missing_file_names_what_was_expected(label_dir):
    (label_dir / "phase2_test.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"expected .*phase2_test\.jsonl.*found \['phase1_test\.jsonl'"):
        load(data_dir=str(label_dir))


def test_lfs_pointer_in_data_dir(label_dir):
    (label_dir / "phase1_test.jsonl").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:f4b3bc5b\nsize 829105\n"
    )
    with pytest.raises(prm800k_download.VerificationError, match=r"phase1_test\.jsonl is a Git LFS pointer.*git lfs pull"):
        load(data_dir=str(label_dir))


def test_bad_json_line_names_file_and_line(tmp_path, test_data):
    path = tmp_path / "broken.jsonl"
    lines = (test_data / SAMPLES).read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ["{not json", ""] + lines[2:]) + "\n")
    error = build_error(data_files=str(path))
    assert isinstance(error, ValueError)
    assert re.search(rf"{path}, line 3: not a PRM800K record: not valid JSON.*on_bad_lines='skip'", str(error))
    skipped = load(data_files=str(path), on_bad_lines="skip", cache_dir=str(tmp_path / "skip_cache"))
    assert skipped["train"]["id"] == [L0, L1, L2, L3, L4]
    drops = load_drops(Path(skipped["train"].cache_files[0]["filename"]).parent)
    assert drops == {"train": Counter({"malformed:not_json": 1, "screening_question": 1})}


def test_missing_label_names_file_and_line(tmp_path):
    path = tmp_path / "no_label.jsonl"
    path.write_text(json.dumps(record([])) + "\n" + json.dumps({"labeler": "L", "timestamp": "U", "question": {"problem": "p"}}) + "\n")
    error = build_error(data_files=str(path))
    assert re.search(rf"{path}, line 2: not a PRM800K record: missing 'label' object", str(error))


def test_truncated_file_says_so(tmp_path, test_data):
    path = tmp_path / "phase1_train.jsonl"
    data = (test_data / SAMPLES).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    error = build_error(data_files=str(path))
    assert re.search(rf"{path}, line \d+: .*not valid JSON.*looks truncated", str(error))


def test_byte_range_shards_cover_the_file_at_line_starts(tmp_path):
    path = tmp_path / "lines.jsonl"
    lines = [f'{{"n": {i}, "pad": "{"x" * (i * 7 % 50)}"}}\n'.encode() for i in range(200)]
    data = b"".join(lines)
    path.write_bytes(data)
    starts = {0}
    for line in lines:
        starts.add(max(starts) + len(line))
    for shard_bytes in (1, 10, 333, 4096, len(data), 10 * len(data)):
        shards = jsonl.byte_range_shards([str(path)], shard_bytes)
        assert shards[0][1] == 0 and shards[-1][2] == len(data)
        assert all(a[2] == b[1] for a, b in zip(shards, shards[1:]))
        assert all(start in starts and start < end for _, start, end in shards)
        read = [line for p, s, e in shards for _, line in prm800k._lines(p, s, e)]
        assert read == lines


def test_num_proc_gives_identical_rows(tmp_path, test_data, monkeypatch):
    path = tmp_path / "many.jsonl"
    raw = [json.loads(line) for line in (test_data / SAMPLES).read_text().splitlines()]
    with path.open("w") as file:
        for copy in range(20):
            for line in raw:
                file.write(json.dumps({**line, "timestamp": f"{line['timestamp']}-{copy}"}) + "\n")
    monkeypatch.setattr(prm800k, "SHARD_BYTES", 20_000)  # several shards from one small file
    one = load(data_files=str(path), alternatives=True, cache_dir=str(tmp_path / "one"))
    two = load(data_files=str(path), alternatives=True, num_proc=2, cache_dir=str(tmp_path / "two"))
    assert len(one["train"]) == 20 * 35
    assert one["train"].to_list() == two["train"].to_list()
    assert len(set(one["train"]["id"])) == len(one["train"])
    assert load_drops(Path(two["train"].cache_files[0]["filename"]).parent) == {"train": Counter(screening_question=20)}


def test_exclude_math500_from_every_split(tmp_path, test_data, label_dir, caplog):
    # "math500" is built into the package: no math_splits/ copy and no network needed.
    clone = tmp_path / "clone" / "prm800k"
    shutil.copytree(label_dir, clone / "data")
    with caplog.at_level(logging.WARNING):
        dataset = load(data_dir=str(clone / "data"), exclude_problems="math500")
    # 4 of the 5 non-screening sample problems are MATH500 test problems; "7.8 minutes" is not.
    # The test split keeps no row, and datasets cannot load an empty split: it is left out.
    assert {split: dataset[split]["id"] for split in dataset} == {"train": [L2]}
    assert "test: dropped 2 items: 1 contaminated:math500, 1 screening_question" in caplog.text
    assert "prm800k: split 'test' is left out: every row was dropped" in caplog.text
    by_path = load(data_files=str(test_data / SAMPLES), exclude_problems=str(test_data / "math500" / "test.jsonl"))
    assert by_path["train"]["id"] == [L2]
    drops = load_drops(Path(by_path["train"].cache_files[0]["filename"]).parent)
    assert drops == {"train": Counter({"contaminated:test.jsonl": 4, "screening_question": 1})}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"phases": [3]}, r"phases must be a non-empty list of \[1, 2\].*got \[3\]"),
        ({"phases": "1,x"}, r"phases must be .*got '1,x'"),
        ({"neutral_as": "drop"}, r"neutral_as must be one of \['positive', 'negative'\], got 'drop'"),
        ({"on_bad_lines": "warn"}, r"on_bad_lines must be one of \['error', 'skip'\], got 'warn'"),
        ({"alternatives": "yes"}, r"alternatives must be True or False, got 'yes'"),
        ({"exclude_problems": "math5000"}, r"exclude_problems must be 'default', .*got 'math5000': not a built-in set"),
        ({"exclude_problems": "problems.jsonl"}, r"exclude_problems must be .*got 'problems.jsonl': no such file"),
        ({"data_dir": "/nonexistent/prm800k"}, r"data_dir must be a folder .*got '/nonexistent/prm800k': no such folder"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        load(**options)


def test_phases_from_the_command_line_string_or_one_number():
    assert make_config(phases="2, 1").phases == [1, 2]
    assert make_config(phases=2).phases == [2]


def test_no_row_in_any_split_is_an_error(test_data, tmp_path):
    phase1_only = tmp_path / "phase1.jsonl"
    phase1_only.write_text("".join(line + "\n" for line in (test_data / SAMPLES).read_text().splitlines()[2:5]))
    with pytest.raises(ValueError, match=r"prm800k: no split has any row with these options \(train: dropped 3 items: 3 other_phase\)"):
        load(data_files=str(phase1_only), phases=[2])


def test_streaming_reads_local_files(label_dir):
    streamed = load(data_dir=str(label_dir), streaming=True)
    assert {split: [row["id"] for row in streamed[split]] for split in streamed} == expected_split_ids()


def test_streaming_without_local_files_says_what_to_do():
    with pytest.raises(ValueError, match=r"streaming=True reads local copies only \(data_dir= or data_files=\)"):
        load(streaming=True)


# -- download and verification over a real local HTTP server ----------------------------------------


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files as the LFS media address does, `Range: bytes=N-` included (206 + Content-Range).

    The server records every request as (path, Range header) in `requests`. With `ignore_range` it
    answers 200 with the whole file, as some servers do; `cut[path] = K` closes the connection after
    K bytes of the body, once.
    """

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        start = 0
        requested = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if requested and not server.ignore_range:
            start = int(requested[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()  # HTTP/1.0: the connection closes after the body, or after the cut
        self.wfile.write(data[start:start + server.cut.pop(self.path, len(data))])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A 127.0.0.1 server of tmp_path/mirror (filled by `mirror`), recording requests."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(MirrorHandler, directory=str(tmp_path / "mirror"))
    )
    server.requests, server.ignore_range, server.cut = [], False, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(prm800k_download.URL_VARIABLE, f"http://127.0.0.1:{server.server_port}")
    set_offline(monkeypatch, False)  # conftest's offline mode forbids http
    yield server
    server.shutdown()
    server.server_close()


def set_offline(monkeypatch, offline: bool):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)


@pytest.fixture
def mirror(server, tmp_path, label_dir, test_data, monkeypatch):
    """The served folder, laid out like the LFS media address, with the expected digests of its files."""
    root = tmp_path / "mirror"
    shutil.copytree(label_dir, root / "prm800k" / "data")
    (root / "prm800k" / "math_splits").mkdir()
    shutil.copy(test_data / "math500" / "test.jsonl", root / "prm800k" / "math_splits" / "test.jsonl")
    table = {}
    for relative in prm800k_download.UPSTREAM_FILES:
        data = (root / relative).read_bytes()
        table[relative] = (len(data), hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(prm800k_download, "UPSTREAM_FILES", table)
    return root


PHASE1_TRAIN = "prm800k/data/phase1_train.jsonl"


def downloaded(relative: str) -> Path:
    """Where a build keeps the verified download of an upstream file."""
    return Path(datasets.config.DOWNLOADED_DATASETS_PATH) / "prm800k" / relative


def partial(relative: str) -> Path:
    return Path(f"{downloaded(relative)}{prm800k_download.PARTIAL_SUFFIX}")


def seed_partial(relative: str, data: bytes) -> None:
    """What an earlier, interrupted build leaves behind."""
    partial(relative).parent.mkdir(parents=True, exist_ok=True)
    partial(relative).write_bytes(data)


def ranges_requested(server, relative: str) -> list:
    return [header for path, header in server.requests if path == f"/{relative}"]


def test_download_verifies_and_converts(mirror, server, label_dir, tmp_path, monkeypatch):
    downloaded_splits = load(exclude_problems="math500")
    assert {split: downloaded_splits[split]["id"] for split in downloaded_splits} == {"train": [L2]}
    # MATH500 is built into the package: only the label files are downloaded.
    label_files = [r for r in prm800k_download.UPSTREAM_FILES if r != prm800k_download.MATH500_FILE]
    assert sorted(path for path, _ in server.requests) == sorted(f"/{r}" for r in label_files)
    markers = list((tmp_path / "hf_datasets_cache").rglob("*" + prm800k_download.VERIFIED_SUFFIX))
    assert sorted(markers) == sorted(Path(f"{downloaded(r)}{prm800k_download.VERIFIED_SUFFIX}") for r in label_files)
    assert not list((tmp_path / "hf_datasets_cache").rglob("*" + prm800k_download.PARTIAL_SUFFIX))
    # Downloaded and verified once: another build makes no request (offline works) and hashes nothing.
    server.requests.clear()
    set_offline(monkeypatch, True)
    monkeypatch.setattr(prm800k_download, "file_sha256", lambda *a, **k: pytest.fail("hashed a verified file again"))
    rebuilt = load(neutral_as="negative")
    assert {split: rebuilt[split]["id"] for split in rebuilt} == expected_split_ids()
    assert server.requests == []


def test_interrupted_download_resumes_where_it_broke(mirror, server, monkeypatch):
    # http_get writes whole chunks (10 MB upstream): bytes of a chunk cut short are fetched again.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    data = (mirror / PHASE1_TRAIN).read_bytes()
    server.cut[f"/{PHASE1_TRAIN}"] = cut = 3 * 1024
    assert cut < len(data)
    load(phases=[1])
    assert ranges_requested(server, PHASE1_TRAIN) == [None, f"bytes={cut}-"]
    assert downloaded(PHASE1_TRAIN).read_bytes() == data
    assert Path(f"{downloaded(PHASE1_TRAIN)}{prm800k_download.VERIFIED_SUFFIX}").is_file()


def test_partial_download_of_an_earlier_build_is_resumed(mirror, server):
    data = (mirror / PHASE1_TRAIN).read_bytes()
    seed_partial(PHASE1_TRAIN, data[:1000])
    load(phases=[1])
    assert ranges_requested(server, PHASE1_TRAIN) == ["bytes=1000-"]
    assert downloaded(PHASE1_TRAIN).read_bytes() == data
    assert not partial(PHASE1_TRAIN).exists()


def test_server_ignoring_range_still_gives_the_right_file(mirror, server):
    data = (mirror / PHASE1_TRAIN).read_bytes()
    seed_partial(PHASE1_TRAIN, data[:1000])
    server.ignore_range = True
    load(phases=[1])
    assert ranges_requested(server, PHASE1_TRAIN) == ["bytes=1000-"]  # answered 200 with the whole file
    assert downloaded(PHASE1_TRAIN).read_bytes() == data


def test_partial_download_longer_than_the_file_starts_over(mirror, server):
    data = (mirror / PHASE1_TRAIN).read_bytes()
    seed_partial(PHASE1_TRAIN, data + b"junk")
    load(phases=[1])
    assert ranges_requested(server, PHASE1_TRAIN) == [None]
    assert downloaded(PHASE1_TRAIN).read_bytes() == data


def test_force_redownload_starts_over(mirror, server):
    load(phases=[1])
    seed_partial(PHASE1_TRAIN, b"stale")
    server.requests.clear()
    load(phases=[1], download_mode="force_redownload")
    assert ranges_requested(server, PHASE1_TRAIN) == [None]
    assert downloaded(PHASE1_TRAIN).read_bytes() == (mirror / PHASE1_TRAIN).read_bytes()


def test_download_of_an_lfs_pointer_fails_clearly(mirror):
    (mirror / "prm800k/data/phase2_test.jsonl").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:6b172efa\nsize 12240719\n"
    )
    with pytest.raises(prm800k_download.VerificationError, match=r"served a Git LFS pointer.*PRM_BUILDER_PRM800K_URL"):
        load()
    assert not partial("prm800k/data/phase2_test.jsonl").exists()


def test_download_of_a_corrupted_file_fails_then_the_next_build_downloads_it_anew(mirror):
    path = mirror / PHASE1_TRAIN
    good = path.read_bytes()
    data = bytearray(good)
    data[100] ^= 1
    path.write_bytes(bytes(data))
    expected = prm800k_download.UPSTREAM_FILES[PHASE1_TRAIN][1]
    got = hashlib.sha256(data).hexdigest()
    with pytest.raises(prm800k_download.VerificationError,
                       match=rf"corrupted: expected sha256 {expected}, got {got}.*build again.*discarded"):
        load()
    # A wrong file cannot be resumed into the right one: it is gone, and nothing was moved into place.
    assert not partial(PHASE1_TRAIN).exists() and not downloaded(PHASE1_TRAIN).exists()
    path.write_bytes(good)
    load(phases=[1])
    assert downloaded(PHASE1_TRAIN).read_bytes() == good


def test_download_of_a_truncated_file_fails_with_sizes(mirror):
    path = mirror / "prm800k/data/phase1_test.jsonl"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(prm800k_download.VerificationError, match=rf"truncated.*expected {size:,} bytes, got {size - 10:,} bytes"):
        load()


def test_partial_download_beyond_the_served_file_starts_over(mirror, server):
    # The server's file is now shorter than what an earlier build kept: Range gets 416, and the
    # download starts over, then fails verification as truncated rather than looping on 416.
    path = mirror / "prm800k/data/phase1_test.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    seed_partial("prm800k/data/phase1_test.jsonl", data[:-5])
    with pytest.raises(prm800k_download.VerificationError, match=rf"truncated.*got {len(data) - 10:,} bytes"):
        load(phases=[1])
    assert ranges_requested(server, "prm800k/data/phase1_test.jsonl") == [f"bytes={len(data) - 5}-", None]


def test_offline_without_data_dir_says_what_to_do():
    url = re.escape(f"{prm800k_download.REPOSITORY_URL}/prm800k/data/phase1_train.jsonl")
    with pytest.raises(ConnectionError, match=rf"could not download PRM800K's file {url} \(offline mode.*pass data_dir="):
        load()
    assert not partial(PHASE1_TRAIN).exists()


# -- command line -----------------------------------------------------------------------------------


def test_cli_build_and_stats(tmp_path, label_dir, capsys):
    output = tmp_path / "built"
    assert cli.main(["build", "prm800k", "--data-dir", str(label_dir), "--alternatives", "--neutral-as", "negative",
                     "--exclude-problems", "none", "--output-dir", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "rows per phase: 1: 24, 2: 4" in printed
    assert "rows per finish_reason: found_error: 4, solution: 24" in printed
    assert "dropped 1 items: 1 screening_question" in printed
    assert cli.main(["stats", str(output), "--json"]) == 0
    summary_json = json.loads(capsys.readouterr().out)
    assert summary_json["train"]["rows"] == 28 and summary_json["test"]["rows"] == 7
    assert summary_json["test"]["dropped"] == {"screening_question": 1}


def test_cli_reports_a_bad_line_without_a_traceback(tmp_path, test_data, capsys):
    path = tmp_path / "broken.jsonl"
    path.write_text((test_data / SAMPLES).read_text() + '{"labeler": "x", "timestamp": "y", "question": {"problem": "p"}}\n')
    assert cli.main(["build", "prm800k", "--data-files", f"train={path}", "--output-dir", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert f"prm-builder: error: {path}, line 7: not a PRM800K record: missing 'label' object" in error
    assert "Traceback" not in error


def test_registered_config():
    assert "prm800k" in prm_builder.CONFIG_NAMES
