"""Publishing: export to a folder and read back, and the upload checked at the HfApi boundary.

No test reaches the network: exports are local folders, uploads go to an in-memory repo behind
HfApi's methods, and the Hub's error answers come from a real HTTP server on 127.0.0.1.
"""

import http.server
import json
import socket
import threading
import types
from pathlib import Path

import httpx2
import pytest
from datasets import Dataset, DatasetDict, load_dataset
from huggingface_hub import DatasetCard, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

import prm_builder
from prm_builder import card, hub
from prm_builder.builder import CONFIGS
from prm_builder.cli import main as cli_main
from tests.publishing_helpers import REPO_ID, TOKEN, assert_same_rows, build, builder_options, section_of, small_dataset


@pytest.fixture
def frozen_date(monkeypatch):
    # The card says when it was built; freeze it so cards made a moment apart compare equal.
    monkeypatch.setattr(card, "_build_date", lambda: "2025-01-31")


# -- export and read back ------------------------------------------------------------------------------


# model_sampled generates with a tiny model (seconds on CPU): slow tier; the fast tier exports it
# through the openai stub server in test_no_password_token_or_local_path_reaches_the_export.
@pytest.mark.parametrize("config", ["synthetic", "prm800k", pytest.param("model_sampled", marks=pytest.mark.slow)])
def test_export_reads_back_row_for_row(config, test_data, tmp_path, request):
    model = request.getfixturevalue("tiny_chat_model_path") if config == "model_sampled" else None
    options = builder_options(config, test_data, model)
    built = build(config, options)
    export_dir = tmp_path / "export"

    written = prm_builder.push_to_hub(built, REPO_ID, config, options=options, export_dir=export_dir)

    shards = [f"{config}/{split}-00000-of-00001.parquet" for split in built]
    assert written == [*shards, f"{config}/distributions.png", "README.md"]
    assert sorted(str(p.relative_to(export_dir)) for p in export_dir.rglob("*") if p.is_file()) == sorted(written)
    assert_same_rows(built, load_dataset(str(export_dir), name=config))

    card = DatasetCard.load(export_dir / "README.md")
    assert [c["config_name"] for c in card.data.configs] == [config]
    assert card.data.configs[0]["data_files"] == [{"split": s, "path": f"{config}/{s}-*"} for s in built]
    info = card.data.dataset_info
    assert info["config_name"] == config
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {s: len(built[s]) for s in built}
    assert {"process-reward-model", "stepwise-supervision", "trl"} <= set(card.data.tags)
    assert card.data.size_categories == ["n<1K"]
    section = section_of(card.text, config)
    for split in built:
        positives = sum(sum(labels) for labels in built[split]["labels"])
        steps = sum(len(labels) for labels in built[split]["labels"])
        assert f"| {split} | {len(built[split]):,} | {steps:,} | {positives:,} | {steps - positives:,} |" in section
    assert (
        f"![Steps per solution and position of the first wrong step, per split and source]({config}/distributions.png)"
        in section
    )
    assert (export_dir / config / "distributions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f'load_dataset("{REPO_ID}", "{config}")' in section
    assert f"prm-train --dataset_name {REPO_ID} --dataset_config {config}" in section
    assert CONFIGS[config].citation.strip() in section


def test_two_configs_in_one_folder_both_load_and_keep_each_other(test_data, tmp_path, frozen_date):
    synthetic_options = builder_options("synthetic", test_data)
    prm800k_options = builder_options("prm800k", test_data)
    synthetic = build("synthetic", synthetic_options)
    prm800k = build("prm800k", prm800k_options)
    export_dir = tmp_path / "export"

    hub.export_to_folder(synthetic, export_dir, "synthetic", repo_id=REPO_ID, options=synthetic_options, max_shard_size=4000)
    first_card = (export_dir / "README.md").read_text()
    assert len(list((export_dir / "synthetic").glob("train-*.parquet"))) > 1
    # A maintainer's own words outside the configs region survive every later push.
    edited = first_card.replace("## Row format", "Maintained by the math team.\n\n## Row format")
    (export_dir / "README.md").write_text(edited)
    hub.export_to_folder(prm800k, export_dir, "prm800k", repo_id=REPO_ID, options=prm800k_options)

    card_text = (export_dir / "README.md").read_text()
    card = DatasetCard(card_text)
    assert [c["config_name"] for c in card.data.configs] == ["prm800k", "synthetic"]
    assert [i["config_name"] for i in card.data.dataset_info] == ["prm800k", "synthetic"]
    assert card.data.license == "mit"
    assert section_of(card_text, "synthetic") == section_of(first_card, "synthetic")
    assert "Maintained by the math team." in card_text
    assert_same_rows(synthetic, load_dataset(str(export_dir), name="synthetic"))
    assert_same_rows(prm800k, load_dataset(str(export_dir), name="prm800k"))

    # Exporting synthetic again (one shard now) removes its old shards and nothing of prm800k.
    hub.export_to_folder(synthetic, export_dir, "synthetic", repo_id=REPO_ID, options=synthetic_options)
    assert sorted(p.name for p in (export_dir / "synthetic").iterdir()) == [
        "distributions.png", "test-00000-of-00001.parquet", "train-00000-of-00001.parquet",
    ]  # fmt: skip
    assert_same_rows(synthetic, load_dataset(str(export_dir), name="synthetic"))
    assert_same_rows(prm800k, load_dataset(str(export_dir), name="prm800k"))
    assert (export_dir / "README.md").read_text().count("<!-- prm-builder:config:start") == 2


@pytest.mark.parametrize("bad", ["me/math--prm", "a/b/c", "me/.hidden", ""])
def test_malformed_repo_ids_are_refused(bad, tmp_path):
    with pytest.raises(ValueError, match="repo id must be 'namespace/name' or 'name'"):
        hub.push_to_hub(small_dataset(), bad, "synthetic", export_dir=tmp_path)


def test_rows_without_the_row_schema_are_refused(tmp_path):
    bare = DatasetDict({"train": Dataset.from_list([{"prompt": "p", "labels": [1]}])})
    with pytest.raises(
        ValueError,
        match=r"split 'train' does not have the prm_builder row schema: columns \['id', 'completions', 'labels'",
    ):
        hub.export_to_folder(bare, tmp_path, "synthetic", repo_id=REPO_ID)


# -- the upload, at the HfApi boundary ---------------------------------------------------------------------------


def http_error(status: int, message: str = "refused") -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/datasets/me/math-prm/commit/main")
    return HfHubHTTPError(message, response=httpx2.Response(status, request=request))


class InMemoryHub(HfApi):
    """One dataset repo held in memory behind the HfApi methods push_to_hub calls; records what it is sent."""

    def __init__(self, tmp_path: Path):
        super().__init__(token=False)
        self.tmp_path = tmp_path
        self.files: dict[str, bytes] = {}
        self.sha_counter = 0
        self.uploads: list[str] = []
        self.commits: list[dict] = []
        self.tokens: list = []
        self.fail_upload_at: int | None = None
        self.concurrent_commit: dict[str, bytes] | None = None
        self.fail_commit = False

    def __call__(self, token=None, **kwargs):  # stands in for the HfApi class
        self.tokens.append(token)
        return self

    @property
    def sha(self) -> str:
        return f"{self.sha_counter:040x}"

    def whoami(self, token=None, **kwargs):
        return {"name": "me", "type": "user"}

    def create_repo(self, repo_id, **kwargs):
        self.created = (repo_id, kwargs)

    def auth_check(self, repo_id, **kwargs):
        self.checked = (repo_id, kwargs)

    def create_branch(self, repo_id, **kwargs):
        self.branch = kwargs["branch"]

    def repo_info(self, repo_id, **kwargs):
        return types.SimpleNamespace(sha=self.sha)

    def list_repo_files(self, repo_id, **kwargs):
        return sorted(self.files)

    def hf_hub_download(self, repo_id, filename, **kwargs):
        path = self.tmp_path / f"download-{self.sha_counter}-{filename}"
        path.write_bytes(self.files[filename])
        return str(path)

    def preupload_lfs_files(self, repo_id, additions, **kwargs):
        for addition in additions:
            if self.fail_upload_at == len(self.uploads):
                raise httpx2.ConnectError("[Errno 101] Network is unreachable")
            self.uploads.append(addition.path_in_repo)
            addition.path_or_fileobj = Path(addition.path_or_fileobj).read_bytes()

    def create_commit(self, repo_id, operations, *, commit_message, parent_commit=None, **kwargs):
        if self.fail_commit:
            raise httpx2.ReadTimeout("The read operation timed out")
        if self.concurrent_commit is not None:
            # Someone else commits between our read of the card and our commit.
            self.files.update(self.concurrent_commit)
            self.sha_counter += 1
            self.concurrent_commit = None
        if parent_commit != self.sha:
            raise http_error(412, "A commit has happened since. Please refresh and try again.")
        commit = {"message": commit_message, "added": {}, "deleted": [], "kwargs": kwargs}
        for op in operations:
            if hasattr(op, "path_or_fileobj"):
                content = op.path_or_fileobj
                commit["added"][op.path_in_repo] = content if isinstance(content, bytes) else Path(content).read_bytes()
            else:
                commit["deleted"].append(op.path_in_repo)
        for path in commit["deleted"]:
            del self.files[path]
        self.files.update(commit["added"])
        self.commits.append(commit)
        self.sha_counter += 1
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/{self.sha}")

    def checkout(self, folder: Path) -> Path:
        for path, content in self.files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(content)
        return folder


@pytest.fixture
def remote(tmp_path, monkeypatch):
    fake = InMemoryHub(tmp_path)
    monkeypatch.setattr(hub, "HfApi", fake)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return fake


def test_push_commits_exactly_what_export_writes(remote, test_data, tmp_path, frozen_date, capsys, caplog):
    options = builder_options("synthetic", test_data)
    synthetic = build("synthetic", options)
    exported = tmp_path / "export"
    hub.export_to_folder(synthetic, exported, "synthetic", repo_id=REPO_ID, options=options)

    hub.push_to_hub(synthetic, "math-prm", "synthetic", options=options, private=True)

    assert remote.tokens == [TOKEN]
    assert remote.created == (REPO_ID, {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert remote.checked == (REPO_ID, {"repo_type": "dataset", "write": True})
    (commit,) = remote.commits
    assert commit["message"] == "Upload config synthetic with prm-builder 0.1.0"
    assert commit["deleted"] == []
    assert remote.uploads == [
        "synthetic/train-00000-of-00001.parquet",
        "synthetic/test-00000-of-00001.parquet",
        "synthetic/distributions.png",
    ]
    on_disk = {str(p.relative_to(exported)): p.read_bytes() for p in exported.rglob("*") if p.is_file()}
    assert commit["added"] == on_disk
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_pushing_a_second_config_keeps_the_first_and_a_repush_replaces_its_shards(
    remote, test_data, tmp_path, frozen_date
):
    synthetic_options = builder_options("synthetic", test_data)
    prm800k_options = builder_options("prm800k", test_data)
    synthetic = build("synthetic", synthetic_options)
    prm800k = build("prm800k", prm800k_options)

    hub.push_to_hub(synthetic, REPO_ID, "synthetic", options=synthetic_options, max_shard_size=4000)
    old_shards = sorted(p for p in remote.files if p.startswith("synthetic/") and p.endswith(".parquet"))
    assert len(old_shards) > 2
    hub.push_to_hub(prm800k, REPO_ID, "prm800k", options=prm800k_options)
    assert sorted(remote.commits[1]["added"]) == [
        "README.md",
        "prm800k/distributions.png",
        "prm800k/train-00000-of-00001.parquet",
    ]
    assert remote.commits[1]["deleted"] == []

    hub.push_to_hub(synthetic, REPO_ID, "synthetic", options=synthetic_options, revision="main")
    assert sorted(remote.commits[2]["deleted"]) == old_shards
    assert "synthetic/train-00000-of-00001.parquet" in remote.commits[2]["added"]
    checkout = remote.checkout(tmp_path / "checkout")
    assert_same_rows(synthetic, load_dataset(str(checkout), name="synthetic"))
    assert_same_rows(prm800k, load_dataset(str(checkout), name="prm800k"))
    card = DatasetCard.load(checkout / "README.md")
    assert [c["config_name"] for c in card.data.configs] == ["prm800k", "synthetic"]


def test_a_commit_in_between_is_merged_not_overwritten(remote, tmp_path, frozen_date):
    hub.push_to_hub(small_dataset(), REPO_ID, "synthetic", options={"problems": "sample"})
    other_card = remote.files["README.md"].decode().replace("## Row format", "Added by a teammate.\n\n## Row format")
    remote.concurrent_commit = {"README.md": other_card.encode(), "notes.txt": b"keep me"}

    hub.push_to_hub(small_dataset(), REPO_ID, "synthetic", options={"problems": "sample", "seed": 1}, revision="dev")

    assert remote.branch == "dev"
    assert len(remote.commits) == 2 and remote.commits[1]["kwargs"]["revision"] == "dev"
    card = remote.files["README.md"].decode()
    assert "Added by a teammate." in card and "| `seed` | `1` |" in card
    assert remote.files["notes.txt"] == b"keep me"


def test_network_down_mid_upload_says_what_is_uploaded_and_how_to_resume(remote, tmp_path):
    remote.fail_upload_at = 1

    with pytest.raises(hub.PushError) as raised:
        hub.push_to_hub(small_dataset(), REPO_ID, "synthetic")

    message = str(raised.value)
    assert message.startswith(
        "could not reach the Hub while uploading synthetic/test-00000-of-00001.parquet (ConnectError:"
    )
    assert f"Nothing was committed: {REPO_ID} is unchanged" in message
    assert "Already uploaded, not yet committed: synthetic/train-00000-of-00001.parquet" in message
    assert "Not uploaded yet: synthetic/test-00000-of-00001.parquet, synthetic/distributions.png." in message
    assert "Run the same command again to resume." in message
    assert remote.commits == [] and remote.files == {}
    assert TOKEN not in message


def test_network_down_at_the_commit(remote):
    remote.fail_commit = True
    with pytest.raises(hub.PushError) as raised:
        hub.push_to_hub(small_dataset(), REPO_ID, "synthetic")

    assert str(raised.value).startswith("could not reach the Hub while committing (ReadTimeout:")
    assert f"the commit did not complete, so {REPO_ID} is unchanged" in str(raised.value)
    assert "Run the same command again: it sends no data file again and commits the config." in str(raised.value)
    assert len(remote.uploads) == 3 and remote.files == {}


def test_not_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(
        hub.PushError, match=r"not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN"
    ) as raised:
        hub.push_to_hub(small_dataset(), REPO_ID, "synthetic")
    assert "with export_dir=" in str(raised.value) and "--export-dir" not in str(raised.value)  # Python words


def test_offline_mode_is_explained(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # HF_HUB_OFFLINE=1 is set for every test by conftest
    with pytest.raises(hub.PushError, match="HF_HUB_OFFLINE is set, so nothing can be pushed while checking the token"):
        hub.push_to_hub(small_dataset(), REPO_ID, "synthetic")


# -- the Hub's answers, from a real HTTP server ---------------------------------------------------------------


class HubAnswers(http.server.BaseHTTPRequestHandler):
    """Answers the Hub's whoami / create-repo / write-check endpoints as the Hub does for a given token."""

    seen_authorization: list[str] = []

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self):
        self.seen_authorization.append(self.headers.get("Authorization", ""))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.path == "/api/whoami-v2":
            if token == "hf_expired":
                return self._json(401, {"error": "Invalid credentials in Authorization header"})
            return self._json(200, {"name": "me", "type": "user"})
        if self.path == "/api/repos/create":
            # The Hub's answer in a namespace the token cannot write to; huggingface_hub then looks the repo up.
            return self._json(403, {"error": "You don't have the rights to create a dataset under this namespace"})
        if self.path == "/api/datasets/someone-else/data":
            return self._json(200, {"id": "someone-else/data", "sha": "0" * 40, "private": False})
        if self.path.endswith("/auth-check/write"):
            return self._json(403, {"error": "You don't have the rights to write to this repo"})
        return self._json(404, {"error": "not found"})

    def _json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_server(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    HubAnswers.seen_authorization = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield server
    server.shutdown()
    server.server_close()


def test_expired_token(hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    with pytest.raises(
        hub.PushError, match=r"the Hub rejected the token \(from HF_TOKEN or `hf auth login`\) as invalid or expired"
    ) as raised:
        hub.push_to_hub(small_dataset(), REPO_ID, "synthetic")
    assert "hf_expired" not in str(raised.value)


def test_no_write_access(hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(
        hub.PushError, match=r"no write access to dataset repo 'someone-else/data' with the token of 'me'"
    ) as raised:
        hub.push_to_hub(small_dataset(), "someone-else/data", "synthetic")
    assert TOKEN not in str(raised.value)
    assert HubAnswers.seen_authorization[0] == f"Bearer {TOKEN}"  # the token came from HF_TOKEN


def test_hub_unreachable(monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(hub.PushError, match=r"could not reach the Hub while checking the token \(ConnectError"):
        hub.push_to_hub(small_dataset(), REPO_ID, "synthetic")


# -- the command line ----------------------------------------------------------------------------------------------


def test_cli_push_export_dir(gsm8k_dir, tmp_path, capsys):
    export_dir = tmp_path / "export"
    argv = ["push", "synthetic", "--problems", str(gsm8k_dir), "--max-examples", "12", "--repo-id", REPO_ID]
    assert cli_main([*argv, "--export-dir", str(export_dir)]) == 0

    out = capsys.readouterr().out
    assert f"wrote {export_dir / 'README.md'}" in out
    built = load_dataset("prm_builder", "synthetic", problems=str(gsm8k_dir), max_examples=12)
    assert_same_rows(built, load_dataset(str(export_dir), name="synthetic"))
    assert "| `max_examples` | `12` |" in (export_dir / "README.md").read_text()


def test_cli_push_fails_fast_without_token_or_with_a_bad_repo_id(
    gsm8k_dir, tmp_path, monkeypatch, capsys, isolated_hf_cache
):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    argv = ["push", "synthetic", "--problems", str(gsm8k_dir), "--max-examples", "12"]

    assert cli_main([*argv, "--repo-id", REPO_ID]) == 1
    err = capsys.readouterr().err
    assert "prm-builder: error: not logged in to the Hugging Face Hub" in err
    assert "with --export-dir" in err and "export_dir=" not in err  # command-line words
    assert cli_main([*argv, "--repo-id", "me/bad--name"]) == 1
    assert "prm-builder: error: repo id must be 'namespace/name' or 'name'" in capsys.readouterr().err
    assert not isolated_hf_cache.exists() or not any(isolated_hf_cache.rglob("*.arrow"))  # nothing was built


def test_cli_push_export_dir_needs_no_repo_id(gsm8k_dir, tmp_path, capsys):
    export_dir = tmp_path / "my-prm-data"
    argv = ["push", "synthetic", "--problems", str(gsm8k_dir), "--max-examples", "12"]
    assert cli_main([*argv, "--export-dir", str(export_dir)]) == 0
    card_text = (export_dir / "README.md").read_text()
    assert 'load_dataset("your-namespace/my-prm-data", "synthetic")' in card_text
    assert DatasetCard(card_text).data.pretty_name == "Process reward model data: synthetic"  # not the folder

    capsys.readouterr()
    assert cli_main(argv) == 1
    assert capsys.readouterr().err == (
        "prm-builder: error: push needs --repo-id (the Hub dataset repo), or --export-dir to write the files to a folder\n"
    )


# -- atomic export ------------------------------------------------------------------------------------------------


def exported_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "failure", [RuntimeError("injected"), OSError(28, "No space left on device")], ids=["error", "disk-full"]
)
def test_a_failed_export_leaves_the_previous_one_loadable(failure, tmp_path, monkeypatch, frozen_date):
    export_dir = tmp_path / "out" / "export"
    first = small_dataset()
    hub.export_to_folder(first, export_dir, "synthetic", repo_id=REPO_ID, options={"problems": "sample"})
    before = exported_files(export_dir)

    # The second export dies after its first Parquet shard is written, before the plot and the card.
    written = []
    real_to_parquet = type(first["train"]).to_parquet

    def to_parquet_then_fail(self, path, *args, **kwargs):
        if written:
            raise failure
        written.append(path)
        return real_to_parquet(self, path, *args, **kwargs)

    monkeypatch.setattr(type(first["train"]), "to_parquet", to_parquet_then_fail)
    second = small_dataset().map(lambda row: {"prompt": row["prompt"] + " (v2)"})
    with pytest.raises(type(failure)):
        hub.export_to_folder(second, export_dir, "synthetic", repo_id=REPO_ID, options={"problems": "sample", "seed": 1})

    assert written and not written[0].startswith(str(export_dir) + "/")  # it wrote beside the export, not into it
    assert exported_files(export_dir) == before
    assert [p.name for p in export_dir.parent.iterdir()] == ["export"]  # the unfinished export was removed
    assert_same_rows(first, load_dataset(str(export_dir), name="synthetic"))


def test_an_export_interrupted_mid_swap_is_put_back_by_the_next(test_data, tmp_path, frozen_date):
    export_dir = tmp_path / "out" / "export"
    hub.export_to_folder(small_dataset(), export_dir, "synthetic", repo_id=REPO_ID)
    # What a crash between the swap's two renames leaves: the old export hidden, the new one unfinished.
    export_dir.rename(export_dir.with_name(f".export{hub.STAGING_MARK}old-0123"))
    export_dir.with_name(f".export{hub.STAGING_MARK}new-4567").mkdir()

    prm800k = build("prm800k", builder_options("prm800k", test_data))
    hub.export_to_folder(prm800k, export_dir, "prm800k", repo_id=REPO_ID)

    assert [p.name for p in export_dir.parent.iterdir()] == ["export"]
    assert_same_rows(small_dataset(), load_dataset(str(export_dir), name="synthetic"))
    assert_same_rows(prm800k, load_dataset(str(export_dir), name="prm800k"))


def test_two_exports_into_one_folder_at_once_keep_both_configs(test_data, tmp_path, frozen_date):
    prm800k = build("prm800k", builder_options("prm800k", test_data))
    synthetic = small_dataset()
    export_dir = tmp_path / "out" / "export"
    jobs = [(synthetic, "synthetic"), (prm800k, "prm800k")]
    errors = []

    def export(dataset, config):
        try:
            hub.export_to_folder(dataset, export_dir, config, repo_id=REPO_ID)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=export, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert [p.name for p in export_dir.parent.iterdir()] == ["export"]
    assert_same_rows(synthetic, load_dataset(str(export_dir), name="synthetic"))
    assert_same_rows(prm800k, load_dataset(str(export_dir), name="prm800k"))


def test_an_export_over_a_file_is_refused(tmp_path):
    (tmp_path / "export").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="export_dir .* is a file, not a folder"):
        hub.export_to_folder(small_dataset(), tmp_path / "export", "synthetic")
    assert (tmp_path / "export").read_text() == "not a folder"


# -- nothing private leaves the machine ---------------------------------------------------------------------------


def test_no_password_token_or_local_path_reaches_the_export(tmp_path, monkeypatch, capsys, caplog):
    from tests.openai_stub_server import StubServer

    problems = tmp_path / "home" / "alice" / "gsm8k"
    problems.mkdir(parents=True)
    (problems / "test.jsonl").write_text(
        json.dumps({"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"})
        + "\n"
    )
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-server-key-123456")

    def answers(request):
        return ["Ann has 2 + 3 = 5 apples.\n\nThe answer is \\boxed{5}."] * request.n

    export_dir = tmp_path / "export"
    with StubServer(answers) as server:
        base_url = server.url.replace("http://", "http://alice:pAsSw0rd@")
        argv = [
            "push", "model_sampled", "--model", "stub-org/math-model", "--backend", "openai", "--base-url", base_url,
            "--problems", str(problems), "--num-samples-per-problem", "2", "--mc-rollouts", "2",
            "--generation-cache-dir", str(tmp_path / "generations"), "--export-dir", str(export_dir),
        ]  # fmt: skip
        assert cli_main(argv) == 0
        assert server.count() > 0

    secrets = [b"pAsSw0rd", b"alice:", TOKEN.encode(), b"sk-local-server-key-123456", str(tmp_path).encode()]
    for path, content in exported_files(export_dir).items():
        for secret in secrets:
            assert secret not in content, (path, secret)
    section = section_of((export_dir / "README.md").read_text(), "model_sampled")
    assert "| `problems` | `<local>/gsm8k` |" in section and "| `generation_cache_dir` | `<local>/generations` |" in section
    assert "http://<redacted>@127.0.0.1:" in section
    printed = capsys.readouterr()
    for secret in secrets[:4]:
        assert secret.decode() not in printed.out + printed.err + caplog.text
