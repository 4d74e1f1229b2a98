"""Hub ids resolve through a real local Hugging Face cache, and fail with a message that says what to do.

The caches are laid out with hub_cache.install_snapshot (the layout huggingface_hub
writes), holding the real SmolLM2; huggingface_hub itself reads them. "Online" here
means an endpoint on a closed loopback port: the hub cannot be reached.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.hub_server import GATED_MODEL, GATED_MODEL_COMMIT, SERVED_MODEL, SERVED_MODEL_COMMIT
from worker.training.arguments import ConfigError
from worker.training.hub import hub_snapshot
from worker.training.hub_cache import install_snapshot, repo_folder
from worker.training.model_sources import resolve_model

REPO = "acme/smol-chat"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


@pytest.fixture
def offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_cached_model_resolves_offline_and_loads(private_hf_cache, offline, smollm2):
    from transformers import AutoConfig, AutoTokenizer

    install_snapshot(smollm2, private_hf_cache, REPO, COMMIT_A)
    path = Path(resolve_model(REPO, Path("unused")))
    assert path == repo_folder(private_hf_cache, REPO) / "snapshots" / COMMIT_A
    assert AutoConfig.from_pretrained(path).hidden_size == 576
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.decode(tokenizer("The opposite of hot")["input_ids"]) == "The opposite of hot"


def test_a_second_revision_is_chosen_by_its_commit(private_hf_cache, offline, smollm2, tmp_path):
    install_snapshot(smollm2, private_hf_cache, REPO, COMMIT_A)
    changed = tmp_path / "changed"
    shutil.copytree(smollm2, changed, symlinks=False)
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))
    install_snapshot(changed, private_hf_cache, REPO, COMMIT_B, ref=None)  # not where main points

    main = hub_snapshot(REPO)
    pinned = hub_snapshot(REPO, revision=COMMIT_B)
    assert json.loads((main / "config.json").read_text())["max_position_embeddings"] == 8192
    assert json.loads((pinned / "config.json").read_text())["max_position_embeddings"] == 4096
    # The weights are one blob shared by both revisions, as the hub's cache stores them.
    assert (main / "model.safetensors").resolve() == (pinned / "model.safetensors").resolve()


def test_an_interrupted_download_is_named_as_such(private_hf_cache, offline, smollm2):
    snapshot = install_snapshot(smollm2, private_hf_cache, REPO, COMMIT_A)
    blob = (snapshot / "model.safetensors").resolve()
    (snapshot / "model.safetensors").unlink()
    blob.rename(blob.with_name(blob.name + ".incomplete"))  # what the hub leaves when cut off

    with pytest.raises(ConfigError) as raised:
        resolve_model(REPO, Path("unused"))
    assert raised.value.param == "model_name"
    assert "incomplete (missing *.safetensors weights)" in str(raised.value)
    assert "interrupted download" in str(raised.value)


def test_not_cached_while_offline_says_so(private_hf_cache, offline):
    with pytest.raises(ConfigError) as raised:
        resolve_model("acme/never-downloaded", Path("unused"))
    assert "'acme/never-downloaded' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in str(
        raised.value
    )


def test_unreachable_hub_uses_the_cache_or_fails_fast(private_hf_cache, smollm2):
    install_snapshot(smollm2, private_hf_cache, REPO, COMMIT_A)
    started = time.monotonic()
    assert hub_snapshot(REPO) == repo_folder(private_hf_cache, REPO) / "snapshots" / COMMIT_A
    with pytest.raises(ConfigError) as raised:
        hub_snapshot("acme/never-downloaded")
    assert time.monotonic() - started < 10
    assert "is not in the local Hugging Face cache and the hub cannot be reached" in str(raised.value)


def test_a_dataset_id_resolves_from_the_cache_too(private_hf_cache, offline, tmp_path):
    from worker.training.data import load_records

    files = tmp_path / "dataset"
    files.mkdir()
    (files / "train.jsonl").write_text(
        json.dumps({"text": "<s>[INST] Say hi [/INST] Hi! </s>"})
        + "\n"
        + json.dumps({"text": "<s>[INST] Say bye [/INST] Bye! </s>"})
        + "\n"
    )
    install_snapshot(files, private_hf_cache, "acme/tiny-guanaco", COMMIT_A, repo_type="dataset")
    records, summary = load_records("acme/tiny-guanaco")
    assert summary.format == "text"
    assert [record["text"] for record in records][1] == "<s>[INST] Say bye [/INST] Bye! </s>"


# --- online: a hub on loopback, the real huggingface_hub downloading from it ------------


@pytest.fixture
def frequent_progress(monkeypatch) -> None:
    """Progress lines every 0.2 s: a download from loopback_hub reports some while it lasts."""
    monkeypatch.setattr("worker.training.hub.PROGRESS_EVERY_S", 0.2)


def test_an_online_download_reports_its_progress_then_works_offline(
    loopback_hub, frequent_progress, private_hf_cache, monkeypatch
):
    from huggingface_hub import constants

    said: list[str] = []
    path = hub_snapshot(SERVED_MODEL, progress=said.append)
    assert path == repo_folder(private_hf_cache, SERVED_MODEL) / "snapshots" / SERVED_MODEL_COMMIT
    assert (path / "model.safetensors").stat().st_size > 1_000_000
    assert said[0].startswith(f"downloading {SERVED_MODEL}: ") and " files, " in said[0]
    assert any(" of " in line and "MB/s" in line for line in said[1:-1]), said  # bytes done of total, speed
    assert said[-1].startswith(f"downloaded {SERVED_MODEL}: ")

    # Cached now: no second download, and it resolves with the hub gone.
    again: list[str] = []
    assert hub_snapshot(SERVED_MODEL, progress=again.append) == path and again == []
    loopback_hub.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_snapshot(SERVED_MODEL) == path


def test_hub_answers_become_clear_errors(loopback_hub):
    with pytest.raises(ConfigError) as unknown:
        hub_snapshot("acme/no-such-model")
    assert "no model 'acme/no-such-model' on the hub" in str(unknown.value)
    with pytest.raises(ConfigError) as gated:
        hub_snapshot(GATED_MODEL)
    assert f"'{GATED_MODEL}' is gated" in str(gated.value) and "LORABOARD_HF_TOKEN" in str(gated.value)
    assert hub_snapshot(GATED_MODEL, token="hf_test").name == GATED_MODEL_COMMIT  # with a token it downloads


def test_not_enough_disk_is_said_before_downloading(loopback_hub, private_hf_cache, monkeypatch):
    import shutil as shell

    free = shell.disk_usage(private_hf_cache.parent).free
    monkeypatch.setattr("worker.training.hub.DISK_MARGIN_BYTES", free)  # leave less room than the files need
    with pytest.raises(ConfigError) as raised:
        hub_snapshot(SERVED_MODEL)
    assert f"not enough disk for '{SERVED_MODEL}'" in str(raised.value)
    assert not (repo_folder(private_hf_cache, SERVED_MODEL) / "snapshots").exists()
