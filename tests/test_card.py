"""The dataset card: numbers, options, redaction, merging into an existing card, and the packaged template."""

from collections import Counter
from pathlib import Path

import pytest
from datasets import DatasetDict
from huggingface_hub import DatasetCard

from prm_builder import card, hub
from prm_builder.redact import public_value, redact
from tests.publishing_helpers import REPO_ID, small_dataset


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
    assert "- Model: `<local>/my-model` (a local folder) (license: apache-2.0)" in section
    assert str(tmp_path) not in section
    assert "`<local>/NAME` stands for a file or folder on the machine that built this config" in section
    assert "`<redacted>` hides a credential, never published." in section
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


def test_credentials_and_local_paths_never_reach_the_card(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVER_TOKEN", "tok-4f7a9c1e2b")
    problems = tmp_path / "home" / "me" / "gsm8k"
    problems.mkdir(parents=True)
    resolved = {
        "base_url": ["http://user:pAsSw0rd@127.0.0.1:8000/v1", "https://h.example/v1?api_key=abc123xyz&x=1"],
        "problems": str(problems),
        "generation_cache_dir": "./relative/cache",
        "prompt_template": "Bearer tok-4f7a9c1e2b {question}",
        "model": "org/name",
        "seed": 0,
    }
    section = card.render_section(small_dataset(), "synthetic", REPO_ID, resolved, {}, model_license="mit")

    for secret in ("pAsSw0rd", "user:", "abc123xyz", "tok-4f7a9c1e2b", str(tmp_path), "relative/cache"):
        assert secret not in section
    assert "| `base_url` | `http://<redacted>@127.0.0.1:8000/v1, https://h.example/v1?api_key=<redacted>&x=1` |" in section
    assert "| `problems` | `<local>/gsm8k` |" in section
    assert "| `generation_cache_dir` | `<local>/cache` |" in section
    assert "problems='<local>/gsm8k', generation_cache_dir='<local>/cache'" in section
    # A Hub id is not a local path, and a bare word is shown as it is.
    assert "[`org/name`](https://huggingface.co/org/name)" in section and "| `seed` | `0` |" in section


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://u:p@host:1/v1", "http://<redacted>@host:1/v1"),
        ("https://token@host/x", "https://<redacted>@host/x"),
        ("see https://h/v1?token=abc&b=2#f", "see https://h/v1?token=<redacted>&b=2#f"),
        ("https://h/v1?x-amz-signature=deadbeef", "https://h/v1?x-amz-signature=<redacted>"),
        ("key hf_abcdefghijklmnopqrstu used", "key <redacted> used"),
        ("OpenAI sk-proj-abcdefghijklmnop1234", "OpenAI <redacted>"),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: <redacted>"),
        ("nothing secret at http://127.0.0.1:8000/v1", "nothing secret at http://127.0.0.1:8000/v1"),
        ("max_new_tokens=24", "max_new_tokens=24"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def test_secret_environment_values_are_redacted(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "Zq8wY2mN4pL6")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "disabled")  # names tokenizers, not a token
    assert redact("key Zq8wY2mN4pL6, tokenizers disabled") == "key <redacted>, tokenizers disabled"


def test_public_values():
    assert public_value({"train": ["/data/a.jsonl", "b.jsonl"]}) == {"train": ["<local>/a.jsonl", "b.jsonl"]}
    assert public_value("~/models/tiny/") == "<local>/tiny"
    assert public_value("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"  # not on this machine: a Hub id
    assert public_value(["gsm8k", 3, None]) == ["gsm8k", 3, None]


def test_extra_columns_get_breakdowns_from_the_schema_alone():
    """A config's own columns are summarized by type, whatever the config: few-valued scalars get a table."""
    base = small_dataset()
    extended = {}
    for split, data in base.items():
        n = len(data)
        data = data.add_column("origin", ["forum" if i % 2 else "textbook" for i in range(n)])
        extended[split] = data.add_column("step_scores", [[0.5] * len(labels) for labels in data["labels"]])
    section = card.render_section(DatasetDict(extended), "synthetic", REPO_ID, {"seed": 0}, {}, None)

    assert "Rows per `origin`:" in section
    assert "| `forum` | 1 | 0 |" in section and "| `textbook` | 1 | 1 |" in section
    assert "step_scores" not in section  # a list column: no breakdown


def test_an_export_is_named_after_what_it_holds_not_its_folder(tmp_path):
    folder = tmp_path / "export"
    hub.export_to_folder(small_dataset(), folder, "synthetic")
    first = DatasetCard.load(folder / "README.md")
    assert first.data.pretty_name == "Process reward model data: synthetic"
    assert first.text.lstrip().startswith("# Process reward model data: synthetic\n")

    hub.export_to_folder(small_dataset(), folder, "prm800k")  # a second config: the generated name follows
    second = DatasetCard.load(folder / "README.md")
    assert second.data.pretty_name == "Process reward model data: prm800k, synthetic"
    assert second.text.lstrip().startswith("# Process reward model data: prm800k, synthetic\n")
    assert "export" not in (second.data.pretty_name, second.text.lstrip().splitlines()[0])


def test_an_export_keeps_a_name_someone_gave_it_and_a_repo_names_its_card(tmp_path):
    folder = tmp_path / "export"
    hub.export_to_folder(small_dataset(), folder, "synthetic")
    path = folder / "README.md"
    path.write_text(path.read_text().replace("pretty_name: 'Process reward model data: synthetic'",
                                             "pretty_name: GSM8K corruptions"))
    hub.export_to_folder(small_dataset(), folder, "prm800k")
    assert DatasetCard.load(path).data.pretty_name == "GSM8K corruptions"

    # An export made for a named repo (and a push) takes the repo's name, which someone chose.
    hub.export_to_folder(small_dataset(), tmp_path / "named", "synthetic", repo_id=REPO_ID)
    assert DatasetCard.load(tmp_path / "named" / "README.md").data.pretty_name == REPO_ID.rpartition("/")[2]


def test_an_export_named_after_its_folder_by_an_older_version_is_renamed(tmp_path):
    folder = tmp_path / "export"
    hub.export_to_folder(small_dataset(), folder, "synthetic")
    path = folder / "README.md"
    old = path.read_text().replace("pretty_name: 'Process reward model data: synthetic'", "pretty_name: export")
    path.write_text(old.replace("# Process reward model data: synthetic\n", "# export\n"))
    hub.export_to_folder(small_dataset(), folder, "synthetic")
    card_now = DatasetCard.load(path)
    assert card_now.data.pretty_name == "Process reward model data: synthetic"
    assert card_now.text.lstrip().startswith("# Process reward model data: synthetic\n")
