"""The third fault audit (issue 19), as an adversarial user would try it: text that is not UTF-8
in every config's input, a server that trickles its answer, a password in --base-url or a
--hub_token written to disk, NaN labels and empty steps, invisible characters in benchmark
problems, and the small messages (a BOM, a folder as --data-files, the column-map hint, the
cache-repair command, a read-only cache)."""

import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections import Counter, deque
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset, load_from_disk

import prm_builder  # noqa: F401 - registers the builder
from prm_builder import cli, problems
from prm_builder.backends import Request, Sampling
from prm_builder.backends.openai import OpenAIBackend
from prm_builder.decontamination import normalize_problem
from prm_builder.drops import recorded_drops
from prm_builder.jsonl import read_objects

from tests.openai_stub_server import StubServer
from tests.test_backends_openai import APPLES, build, problems_file, scripted  # noqa: F401 - fixture

HOSTILE = b"\xff\xfe"


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _strings(*texts) -> pa.Array:
    """A string array holding any bytes: Arrow checks UTF-8 only when asked (Parquet files can hold such)."""
    data = [text.encode() if isinstance(text, str) else text for text in texts]
    offsets = [0]
    for item in data:
        offsets.append(offsets[-1] + len(item))
    buffers = [None, pa.array(offsets, pa.int32()).buffers()[1], pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(pa.string(), len(data), buffers)


def _readable(dataset) -> None:
    """Every row of every split reads back (what prm-train and push do first)."""
    for split in dataset.values():
        split.to_list()
        split.data.validate(full=True)


# -- 1. text that is not UTF-8 never reaches Arrow --------------------------------------------------


@pytest.mark.parametrize("where", ["prompt", "step"])
def test_math_shepherd_drops_lines_that_are_not_utf8_naming_file_and_line(test_data, tmp_path, where, caplog):
    lines = _lines(test_data / "math_shepherd" / "samples.jsonl")[:4]
    # In a step, the bytes are never decoded in Python: the column-wise path must catch them.
    target = b"traveling" if where == "prompt" else b"Step 2: "
    assert lines[2].count(target) == 2  # in input and in label, which must stay alike
    lines[2] = lines[2].replace(target, target[:3] + HOSTILE + target[3:])
    path = tmp_path / "shepherd.jsonl"
    path.write_bytes(b"".join(lines))
    with caplog.at_level(logging.DEBUG, logger="prm_builder.math_shepherd"):
        dataset = load_dataset("prm_builder", "math_shepherd", data_files=str(path))
    _readable(dataset)
    assert len(dataset["train"]) == 3
    assert recorded_drops(dataset) == {"train": Counter(not_utf8=1)}
    assert f"{path}, line 3: skipped (not_utf8)" in caplog.text


def test_prm800k_names_file_and_line_of_text_that_is_not_utf8_or_skips_and_counts_it(test_data, tmp_path, caplog):
    lines = _lines(test_data / "prm800k" / "samples.jsonl")[:3]
    for name, broken in (("bytes", b'"problem": "' + HOSTILE), ("surrogate", b'"problem": "\\ud800')):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(b"".join(lines[:2]) + lines[2].replace(b'"problem": "', broken, 1))
        expected = "byte 0xff at column" if name == "bytes" else r"the escape \\ud800, half of a surrogate pair"
        with pytest.raises(Exception) as raised:
            load_dataset("prm_builder", "prm800k", data_files=str(path), exclude_problems="none")
        message = str(raised.value.__cause__ or raised.value)
        assert f"{path}, line 3: not a PRM800K record: expected UTF-8 text, got" in message
        assert expected.replace("\\\\", "\\") in message
        with caplog.at_level(logging.DEBUG, logger="prm_builder.prm800k"):
            dataset = load_dataset("prm_builder", "prm800k", data_files=str(path), on_bad_lines="skip", exclude_problems="none")
        _readable(dataset)
        assert recorded_drops(dataset)["train"]["malformed:not_utf8"] == 1
        assert f"{path}, line 3: skipped (malformed:not_utf8)" in caplog.text


def test_stepwise_drops_rows_that_are_not_utf8_in_json_and_parquet_and_names_a_csv(tmp_path, caplog):
    good = b'{"prompt": "What is 1 + 1?", "completions": ["1 + 1 = 2"], "labels": [true]}\n'
    path = tmp_path / "rows.jsonl"
    path.write_bytes(good + b'{"prompt": "Wh' + HOSTILE + b'at?", "completions": ["a"], "labels": [true]}\n' + good)
    with caplog.at_level(logging.DEBUG, logger="prm_builder.stepwise"):
        dataset = load_dataset("prm_builder", "stepwise", data_files=str(path))
    _readable(dataset)
    assert dataset["train"]["prompt"] == ["What is 1 + 1?"] * 2
    assert recorded_drops(dataset) == {"train": Counter(not_utf8=1)}
    assert f"{path}, row 2: skipped (not_utf8)" in caplog.text

    # Parquet stores whatever bytes a writer put in a string column.
    prompts = _strings("ok", HOSTILE)
    table = pa.table({"prompt": prompts, "completions": [["a"], ["b"]], "labels": [[True], [False]]})
    pq.write_table(table, tmp_path / "rows.parquet")
    dataset = load_dataset("prm_builder", "stepwise", data_files=str(tmp_path / "rows.parquet"))
    _readable(dataset)
    assert dataset["train"]["prompt"] == ["ok"] and recorded_drops(dataset) == {"train": Counter(not_utf8=1)}

    csv = tmp_path / "rows.csv"
    csv.write_bytes(b'prompt,completions,labels\n"Wh' + HOSTILE + b'at","[]","[]"\n')
    expected = rf"stepwise: expected UTF-8 text in {csv}, got invalid start byte \(byte 0xff\); save the file as UTF-8"
    with pytest.raises(ValueError, match=expected):
        load_dataset("prm_builder", "stepwise", data_files=str(csv))


def test_problem_files_of_synthetic_and_model_sampled_name_file_and_line(test_data, tmp_path, tiny_chat_model_path):
    lines = _lines(test_data / "gsm8k" / "test.jsonl")[:3]
    for name, broken in (("bytes", b'"question": "' + HOSTILE), ("surrogate", b'"question": "\\udcff')):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "test.jsonl").write_bytes(b"".join(lines[:2]) + lines[2].replace(b'"question": "', broken, 1))
        expected = "got byte 0xff at column 15" if name == "bytes" else r"got the escape \\udcff, half of a surrogate pair"
        with pytest.raises(ValueError, match=rf"{folder / 'test.jsonl'}, line 3: expected UTF-8 text, {expected}"):
            load_dataset("prm_builder", "synthetic", problems=str(folder))
        with pytest.raises(ValueError, match=rf"{folder / 'test.jsonl'}, line 3: expected UTF-8 text, {expected}"):
            # The file is read before any request: nothing listens at that URL.
            load_dataset("prm_builder", "model_sampled", problems=str(folder), model=str(tiny_chat_model_path),
                         backend="openai", base_url="http://127.0.0.1:9/v1")  # fmt: skip

    # A GSM8K-layout Parquet file (synthetic reads them too): its strings are not checked on write.
    questions = _strings("ok", HOSTILE)
    pq.write_table(pa.table({"question": questions, "answer": ["#### 1", "#### 2"]}), tmp_path / "train.parquet")
    with pytest.raises(ValueError, match=r"train.parquet, row 2: expected UTF-8 text in 'question' and 'answer'"):
        problems.read_gsm8k_problems(tmp_path / "train.parquet")


def test_lone_surrogates_are_found_and_pairs_are_text(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": "smile \\ud83d\\ude00"}\n{"a": "\\ud83d\\ude00\\udc00"}\n')
    numbered = read_objects(path)
    assert next(numbered) == (1, {"a": "smile \U0001f600"})
    with pytest.raises(ValueError, match=r"line 2: expected UTF-8 text, got the escape \\udc00"):
        next(numbered)


# -- 2. request_timeout bounds the whole request ----------------------------------------------------


class TricklingServer:
    """Answers every request with its headers at once, then one body byte a second (at most 30)."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(30):
                    if self.stop.wait(1.0):
                        return
                    connection.sendall(b" ")
            except OSError:  # the client gave up and closed the connection
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.listener.close()


def test_request_timeout_bounds_a_server_that_trickles_its_answer(tiny_chat_model_path):
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8)
    with TricklingServer() as server:
        backend = OpenAIBackend(str(tiny_chat_model_path), None, sampling, base_urls=[server.url], timeout=1.5, max_retries=1)
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=r"did not answer within request_timeout=1.5 s \(tried 2 times\)"):
            list(backend.generate(deque([Request(APPLES, "", 1, 0)])))
        took = time.monotonic() - started
        backend.close()
    # Two attempts of 1.5 s and the client's backoff between them; without the bound, 30 s.
    assert took < 8, took


# -- 3. no credential in what a command writes ------------------------------------------------------


def test_a_password_in_base_url_is_in_no_file_the_build_writes(tiny_chat_model_path, problems_file, tmp_path, monkeypatch):  # noqa: F811
    output, generations = tmp_path / "out", tmp_path / "generations"
    with StubServer(scripted) as server:
        base_url = server.url.replace("http://", "http://alice:pAsSw0rd@")
        argv = ["build", "model_sampled", "--model", str(tiny_chat_model_path), "--backend", "openai", "--base-url", base_url,
                "--problems", str(problems_file), "--num-samples-per-problem", "3", "--mc-rollouts", "4",
                "--generation-cache-dir", str(generations), "--output-dir", str(output)]  # fmt: skip
        assert cli.main(argv) == 0
        assert server.count() > 0
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    # The output folder, the generation cache, the Arrow cache (conftest puts HF_DATASETS_CACHE in tmp_path).
    for folder in (output, generations, tmp_path / "hf_datasets_cache" / "prm_builder"):
        assert any(folder in path.parents for path in written), folder
    for path in written:
        assert b"pAsSw0rd" not in path.read_bytes(), path
    stored = json.loads((output / "prm_builder_options.json").read_text())
    assert stored["options"]["base_url"] == server.url.replace("http://", "http://<redacted>@")
    assert stored["options"]["problems"] == str(problems_file)  # local paths stay: the file stays on this machine


def test_secret_options_are_redacted_and_the_rest_kept():
    from prm_builder.redact import without_credentials

    options = {"api_key": "abc123", "base_url": ["http://u:p@h:1/v1", "http://h:2/v1?token=xyz"], "seed": 3, "judge_api_key": ""}
    assert without_credentials(options) == {
        "api_key": "<redacted>", "base_url": ["http://<redacted>@h:1/v1", "http://h:2/v1?token=<redacted>"], "seed": 3,
        "judge_api_key": "",
    }  # fmt: skip


# -- 5. stepwise: NaN or None labels and empty steps are counted drops ---------------------------------


def test_stepwise_drops_nan_and_none_labels_and_empty_steps(tmp_path):
    rows = [
        {"prompt": "p1", "completions": ["a", "b"], "labels": [1.0, float("nan")]},
        {"prompt": "p2", "completions": ["a", "b"], "labels": [1.0, None]},
        {"prompt": "p3", "completions": ["a", ""], "labels": [1.0, 0.0]},
        {"prompt": "p4", "completions": [" \n\t", "b"], "labels": [1.0, 0.0]},
        {"prompt": "p5", "completions": ["a", "b"], "labels": [1.0, 0.0]},
    ]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    dataset = load_dataset("prm_builder", "stepwise", data_files=str(path))
    assert [(row["prompt"], row["labels"]) for row in dataset["train"]] == [("p5", [True, False])]
    assert recorded_drops(dataset) == {"train": Counter(missing_label=2, empty_step=2)}


# -- 7. invisible characters do not hide a benchmark problem ------------------------------------------

HIDDEN = {
    "zero-width space": "\u200b", "soft hyphen": "\u00ad", "word joiner": "\u2060", "byte-order mark": "\ufeff",
    "left-to-right mark": "\u200e", "zero-width joiner": "\u200d", "tag character": "\U000e0041",
    "Hangul filler": "\u3164", "variation selector": "\ufe0f",
}
SPACES = {"no-break space": "\u00a0", "thin space": "\u2009", "ideographic space": "\u3000", "narrow no-break space": "\u202f"}


def test_every_format_character_and_confusable_space_is_ignored():
    text = "What is the value of $x$ in $2x + 3 = 7$?"
    every_cf = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert normalize_problem("".join(f"{ch}{every_cf[i % len(every_cf)]}" for i, ch in enumerate(text))) == normalize_problem(text)
    for name, character in {**HIDDEN, **SPACES}.items():
        disguised = text.replace(" ", " " + character, 3).replace("value", f"va{character}lue")
        assert normalize_problem(disguised) == normalize_problem(text), name
    assert normalize_problem("What is х + у?") == normalize_problem("What is x + y?")  # Cyrillic х, у
    assert normalize_problem("What is 𝑥 + ｙ?") == normalize_problem("What is x + y?")  # NFKC: math italic, fullwidth
    assert normalize_problem("What is 1/2?") != normalize_problem("What is 1/3?")


def test_math500_problems_with_invisible_characters_stay_out_of_train(test_data, tmp_path):
    math500 = [row["problem"] for _, row in read_objects(test_data / "math500" / "test.jsonl")][:12]
    hidden, spaces = list(HIDDEN.values()), list(SPACES.values())
    rows = []
    for index, problem in enumerate(math500):
        # Invisible characters inside words, other spaces between them (inside a word a space is a change).
        character = hidden[index % len(hidden)]
        words = problem.split(" ")
        disguised = spaces[index % len(spaces)].join(word[:1] + character + word[1:] if len(word) > 2 else word for word in words)
        rows.append({"prompt": disguised, "completions": ["a step"], "labels": [True]})
    rows.append({"prompt": "A problem of our own: what is 2 + 2?", "completions": ["4"], "labels": [True]})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    dataset = load_dataset("prm_builder", "stepwise", data_files={"train": str(path)})
    assert dataset["train"]["prompt"] == ["A problem of our own: what is 2 + 2?"]
    assert recorded_drops(dataset) == {"train": Counter({"contaminated:math500": 12})}


# -- the smaller ones: one clear line each ----------------------------------------------------------


def test_processbench_json_array_with_a_byte_order_mark(tmp_path):
    from prm_trainer.processbench import read_subset_file

    case = {"id": "gsm8k-0", "generator": "x", "problem": "1 + 1?", "steps": ["2"], "final_answer_correct": True, "label": -1}
    path = tmp_path / "gsm8k.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([case]).encode())
    assert [c["id"] for c in read_subset_file(path)] == ["gsm8k-0"]
    path.write_bytes(b"[" + HOSTILE + b"]")
    with pytest.raises(ValueError, match=rf"{path}: expected UTF-8 text, got byte 0xff at byte 1; save the file as UTF-8"):
        read_subset_file(path)


def test_data_files_naming_a_folder_says_to_use_data_dir(tmp_path, capsys):
    folder = tmp_path / "shepherd"
    folder.mkdir()
    assert cli.main(["build", "math_shepherd", "--data-files", f"train={folder}", "--output-dir", str(tmp_path / "out")]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        f"prm-builder: error: --data-files train={folder}: {folder} is a folder; --data-files names files "
        f"(e.g. train={folder}/train.jsonl), --data-dir {folder} reads a folder"
    )


def test_stepwise_missing_column_hint_is_a_flag_that_works(tmp_path, capsys):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"text": "What is 2 + 2?", "completions": ["4"], "labels": [True]}) + "\n")
    argv = ["build", "stepwise", "--data-files", f"train={path}", "--output-dir", str(tmp_path / "out")]
    assert cli.main(argv) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(or name it with --column-map prompt=COLUMN)" in line, line
    hinted = line.split("name it with ")[1].split(")")[0].replace("COLUMN", "text")
    assert cli.main(argv + shlex.split(hinted)) == 0
    assert load_from_disk(str(tmp_path / "out"))["train"]["prompt"] == ["What is 2 + 2?"]


def test_the_repair_command_of_a_damaged_cache_names_its_folder(tiny_chat_model_path, problems_file, tmp_path, capsys):  # noqa: F811
    from prm_builder.generation_cache import CorruptCacheError

    with StubServer(scripted) as server:
        build(str(tiny_chat_model_path), problems_file, server, tmp_path)
        (segment,) = (tmp_path / "generations").rglob("segments/*.jsonl")
        lines = segment.read_bytes().splitlines(keepends=True)
        segment.write_bytes(lines[0] + b'{"p": broken\n' + b"".join(lines[1:]))
        with pytest.raises(Exception) as raised:
            build(str(tiny_chat_model_path), problems_file, server, tmp_path, cache_dir=str(tmp_path / "other"))
    error = raised.value.__cause__ if not isinstance(raised.value, CorruptCacheError) else raised.value
    command = str(error).split("drop the damaged records with `")[1].split("`")[0]
    assert command.startswith("prm-builder cache repair ") and f"--generation-cache-dir {tmp_path / 'generations'}" in command
    assert cli.main(shlex.split(command)[1:]) == 0
    assert "dropped 1 damaged record(s)" in capsys.readouterr().out


def _read_only(folder: Path):
    """Make `folder` and everything in it unwritable; returns the undo. Root ignores permission
    bits, so as root the files are made immutable (chattr +i) instead."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
        return lambda: subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
    if subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (root on a filesystem without it, or without the capability)")
    return lambda: subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)


def test_a_read_only_cache_holding_every_generation_builds_without_locks(tiny_chat_model_path, problems_file, tmp_path, caplog):  # noqa: F811
    from tests.test_backends_openai import assert_rows

    model = str(tiny_chat_model_path)
    with StubServer(scripted) as server:
        build(model, problems_file, server, tmp_path)
        server.reset_counts()
        undo = _read_only(tmp_path / "generations")
        try:
            with caplog.at_level(logging.WARNING, logger="prm_builder.scheduler"):
                # Another datasets cache: the rows are made again, from the generation cache alone.
                assert_rows(build(model, problems_file, server, tmp_path, cache_dir=str(tmp_path / "other")), model, "binary")
        finally:
            undo()
        assert server.count() == 0
    warnings = [r.getMessage() for r in caplog.records if "cannot be locked" in r.getMessage()]
    assert len(warnings) == 1 and "reading it without the shard locks" in warnings[0]


def test_the_model_card_hides_options_named_like_secrets():
    from types import SimpleNamespace

    from prm_trainer.model_card import training_data_section

    section = training_data_section(
        {"builder": "prm_builder", "config": "model_sampled"}, {}, SimpleNamespace(label_type="hard", label_column="labels"),
        dataset_options={"token": "plainsecret12", "base_url": "http://alice:pAsSw0rd@h:1/v1", "seed": 3},
    )
    assert "- options: `token=<redacted>`, `base_url=http://<redacted>@h:1/v1`, `seed=3`" in section


def test_exclude_problems_json_files_that_are_not_utf8_are_named(tmp_path):
    from prm_builder.decontamination import problem_hash, read_problems

    path = tmp_path / "problems.json"
    path.write_bytes(b'[{"problem": "Wh' + HOSTILE + b'at?"}]')
    expected = rf"{path}: expected a JSON list of objects, got bytes that are not UTF-8 text \(0xff at byte 16\)"
    with pytest.raises(ValueError, match=expected):
        read_problems(str(path))
    path.write_bytes(b'\xef\xbb\xbf[{"problem": "What is \\ud800?"}]')  # a byte-order mark, a lone surrogate
    (problem,) = read_problems(str(path))
    assert problem_hash(problem) != problem_hash("What is ?")


def test_prm_train_writes_no_hub_token_into_its_checkpoints(tmp_path, tiny_model_path, gsm8k_dir, monkeypatch):
    import huggingface_hub
    from prm_trainer.cli import main, make_parser

    monkeypatch.delenv("HF_TOKEN", raising=False)  # restored after the test, whatever prm-train sets
    dataset = load_dataset("prm_builder", "synthetic", problems=str(gsm8k_dir), max_examples=4)
    dataset.save_to_disk(tmp_path / "built")
    out = tmp_path / "prm"
    args = ["--model_name_or_path", tiny_model_path, "--dataset_name", tmp_path / "built", "--dataset_test_split", "none",
            "--output_dir", out, "--hub_token", "hf_plainSecretToken123", "--max_steps", "1", "--save_strategy", "steps",
            "--save_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none"]  # fmt: skip
    main(*make_parser().parse_args_and_config([str(arg) for arg in args]))
    written = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.name == "training_args.bin" for path in written)  # the Trainer pickles its arguments
    assert [path for path in written if b"hf_plainSecretToken123" in path.read_bytes()] == []
    assert huggingface_hub.get_token() == "hf_plainSecretToken123"  # a push still finds it
