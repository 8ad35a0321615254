"""The dataset card: numbers, options, redaction, merging into an existing card, and the packaged template."""

from collections import Counter
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard

from prm_builder import card, hub
from publishing_helpers import REPO_ID, small_dataset


@pytest.fixture
def frozen_date(monkeypatch):
    # The card says when it was built; freeze it so cards made a moment apart compare equal.
    monkeypatch.setattr(card, "_build_date", lambda: "2025-01-31")


def test_the_packaged_template_is_the_root_template():
    root = Path(__file__).resolve().parents[1] / "dataset_card.md"
    assert not card.CARD_TEMPLATE.is_symlink()
    assert card.CARD_TEMPLATE.read_bytes() == root.read_bytes(), "copy dataset_card.md to prm_builder/data/"


def test_card_numbers_for_a_small_dataset(tmp_path, frozen_date):
    drops = {"train": Counter({"flip_number:implausible_answer": 2, "bad_problem": 1})}
    hub.export_to_folder(small_dataset(), tmp_path, "synthetic", repo_id=REPO_ID, options={"problems": "sample", "seed": 3}, drops=drops
    )
    text = (tmp_path / "README.md").read_text()

    assert "| train | 2 | 7 | 4 | 3 | 57.1% | 1 | 2 flip_number:implausible_answer, 1 bad_problem |" in text
    assert "| test | 1 | 1 | 0 | 1 | 0.0% | 1 | nothing |" in text
    assert "| `synthetic/correct` | 1 | 0 |" in text
    assert "| `synthetic/flip_number` | 1 | 1 |" in text
    assert "| train | 3.5 / 3.5 / 4 | 1.0 / 1 / 1 |" in text
    assert "| test | 1.0 / 1 / 1 | 0.0 / 0 / 0 |" in text
    # Every option, defaults filled in, and the call that rebuilds it.
    assert "| `problems` | `sample` |" in text and "| `seed` | `3` |" in text
    assert "| `num_incorrect_per_problem` | `3` |" in text
    assert "- Built with prm-builder 0.1.0 (datasets " in text and ") on 2025-01-31" in text
    assert 'load_dataset("prm_builder", "synthetic", problems=\'sample\', num_incorrect_per_problem=3,' in text
    card = DatasetCard(text)
    assert card.data.license == "mit"
    assert card.data.pretty_name == "math-prm"
    assert card.data.task_categories == ["token-classification"]


def test_card_redacts_secret_options_and_names_the_model(tmp_path):
    model_path = tmp_path / "my-model"
    model_path.mkdir()
    (model_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# my model\n")
    resolved = {"model": str(model_path), "api_key": "sk-very-secret", "max_new_tokens": 24, "step_separator": "\n\n"}
    section = card.render_section(small_dataset(), "synthetic", REPO_ID, resolved, {}, model_license=None)

    assert "sk-very-secret" not in section
    assert "| `api_key` | `<redacted>` |" in section
    assert "| `max_new_tokens` | `24` |" in section
    assert "| `step_separator` | `\\n\\n` |" in section  # one table row, newlines shown escaped
    assert f"- Model: `{model_path}` (a local folder) (license: apache-2.0)" in section
    assert "licenses=apache-2.0,mit -->" in section
    unknown = card.render_section(small_dataset(), "synthetic", REPO_ID, {"model": "org/unknown-model"}, {}, None)
    assert (
        "- Model: [`org/unknown-model`](https://huggingface.co/org/unknown-model) (license: see the model card)"
        in unknown
    )
    assert "licenses=mit,other -->" in unknown
    given = card.render_section(small_dataset(), "synthetic", REPO_ID, {"model": "org/unknown-model"}, {}, "llama3.1")
    assert "(license: llama3.1)" in given and "licenses=llama3.1,mit -->" in given


def test_options_not_given_are_marked_not_recorded(tmp_path):
    hub.export_to_folder(small_dataset(), tmp_path, "synthetic", repo_id=REPO_ID)
    assert "| `(not recorded)` | `pass options= to push_to_hub` |" in (tmp_path / "README.md").read_text()


def test_a_hand_written_card_keeps_its_text_and_metadata(tmp_path):
    metadata = "language:\n- en\n- fr\nannotations_creators:\n- expert-generated\n"
    (tmp_path / "README.md").write_text(f"---\n{metadata}---\n# My PRM data\n\nHand-written intro.\n")
    hub.export_to_folder(small_dataset(), tmp_path, "synthetic", repo_id=REPO_ID, options={"problems": "sample"})
    card = DatasetCard.load(tmp_path / "README.md")

    assert card.text.startswith(
        "# My PRM data\n\nHand-written intro.\n\n## Configs\n\n<!-- prm-builder:configs:start -->"
    )
    assert card.data.language == ["en", "fr"]
    assert card.data.annotations_creators == ["expert-generated"]
    assert [c["config_name"] for c in card.data.configs] == ["synthetic"]


def test_a_card_with_broken_yaml_is_named(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: [mit\n---\nbody\n")
    with pytest.raises(ValueError, match=r"README\.md: the existing card's YAML metadata does not parse"):
        hub.export_to_folder(small_dataset(), tmp_path, "synthetic", repo_id=REPO_ID)
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # nothing written
