"""Models as prm-train and prm-eval load them: a LoRA PRM used from another folder, its base model missing, and the
load reports and warnings that are expected (and so not shown) versus the ones that are not."""

import json
import shutil

import datasets
import pytest

import prm_builder  # noqa: F401 - registers the builder
from prm_trainer import cli as train_cli
from prm_trainer import eval_cli
from prm_trainer.common.loading import adapter_base, only_the_head

TRAIN = ["--use_peft", "--lora_r", "4", "--max_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none",
         "--save_strategy", "no", "--dataset_test_split", "none", "--seed", "0"]


@pytest.fixture
def trained_in_a(tmp_path, tiny_model_path, gsm8k_dir, monkeypatch, capfd):
    """A LoRA PRM trained as the README does, in folder a/, from the relative base `tiny`."""
    a = tmp_path / "a"
    shutil.copytree(tiny_model_path, a / "tiny")
    datasets.load_dataset("prm_builder", "synthetic", problems=str(gsm8k_dir), max_examples=4).save_to_disk(a / "data")
    monkeypatch.chdir(a)
    capfd.readouterr()
    assert train_cli.command_line(["--model_name_or_path", "tiny", "--dataset_name", "data", "--output_dir", "prm",
                                   *TRAIN]) == 0
    return a


def test_a_lora_prm_trained_from_a_relative_base_works_from_another_folder(trained_in_a, tmp_path, monkeypatch, capfd):
    a = trained_in_a
    out, err = capfd.readouterr()
    assert out.splitlines()[-1] == (f"saved the model to {a / 'prm'} (measure it with: prm-eval --model prm "
                                    "--benchmark built --dataset DATASET)")
    assert "LOAD REPORT" not in out + err  # the new head is expected: not reported
    assert json.loads((a / "prm" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(a / "tiny")

    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    argv = ["--model", "../a/prm", "--benchmark", "built", "--dataset", "../a/data", "--no_progress", "--json"]
    assert eval_cli.main(argv) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["overall"]["num_rows"] == len(datasets.load_from_disk(str(a / "data"))["test"])
    # The base has no head (the adapter brings it): no LOAD REPORT, and PEFT's FutureWarning is not the user's.
    assert "LOAD REPORT" not in err and "FutureWarning" not in err


def test_an_adapter_with_a_relative_base_is_resolved_beside_it(trained_in_a, tmp_path, monkeypatch, capfd):
    a = trained_in_a
    config_path = a / "prm" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "base_model_name_or_path": "tiny"}))  # as saved before the fix
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    assert adapter_base("../a/prm", "tiny") == str(a / "tiny")  # not in b/: found beside the adapter's folder
    capfd.readouterr()
    assert eval_cli.main(["--model", "../a/prm", "--benchmark", "built", "--dataset", "../a/data", "--no_progress",
                          "--json"]) == 0


def test_a_missing_base_folder_is_one_line(trained_in_a, tmp_path, monkeypatch, capfd):
    a = trained_in_a
    (a / "tiny").rename(tmp_path / "moved")
    capfd.readouterr()
    assert eval_cli.main(["--model", str(a / "prm"), "--benchmark", "built", "--dataset", str(a / "data")]) == 1
    assert capfd.readouterr().err == (
        f"prm-eval: error: {a / 'prm'} is a LoRA adapter of the base model '{a / 'tiny'}', which is not there (looked "
        f"in {a} and beside the adapter): put the base model back, or set base_model_name_or_path in "
        f"{a / 'prm' / 'adapter_config.json'} to where it is now\n"
    )


REPORT = (
    "\x1b[1mQwen2ForTokenClassification LOAD REPORT\x1b[0m from: tiny\n"
    "Key          | Status  | \n"
    "-------------+---------+-\n"
    "{rows}\n"
    "Notes:\n- MISSING:\tthose params were newly initialized because missing from the checkpoint.\n"
)


@pytest.mark.parametrize(
    ("rows", "hidden"),
    [
        (["score.weight | \x1b[31mMISSING\x1b[0m | ", "score.bias   | MISSING | "], True),
        (["classifier.weight | MISSING | ", "lm_head.weight | UNEXPECTED | "], True),
        (["score.weight | MISSING | ", "model.layers.0.mlp.up_proj.weight | MISSING | "], False),
        (["score.weight | MISMATCH | Reinit due to size mismatch"], False),
        (["lm_head.weight | MISSING | "], False),
    ],
)
def test_only_the_expected_head_report_is_hidden(rows, hidden):
    assert only_the_head(REPORT.format(rows="\n".join(rows))) is hidden
