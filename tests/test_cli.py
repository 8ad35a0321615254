"""`prm-builder build` and `stats`, through the real console script and through main()."""

import json
import subprocess
import sys
from pathlib import Path

from datasets import load_from_disk

from prm_builder.cli import main


def test_build_saves_loads_and_summarizes(tmp_path, capsys, gsm8k_dir):
    out = tmp_path / "built"
    code = main(
        [
            "build", "synthetic", "--problems", str(gsm8k_dir), "--max-examples", "40",
            "--strategies", "flip_number,wrong_final_answer", "--num-incorrect-per-problem", "2",
            "--no-include-correct", "--output-dir", str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    saved = load_from_disk(str(out))
    assert {split: len(data) for split, data in saved.items()} == {"train": 40, "test": 40}
    assert set(saved["train"]["source"]) == {"synthetic/flip_number", "synthetic/wrong_final_answer"}
    assert "== train: 40 rows" in printed and "synthetic/flip_number" in printed and "label balance" in printed
    options = json.loads((out / "prm_builder_options.json").read_text())
    assert options == {
        "config": "synthetic",
        "options": {
            "problems": str(gsm8k_dir), "num_incorrect_per_problem": 2, "max_examples": 40,
            "strategies": ["flip_number", "wrong_final_answer"], "include_correct": False,
        },
    }


def test_stats_reports_drops_and_plots(tmp_path, capsys):
    problems = tmp_path / "problems"
    problems.mkdir()
    (problems / "train.jsonl").write_text(
        json.dumps({"question": "q1", "answer": "She has 2 * 3 = <<2*3=6>>6 pens.\nThen 6 - 1 = <<6-1=5>>5.\n#### 5"}) + "\n"
        + json.dumps({"question": "q2", "answer": "no final answer here"}) + "\n"
    )
    out = tmp_path / "built"
    assert main(["build", "synthetic", "--problems", str(problems), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    plot = tmp_path / "dist.png"
    assert main(["stats", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "== train: 4 rows" in printed
    assert "dropped 1 items: 1 no_final_answer" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["stats", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["rows"] == 4 and summary["train"]["dropped"] == {"no_final_answer": 1}
    assert summary["train"]["rows_per_source"]["synthetic/correct"] == 1


def test_errors_are_one_line_and_exit_nonzero(tmp_path, capsys):
    assert main(["build", "synthetic", "--problems", "nowhere", "--output-dir", str(tmp_path / "x")]) == 1
    assert "prm-builder: error: problems must be" in capsys.readouterr().err
    assert main(["stats", str(tmp_path)]) == 1
    assert "is not a folder saved by `prm-builder build`" in capsys.readouterr().err


def test_console_script_runs_the_main_job(tmp_path):
    # The console script that `pip install` put beside this interpreter (the venv's bin may not be on PATH).
    script = Path(sys.executable).parent / "prm-builder"
    assert script.is_file(), f"prm-builder console script not installed beside {sys.executable}"
    out = tmp_path / "sample"
    result = subprocess.run(
        [script, "build", "synthetic", "--problems", "sample", "--output-dir", str(out)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "== train:" in result.stdout and "== test:" in result.stdout
    assert len(load_from_disk(str(out))["train"]) > 0


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "prm_builder.cli", "build", "synthetic", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--num-incorrect-per-problem" in result.stdout and "--keep-calculator-annotations" in result.stdout
