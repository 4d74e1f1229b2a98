"""Hub ids resolved the way users load them: through huggingface_hub's cache.

Online, snapshot_download fetches what the cache lacks (the run's events show the
bytes done of the total and the speed) after a dry run has checked the disk. With
HF_HUB_OFFLINE=1, or when the hub cannot be reached, the cached snapshot of the
revision is used. Every way this can fail ends in a ConfigError that says what to
do: unknown or private repo, gated without a token, not cached while offline, an
interrupted download, not enough disk.

The trainer and the chat worker then load from the returned local directory, so
transformers never goes to the network on its own (no retries, no hidden waits).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.training.arguments import ConfigError
from worker.training.hub_cache import repo_folder

Progress = Callable[[str], None]

# What a causal LM needs: config, tokenizer files, safetensors weights (never *.bin
# pickles, never remote code).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
DISK_MARGIN_BYTES = 1 << 30  # keep a gigabyte free beside the download
PROGRESS_EVERY_S = 5.0


def hub_snapshot(
    repo_id: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    token: str | None = None,
    param: str = "model_name",
    progress: Progress | None = None,
) -> Path:
    """The local snapshot directory of repo_id, downloaded first when online and not cached."""
    from huggingface_hub import constants, snapshot_download

    patterns = MODEL_FILES if repo_type == "model" else None
    common: dict[str, Any] = {
        "repo_type": repo_type,
        "revision": revision,
        "token": token,
        "allow_patterns": patterns,
    }
    if not constants.HF_HUB_OFFLINE:
        try:
            plan = snapshot_download(repo_id, dry_run=True, **common)
        except Exception as error:
            _raise_if_definitive(error, repo_id, repo_type, revision, param)
        else:
            missing = [item for item in plan if item.will_download]
            if missing:
                _download(repo_id, missing, common, param, progress)
    try:
        path = Path(snapshot_download(repo_id, local_files_only=True, **common))
    except Exception as error:
        where = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        raise ConfigError(
            param,
            f"'{repo_id}'{_at(revision)} is not in the local Hugging Face cache and {where}: download it on "
            "a machine with network access (huggingface-cli download) into this cache, or use a local "
            "directory",
        ) from error
    if repo_type == "model":
        _check_complete(path, repo_id, param)
    return path


def _download(
    repo_id: str, missing: list[Any], common: dict[str, Any], param: str, progress: Progress | None
) -> None:
    from huggingface_hub import constants, snapshot_download

    total = sum(item.file_size for item in missing)
    cache = Path(constants.HF_HUB_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if total + DISK_MARGIN_BYTES > free:
        raise ConfigError(
            param,
            f"not enough disk for '{repo_id}': it needs {_gb(total)} and the Hugging Face cache has "
            f"{_gb(free)} free (a {_gb(DISK_MARGIN_BYTES)} margin kept)",
        )
    say = progress or (lambda _message: None)
    say(f"downloading {repo_id}: {len(missing)} files, {_gb(total)}")
    watcher = _DownloadWatcher(repo_folder(cache, repo_id, common["repo_type"]), total, repo_id, say)
    watcher.start()
    try:
        snapshot_download(repo_id, **common)
    except Exception as error:
        _raise_if_definitive(error, repo_id, common["repo_type"], common["revision"], param)
        raise ConfigError(param, f"downloading '{repo_id}' failed: {error}") from error
    finally:
        watcher.stop()
    say(f"downloaded {repo_id}: {_gb(total)} in {watcher.elapsed():.0f} s")


class _DownloadWatcher(threading.Thread):
    """Reports bytes done of the total and the speed, read off the repo folder's growth on disk
    (the hub writes each file as blobs/<etag>.incomplete first), whatever transfer backend runs."""

    def __init__(self, folder: Path, total: int, repo_id: str, say: Progress):
        super().__init__(name="hub-download-progress", daemon=True)
        self.folder, self.total, self.repo_id, self.say = folder, total, repo_id, say
        self.started = time.monotonic()
        self.baseline = _bytes_under(folder)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(PROGRESS_EVERY_S):
            done = min(max(_bytes_under(self.folder) - self.baseline, 0), self.total)
            speed = done / max(self.elapsed(), 1e-9)
            self.say(f"downloading {self.repo_id}: {_gb(done)} of {_gb(self.total)}, {speed / 1e6:.1f} MB/s")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        self._stop_event.set()


def _bytes_under(folder: Path) -> int:
    total = 0
    if not folder.exists():
        return 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:  # a file renamed or removed while we walked
            continue
    return total


def _raise_if_definitive(
    error: Exception, repo_id: str, repo_type: str, revision: str | None, param: str
) -> None:
    """Raise a ConfigError for the hub's definite answers; return for network trouble (use the cache)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    # A dry run wraps the hub's answer in DryRunError: the answer is its cause.
    cause = error.__cause__
    if isinstance(cause, Exception) and not isinstance(error, (GatedRepoError, RepositoryNotFoundError)):
        error = cause
    if isinstance(error, GatedRepoError):
        raise ConfigError(
            param,
            f"'{repo_id}' is gated: accept its terms on the hub, then give this server a token that may "
            "read it (LORABOARD_HF_TOKEN or HF_TOKEN)",
        ) from error
    if isinstance(error, RevisionNotFoundError):
        raise ConfigError(param, f"'{repo_id}' has no revision '{revision}' on the hub") from error
    if isinstance(error, RepositoryNotFoundError):
        kind = "dataset" if repo_type == "dataset" else "model"
        raise ConfigError(
            param,
            f"no {kind} '{repo_id}' on the hub (or it is private: set LORABOARD_HF_TOKEN to a token "
            "that may read it)",
        ) from error


def _check_complete(path: Path, repo_id: str, param: str) -> None:
    """An interrupted download leaves a snapshot without its config or weights: say so."""
    weights = list(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    missing = []
    if not (path / "config.json").exists():
        missing.append("config.json")
    if not weights:
        missing.append("*.safetensors weights")
    elif index.exists():
        import json

        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing += sorted(shard for shard in shards if not (path / shard).exists())
    if missing:
        raise ConfigError(
            param,
            f"the cached copy of '{repo_id}' is incomplete (missing {', '.join(missing)}): an interrupted "
            "download? Connect to the hub and run again to finish it, or delete it from the cache",
        )


def _at(revision: str | None) -> str:
    return f" at revision '{revision}'" if revision else ""


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
