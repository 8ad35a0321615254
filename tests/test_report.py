"""The report page (prm-builder report, prm-eval --html): which rows it holds, what each step shows, escaping, size;
then the page itself in headless Chromium (marker `browser`): colours, filters, no request leaving the page, a hostile
row shown as text, a screenshot that is not blank. And the plots a reader must be able to trust (issue 20, item 8)."""

import io
import json
import math
import os
import re

import matplotlib
import numpy as np
import pytest
import torch
from tests.browser import BrowserError, Chromium, find_chromium
from datasets import Dataset, DatasetDict, Features, List, Value

from prm_builder.cli import main as builder_main
from prm_builder.common.features import CORE_FEATURES
from prm_builder.publishing.report import (
    MAX_TEXT_CHARS,
    dataset_page,
    evaluation_page,
    most_confident_mistakes_first,
    render_page,
    row_view,
    sample_rows,
)
from prm_trainer.eval_cli import main as eval_main

matplotlib.use("Agg")

FEATURES = Features({**CORE_FEATURES, "step_scores": List(Value("float32")), "judge_first_error": Value("int32"),
                     "mc_first_error": Value("int32")})
HOSTILE_PROMPT = "<script>alert(1)</script>"
HOSTILE_STEPS = ["<img src=x onerror=alert(2)>", "</body></html><script>alert(3)</script>", "</div></li></ol>&amp;"]


def labelled(id_, source, completions, labels, step_scores, judge, mc, prompt="What is 2 + 3?"):
    first = next((i for i, label in enumerate(labels) if not label), -1)
    return {"id": id_, "prompt": prompt, "completions": completions, "labels": labels, "first_error": first,
            "final_answer": "5", "reference_answer": "5", "source": source, "step_scores": step_scores,
            "judge_first_error": judge, "mc_first_error": mc}


# Four sources; judge and MC disagree on rows m-2 (2 vs 1) only: m-3 had no MC run (-2), m-1 agrees.
ROWS = [
    labelled("m-1", "model_sampled/m", ["2 + 3 = 5", "The answer is 5"], [True, True], [1.0, 1.0], -1, -1),
    labelled("m-2", "model_sampled/m", ["2 + 3 = 6", "6 - 1 = 5", "The answer is 5"], [True, False, False],
             [0.75, 0.0, math.nan], 2, 1),
    labelled("m-3", "model_sampled/m", ["2 + 3 = 4", "The answer is 4"], [False, False], [0.0, 0.0], 0, -2),
    labelled("s-1", "synthetic/flip_number", ["2 + 3 = 7", "The answer is 7"], [False, False], [0.0, 0.0], 0, 0),
    labelled("s-2", "synthetic/correct", ["2 + 3 = 5"], [True], [1.0], -1, -1),
    labelled("<b>evil</b>", "evil/<i>source</i>", HOSTILE_STEPS, [True, False, False], [0.5, 0.25, 0.0], 1, 1,
             prompt=HOSTILE_PROMPT),
]
# Fixed PRM scores per row (threshold 0.5): it disagrees on m-1 step 0 (0.1 for a right step: sure, 0.8 of the room),
# m-2 step 1 (0.6 for a wrong step: unsure, 0.2), s-1 step 0 (0.95 for a wrong step: 0.9) and the hostile row's step 1
# (0.85 for a wrong step: 0.7); nowhere else.
PRM = {"m-1": [0.1, 0.9], "m-2": [0.7, 0.6, 0.2], "m-3": [0.2, 0.1], "s-1": [0.95, 0.3], "s-2": [0.8],
       "<b>evil</b>": [0.9, 0.85, 0.2]}


def save(tmp_path, rows=ROWS, name="built"):
    folder = tmp_path / name
    DatasetDict({"train": Dataset.from_list(rows, features=FEATURES)}).save_to_disk(str(folder))
    return folder


def fixed_scorer(rows):
    return [PRM[row["id"]] for row in rows]


# ---------------------------------------------------------------- what the page holds


def test_sample_rows_picks_per_source_and_split_by_seed():
    rows = [{"id": f"{source}-{i}", "source": source} for source in ("a", "b") for i in range(10)]
    rows.append({"id": "c-0", "source": "c"})
    dataset = DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:3])})
    picked = sample_rows(dataset, 3, seed=0)
    assert [(r["split"], r["source"]) for r in picked].count(("train", "a")) == 3
    assert [(r["split"], r["source"]) for r in picked].count(("train", "b")) == 3
    assert [r["id"] for r in picked if r["source"] == "c"] == ["c-0"]  # fewer than N: all of them
    assert [r["id"] for r in picked if r["split"] == "test"] == ["a-0", "a-1", "a-2"]
    train_ids = [r["id"] for r in picked if r["split"] == "train"]
    assert train_ids == sorted(train_ids, key=lambda i: rows.index(next(r for r in rows if r["id"] == i)))
    assert picked == sample_rows(dataset, 3, seed=0)
    assert [r["id"] for r in sample_rows(dataset, 3, seed=1)] != [r["id"] for r in picked]
    with pytest.raises(ValueError, match="--per-source must be at least 1, got 0"):
        sample_rows(dataset, 0, seed=0)


def test_row_view_marks_first_error_scores_and_disagreements():
    view = row_view(ROWS[1], PRM["m-2"], threshold=0.5)
    assert [step["label"] for step in view["steps"]] == [True, False, False]
    assert [step["is_first_error"] for step in view["steps"]] == [False, True, False]
    assert [step["mc"] for step in view["steps"]] == [0.75, 0.0, None]
    assert [step["mc_missing"] for step in view["steps"]] == [False, False, True]  # NaN: not estimated, not 0
    assert [step["prm_disagrees"] for step in view["steps"]] == [False, True, False]
    assert view["confidence"] == pytest.approx(0.2)  # 0.6 on a wrong step: 0.1 above 0.5, of 0.5 room
    assert view["judge_mc_disagree"] and view["prm_disagrees"]
    no_mc = row_view(ROWS[2], PRM["m-3"])
    assert no_mc["mc_first_error"] == -2 and not no_mc["judge_mc_disagree"] and not no_mc["prm_disagrees"]
    assert no_mc["confidence"] is None
    # Rows of label_method="judge" alone (no Monte Carlo ran) get no "judge and MC disagree" filter: it could only hide all.
    assert 'name="judge_mc"' not in render_page("t", [no_mc], threshold=0.5) and 'name="judge_mc"' in render_page("t", [view], threshold=0.5)
    # Early-stopped Monte Carlo says over how many rollouts each score is.
    early = row_view({**ROWS[1], "step_rollouts": [4, 1, 0]})
    assert [step["rollouts"] for step in early["steps"]] == [4, 1, 0]
    page = render_page("t", [early])
    assert "0.75 of 4 rollouts" in page and "0.00 of 1 rollout<" in page and "MC not estimated" in page
    # Without the optional columns nothing is invented.
    bare = row_view({"prompt": "p", "completions": ["a", "b"], "labels": [True, False]})
    assert bare["first_error"] == 1 and bare["judge_first_error"] is None and bare["mc_first_error"] is None
    assert [step["mc"] for step in bare["steps"]] == [None, None] and not bare["steps"][0]["mc_missing"]
    # A step the PRM could not score (cut by truncation) is said so, and is no disagreement.
    cut = row_view(ROWS[0], [0.9, math.nan])
    assert cut["steps"][1]["prm"] is None and cut["steps"][1]["prm_missing"] and not cut["prm_disagrees"]


def test_most_confident_mistakes_come_first():
    views = [row_view(row, PRM[row["id"]]) for row in ROWS]
    ordered = [view["id"] for view in most_confident_mistakes_first(views)]
    # s-1 (0.9), m-1 (0.8), the hostile row (0.7), m-2 (0.2), then the rows without a mistake in their order.
    assert ordered == ["s-1", "m-1", "<b>evil</b>", "m-2", "m-3", "s-2"]


def test_data_is_escaped_and_only_our_script_is_on_the_page():
    page = dataset_page(DatasetDict({"train": Dataset.from_list(ROWS, features=FEATURES)}), "t <i>itle</i>",
                        per_source=10, scorer=fixed_scorer)
    assert page.count("<script") == 1 and page.count("</script>") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "alert(1)</script>" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page and "<img src=x" not in page
    assert "&lt;/body&gt;&lt;/html&gt;" in page and page.count("</body>") == 1
    assert "&amp;lt;/div&amp;gt;" not in page and "&lt;/div&gt;&lt;/li&gt;&lt;/ol&gt;&amp;amp;" in page
    assert 'data-source="evil/&lt;i&gt;source&lt;/i&gt;"' in page
    assert "t &lt;i&gt;itle&lt;/i&gt;" in page
    # The policy lets exactly our script run (by its hash) and nothing load from anywhere.
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)[1]
    assert "default-src 'none'" in policy and "img-src data:" in policy and "script-src 'sha256-" in policy
    assert re.findall(r'(?:src|href)="(?!data:image/png;base64,)', page) == []


def test_page_stays_small_for_a_large_dataset_and_cuts_huge_texts():
    rows = [labelled(f"r{i}", f"source/{i % 4}", ["x" * 300] * 8, [True] * 8, [1.0] * 8, -1, -1)
            for i in range(4_000)]
    # One row of its own source (so it is always sampled) with a step of 21,234 characters.
    rows.append(labelled("huge", "source/huge", ["y" * (MAX_TEXT_CHARS + 1234)], [True], [1.0], -1, -1))
    dataset = DatasetDict({"train": Dataset.from_list(rows, features=FEATURES)})
    page = dataset_page(dataset, "big", per_source=5, seed=0)
    assert page.count('<article class="row"') == 21
    assert len(page.encode("utf-8")) < 500_000
    assert "y" * MAX_TEXT_CHARS in page and "y" * (MAX_TEXT_CHARS + 1) not in page
    assert "(1234 more characters)" in page
    view = row_view(rows[-1])
    assert len(view["steps"][0]["text"]) == MAX_TEXT_CHARS and view["steps"][0]["cut"] == 1234


def test_a_plain_stepwise_dataset_shows_its_rows_without_a_summary():
    plain = Dataset.from_list([{"prompt": "p", "completions": ["a", "b"], "labels": [True, False]}] * 3)
    page = dataset_page(DatasetDict({"train": plain}), "plain", per_source=2)
    assert page.count('<article class="row"') == 2 and page.count('class="step wrong first-error"') == 2
    assert "No summary: the dataset has no first_error, source column" in page and "data:image/png" not in page


# ---------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory, tiny_model_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("prm")
    torch.manual_seed(0)
    AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("spelling", ["--per-source", "--per_source"])
def test_report_command_on_a_built_folder(tmp_path, capsys, spelling):
    folder = save(tmp_path)
    (folder / "prm_builder_options.json").write_text(json.dumps({"config": "model_sampled", "options": {"x": 1}}))
    out = tmp_path / "report.html"
    assert builder_main(["report", str(folder), "--output", str(out), spelling, "2", "--seed", "3"]) == 0
    assert f"report written to {out}" in capsys.readouterr().out
    page = out.read_text()
    # 2 per source: model_sampled/m has 3 rows, the other three sources one each.
    assert page.count('<article class="row"') == 5
    assert "<title>model_sampled (x=1): " in page and "== train: 6 rows" in page
    assert page.count("data:image/png;base64,") == 1


def test_report_command_scores_with_a_prm(tmp_path, capsys, prm_dir):
    folder = save(tmp_path)
    out = tmp_path / "report.html"
    assert builder_main(["report", str(folder), "--output", str(out), "--per_source", "9", "--prm", str(prm_dir),
                         "--device", "cpu", "--step_separator", "\\n"]) == 0
    page = out.read_text()
    steps = sum(len(row["completions"]) for row in ROWS)
    assert page.count('<span class="bar prm">') == steps
    from prm_trainer.evaluating.evaluation import score_steps
    from prm_trainer.common.tokenization import StepFormat
    from prm_trainer.evaluating.reward import load_prm

    model, tokenizer = load_prm(str(prm_dir), device="cpu")
    scores = score_steps(model, tokenizer, ROWS, StepFormat("\n"), batch_size=8)
    disagreements = sum((s >= 0.5) != label for row, r in zip(ROWS, scores) for s, label in zip(r, row["labels"]))
    assert page.count('<span class="tag prm">PRM disagrees</span>') == disagreements
    assert f"{scores[0][0]:.3f}" in page


def test_report_command_reads_escapes_of_a_non_ascii_step_separator(tmp_path, prm_dir, monkeypatch):
    from prm_trainer.evaluating import evaluation

    separators = []

    def fake_score_steps(model, tokenizer, rows, step_format, batch_size):
        separators.append(step_format.step_separator)
        return [[0.5] * len(row["completions"]) for row in rows]

    monkeypatch.setattr(evaluation, "score_steps", fake_score_steps)
    out = tmp_path / "report.html"
    assert builder_main(["report", str(save(tmp_path)), "--output", str(out), "--prm", str(prm_dir),
                         "--device", "cpu", "--step-separator", "\\n→ "]) == 0
    assert separators == ["\n→ "]  # not the UTF-8 bytes of → read as Latin-1 ("â\x86\x92")


def test_report_command_errors(tmp_path, capsys):
    out = tmp_path / "r.html"
    for flag, value, expected in (("--threshold", "2", "expected a number between 0 and 1, got 2"),
                                  ("--per-source", "0", "expected a positive integer, got 0")):
        with pytest.raises(SystemExit) as exit_info:
            builder_main(["report", str(tmp_path), "--output", str(out), flag, value])
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err
    # A scoring flag without --prm: a usage error in the shared one-line form, whichever spelling was typed.
    for flag, value in (("--threshold", "0.3"), ("--step_separator", "\\n"), ("--batch-size", "2")):
        assert builder_main(["report", str(tmp_path), "--output", str(out), flag, value]) == 2
        named = flag.replace("_", "-")
        assert capsys.readouterr().err == (f"prm-builder report: error: {named} applies to the PRM's scores; add --prm "
                                           "MODEL (see prm-builder report --help)\n")
    assert builder_main(["report", str(tmp_path / "nowhere"), "--output", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("prm-builder: error: ") and error.count("\n") == 1 and "nowhere" in error
    assert not out.exists()


def test_prm_eval_html_puts_most_confident_mistakes_first(tmp_path, capsys, prm_dir):
    folder = save(tmp_path)
    out = tmp_path / "eval.html"
    assert eval_main(["--model", str(prm_dir), "--benchmark", "built", "--dataset", str(folder), "--split", "train",
                      "--no_progress", "--html", str(out), "--html-rows", "4", "--device", "cpu"]) == 0
    page = out.read_text()
    from prm_trainer.evaluating.evaluation import score_steps
    from prm_trainer.evaluating.reward import load_prm

    model, tokenizer = load_prm(str(prm_dir), device="cpu")
    views = most_confident_mistakes_first([row_view(row, s) for row, s in zip(ROWS, score_steps(model, tokenizer, ROWS))])
    shown = [json.loads(f'"{m}"') for m in re.findall(r'<span class="id">([^<]*)</span>', page)]
    assert len(shown) == 4
    assert shown == [view["id"].replace("<", "&lt;").replace(">", "&gt;") for view in views[:4]]
    assert "6 rows evaluated" in page and "the first 4 shown, most confident mistakes first" in page
    assert "Built split of" in page and "step acc" in page


def test_prm_eval_html_on_processbench_and_refused_for_best_of_n(tmp_path, capsys, prm_dir):
    from tests.test_evaluation import GSM8K_CASES

    data = tmp_path / "pb"
    data.mkdir()
    (data / "gsm8k.json").write_text(json.dumps(GSM8K_CASES))
    out = tmp_path / "pb.html"
    assert eval_main(["--model", str(prm_dir), "--benchmark", "processbench", "--data", str(data), "--subsets",
                      "gsm8k", "--no_progress", "--html", str(out), "--device", "cpu"]) == 0
    page = out.read_text()
    assert page.count('<article class="row" data-source="processbench/gsm8k"') == len(GSM8K_CASES)
    assert f"{len(GSM8K_CASES)} rows evaluated" in page and "all shown" in page
    for case in GSM8K_CASES:
        assert f'<span class="id">{case["id"]}</span>' in page
    # Steps after the first error carry no label on ProcessBench: shown unlabelled, never a disagreement.
    articles = page.split('<article class="row"')[1:]
    g4 = next(a for a in articles if '<span class="id">g4</span>' in a)  # steps ok, ok, ok; first error at 2
    assert re.findall(r'<li class="step (\w+)', g4) == ["correct", "correct", "wrong"]
    g2 = next(a for a in articles if '<span class="id">g2</span>' in a)  # first error at 0, two steps after
    assert re.findall(r'<li class="step (\w+)', g2) == ["wrong", "unlabelled", "unlabelled"]
    assert "no label (ProcessBench labels steps up to the first error only)" in page
    with pytest.raises(SystemExit) as exit_info:
        eval_main(["--model", str(prm_dir), "--benchmark", "best_of_n", "--candidates", "c.jsonl", "--html", "x.html"])
    assert exit_info.value.code == 2
    assert "--html shows step labels beside the PRM's scores" in capsys.readouterr().err


def processbench_page() -> tuple[str, dict]:
    """The --html page of test_evaluation's GSM8K cases scored by a PRM that gives "ok" steps 0.9 and "bad" ones
    0.1 (test_evaluation says which cases it gets wrong), and the metrics."""
    from tests.test_evaluation import GSM8K_CASES

    from prm_trainer.evaluating.processbench import case_to_row, subset_metrics

    scores = [[0.9 if step.endswith("ok") else 0.1 for step in case["steps"]] for case in GSM8K_CASES]
    metrics = subset_metrics(scores, GSM8K_CASES, 0.5)
    results = {"benchmark": "processbench", "model": "prm", "data": "pb", "threshold": 0.5, "calibration": None,
               "subsets": {"gsm8k": metrics}, "average": metrics, "scoring": {"step_separator": "\n"}}
    return evaluation_page(results, [("gsm8k", [case_to_row(case) for case in GSM8K_CASES], scores)]), metrics


def test_processbench_page_flags_exactly_the_missed_first_errors():
    page, metrics = processbench_page()
    articles = {re.search(r'<span class="id">(\w+)</span>', a)[1]: a for a in page.split('<article class="row"')[1:]}
    flagged = sorted(case for case, article in articles.items() if "badge alert\">PRM disagrees" in article)
    assert flagged == ["g1", "g4", "g6", "g7"]
    assert metrics["accuracy_erroneous"] == 3 / 6 and metrics["accuracy_correct"] == 1 / 2  # the same 4 misses
    assert "8 rows evaluated, the PRM disagrees with the labels on 4" in page


def test_evaluation_page_from_results_and_scores():
    results = {"benchmark": "built", "model": "m", "dataset": "d", "split": "test", "threshold": 0.5,
               "overall": {"num_rows": 1, "num_steps": 2, "step_accuracy": 0.5, "majority_baseline": 0.5,
                           "balanced_accuracy": 0.5, "first_error_accuracy_on_errors": None,
                           "first_error_accuracy_on_correct": 0.0, "first_error_f1": None},
               "sources": {}, "scoring": {"step_separator": "\n"}}
    results["sources"]["a"] = results["overall"]
    page = evaluation_page(results, [("test", [ROWS[0]], [PRM["m-1"]])])
    assert page.count('<article class="row"') == 1 and "the PRM disagrees with the labels on 1" in page


# ---------------------------------------------------------------- in a real browser


def require_chromium() -> str:
    """Chromium's path; without it the browser tests skip on a workstation, and fail under CI (CI=true), where a
    skip would hide that the page went untested."""
    executable = find_chromium()
    if executable is None:
        message = "Chromium not found: the browser tests need it (Debian: apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; under CI a missing browser is a failure, not a skip")
        pytest.skip(message)
    return executable


def test_missing_chromium_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI a missing browser is a failure"):
        require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        require_chromium()
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    (tmp_path / "chromium").chmod(0o755)
    monkeypatch.setenv("CI", "true")
    assert require_chromium() == str(tmp_path / "chromium")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    browser = Chromium(require_chromium(), tmp_path_factory.mktemp("chromium") / "profile")
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "report.html"
    dataset = DatasetDict({"train": Dataset.from_list(ROWS, features=FEATURES)})
    path.write_text(dataset_page(dataset, "browser test", per_source=10, scorer=fixed_scorer), encoding="utf-8")
    return path


def visible_ids(chromium) -> list[str]:
    return chromium.evaluate(
        "[...document.querySelectorAll('article.row')].filter(e => e.offsetParent !== null)"
        ".map(e => e.querySelector('.id').textContent)"
    )


@pytest.mark.browser
def test_page_renders_rows_coloured_by_label(chromium, page_file):
    chromium.open(page_file)
    assert visible_ids(chromium) == [row["id"] for row in ROWS]
    colours = chromium.evaluate(
        "[...document.querySelectorAll('article.row')].map(a => [...a.querySelectorAll('li.step')]"
        ".map(li => getComputedStyle(li).backgroundColor))"
    )
    green, red = "rgb(230, 244, 234)", "rgb(253, 236, 234)"
    assert colours == [[green if label else red for label in row["labels"]] for row in ROWS]
    outlined = chromium.evaluate(
        "[...document.querySelectorAll('article.row')].map(a => [...a.querySelectorAll('li.step')]"
        ".findIndex(li => getComputedStyle(li).outlineStyle === 'solid'))"
    )
    assert outlined == [row["first_error"] for row in ROWS]
    # Monte Carlo bars as wide as the score; the NaN step says it was not estimated.
    widths = chromium.evaluate(
        "[...document.querySelectorAll('article.row')[1].querySelectorAll('li.step')].map(li => {"
        " const f = li.querySelector('.bar:not(.prm) .fill'); return f ? f.getBoundingClientRect().width : null; })"
    )
    assert widths == [pytest.approx(60, abs=0.6), 0, None]
    assert "MC not estimated" in chromium.evaluate("document.querySelectorAll('article.row')[1].textContent")
    assert chromium.evaluate("document.getElementById('shown').textContent") == "6 of 6 rows shown"


@pytest.mark.browser
def test_filters_change_what_is_visible(chromium, page_file):
    chromium.open(page_file)
    chromium.choose("#filters select", "model_sampled/m")
    assert visible_ids(chromium) == ["m-1", "m-2", "m-3"]
    chromium.click("#filters input[name=prm]")
    assert visible_ids(chromium) == ["m-1", "m-2"]
    chromium.click("#filters input[name=judge_mc]")
    assert visible_ids(chromium) == ["m-2"]
    assert chromium.evaluate("document.getElementById('shown').textContent") == "1 of 6 rows shown"
    chromium.choose("#filters select", "")
    chromium.click("#filters input[name=judge_mc]")
    assert visible_ids(chromium) == ["m-1", "m-2", "s-1", "<b>evil</b>"]
    chromium.choose("#filters select", "evil/<i>source</i>")
    assert visible_ids(chromium) == ["<b>evil</b>"]


@pytest.mark.browser
def test_hostile_row_is_text_and_nothing_runs_or_loads(chromium, page_file):
    chromium.open(page_file)
    hostile = chromium.evaluate("document.querySelectorAll('article.row')[5].outerHTML")
    assert chromium.evaluate("document.querySelectorAll('article.row')[5].querySelector('.prompt').textContent") \
        == HOSTILE_PROMPT
    steps = chromium.evaluate(
        "[...document.querySelectorAll('article.row')[5].querySelectorAll('li.step .text')].map(e => e.textContent)"
    )
    assert steps == HOSTILE_STEPS
    assert "<img" not in hostile and "&lt;img src=x onerror=alert(2)&gt;" in hostile
    assert chromium.evaluate("document.querySelectorAll('[onerror]').length") == 0
    assert chromium.evaluate("document.querySelectorAll('article.row')[5].querySelectorAll('img, b, i, script').length") == 0
    assert chromium.evaluate("document.scripts.length") == 1
    assert chromium.evaluate("document.querySelectorAll('article.row').length") == 6  # </body> ended nothing
    assert chromium.dialogs() == []
    assert [e for e in chromium.events if e["method"] == "Runtime.exceptionThrown"] == []
    assert [e for e in chromium.events if e["method"] == "Log.entryAdded"
            and e["params"]["entry"]["level"] == "error"] == []
    # The page file itself is the only request; the plots are data: URIs inside it.
    assert {url for url in chromium.requested_urls() if not url.startswith("data:")} == {page_file.as_uri()}


@pytest.mark.browser
def test_without_javascript_every_row_is_readable(chromium, page_file):
    chromium.open(page_file, javascript=False)
    try:
        assert visible_ids(chromium) == [row["id"] for row in ROWS]
        assert chromium.evaluate("document.getElementById('filters').offsetParent") is None
        assert chromium.evaluate("document.getElementById('shown').textContent") == ""
    finally:
        chromium.send("Emulation.setScriptExecutionDisabled", value=False)


@pytest.mark.browser
def test_prm_eval_page_shows_mistakes_first_and_filters_them(chromium, tmp_path):
    path = tmp_path / "pb.html"
    path.write_text(processbench_page()[0], encoding="utf-8")
    chromium.open(path)
    # Four misses, each at confidence 0.8 (a 0.1 or 0.9 on the wrong side), first in their order; then the hits.
    assert visible_ids(chromium) == ["g1", "g4", "g6", "g7", "g0", "g2", "g3", "g5"]
    chromium.click("#filters input[name=prm]")
    assert visible_ids(chromium) == ["g1", "g4", "g6", "g7"]
    assert chromium.evaluate("document.querySelector('input[name=judge_mc]')") is None  # no such columns here
    grey = chromium.evaluate(
        "getComputedStyle(document.querySelectorAll('article.row')[5].querySelectorAll('li.step')[1]).backgroundColor"
    )
    assert grey == "rgb(241, 241, 241)"  # g2's step after its first error: unlabelled


@pytest.mark.browser
def test_screenshot_is_not_blank(chromium, tmp_path):
    folder = save(tmp_path)
    out = tmp_path / "report.html"
    assert builder_main(["report", str(folder), "--output", str(out)]) == 0
    chromium.open(out)
    assert chromium.evaluate("document.querySelector('figure img').naturalWidth") > 500  # the plot decoded
    pixels = matplotlib.image.imread(io.BytesIO(chromium.screenshot()), format="png")
    assert pixels.shape[0] > 900 and pixels.shape[1] == 1200
    flat = pixels[..., :3].reshape(-1, 3)
    assert flat.std() > 0.05  # not one colour
    rgb = (flat * 255).round().astype(np.int64)
    assert len(np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])) > 50
    # The label colours are on the screen, not only in the style sheet.
    for colour in ((230, 244, 234), (253, 236, 234)):
        assert (np.abs(rgb - colour).max(axis=1) <= 1).sum() > 1000


def test_a_browser_failure_names_what_happened(tmp_path):
    with pytest.raises((BrowserError, OSError)):
        Chromium(str(tmp_path / "no-such-chromium"), tmp_path / "profile", timeout=5).close()


# ---------------------------------------------------------------- plots a reader can trust (issue 20, item 8)


def texts(figure) -> list[str]:
    return [t.get_text() for ax in figure.axes for t in ax.texts] + [figure._suptitle.get_text()
                                                                     if figure._suptitle else ""]


def test_stats_plot_says_no_errors_and_uses_integer_ticks():
    from prm_builder.publishing.stats import distribution_figure

    correct = [labelled(f"c{i}", "synthetic/correct", ["a", "b"], [True, True], [1.0, 1.0], -1, -1)
               for i in range(3)]
    figure = distribution_figure(DatasetDict({"train": Dataset.from_list(ROWS, features=FEATURES),
                                              "test": Dataset.from_list(correct, features=FEATURES)}), "synthetic (x=1)")
    shown = texts(figure)
    assert "synthetic (x=1)" in shown
    assert "no errors: every step of every row is labelled correct" in shown
    left, right = figure.axes[0], figure.axes[1]
    for ticks in (left.get_yticks(), left.get_xticks(), right.get_yticks(), right.get_xticks()):
        assert all(float(t).is_integer() for t in ticks)
    # One legend entry per source, with its number of rows with an error.
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "evil/<i>source</i> (1)", "model_sampled/m (2)", "synthetic/flip_number (1)"]


def best_of_n_results(by_n) -> dict:
    return {"benchmark": "best_of_n", "model": "prm", "num_problems": 2, "max_n": 4, "by_n": by_n,
            "scoring": {"step_separator": "\n"}}


def test_best_of_n_plot_draws_equal_curves_once_with_a_combined_label():
    from prm_trainer.evaluating.eval_report import figure

    def figures(prm_min, prm_last, majority, random):
        return {"prm_min": prm_min, "prm_prod": prm_min, "prm_last": prm_last, "majority_vote": majority,
                "pass_at_n": 1.0, "random": random, "groups": 2, "unscored": 0}

    chart = figure(best_of_n_results({1: figures(0.5, 0.5, 0.5, 0.5), 2: figures(0.75, 0.5, 0.5, 0.5),
                                      4: figures(1.0, 0.5, 0.5, 0.5)}))
    labels = [t.get_text() for t in chart.axes[0].get_legend().get_texts()]
    assert labels == ["PRM min = prod", "PRM last = majority vote = random", "pass@N"]
    assert [line.get_label() for line in chart.axes[0].lines] == labels
    assert "Best-of-N of prm" in chart.axes[0].get_title()


def test_bar_plot_tells_zero_from_no_data_and_draws_the_majority_baseline():
    from prm_trainer.evaluating.eval_report import figure

    metrics = {"num_rows": 3, "num_steps": 6, "step_accuracy": 0.0, "majority_baseline": 0.75,
               "balanced_accuracy": 0.5, "first_error_accuracy_on_errors": None,
               "first_error_accuracy_on_correct": 1.0, "first_error_f1": None}
    results = {"benchmark": "built", "model": "prm", "dataset": "out/synthetic", "split": "test", "threshold": 0.3,
               "overall": metrics, "sources": {"a": metrics}, "scoring": {"step_separator": "\n"}}
    chart = figure(results)
    axes = chart.axes[0]
    values = [t.get_text() for t in axes.texts]
    # Per group: step acc 0.0 (a drawn zero), balanced 50.0, F1 n/a (no erroneous rows: not a zero bar).
    assert values == ["0.0", "0.0", "50.0", "50.0", "n/a", "n/a"]
    hidden = [bar.get_visible() for bar in axes.patches]
    assert hidden == [True, True, True, True, False, False]
    baselines = [c for c in axes.collections if c.get_label() == "majority baseline"]
    assert len(baselines) == 1 and baselines[0].get_segments()[0][0][1] == pytest.approx(75.0)
    assert "majority baseline" in [t.get_text() for t in axes.get_legend().get_texts()]
    assert "threshold 0.3" in axes.get_title() and "out/synthetic" in axes.get_title()


def test_the_report_reads_mc_first_error_as_model_sampled_writes_it():
    from prm_builder.publishing import report
    from prm_builder.sampling import judge_labels

    assert report.NO_MC == judge_labels.NO_MC
