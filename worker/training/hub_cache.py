"""Writing a model directory into the Hugging Face cache, laid out as huggingface_hub lays it.

    <cache>/models--<org>--<name>/blobs/<sha256>           the files' bytes
    <cache>/models--<org>--<name>/snapshots/<commit>/<file> links to ../../blobs/<sha256>
    <cache>/models--<org>--<name>/refs/<branch>             the commit the branch points at

A model placed this way resolves like any downloaded one (from_pretrained(repo_id),
snapshot_download(local_files_only=True), HF_HUB_OFFLINE=1). The snapshot is
written under a temporary name and renamed into place, and the ref is written
last, so a reader never sees half a snapshot under the ref.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def repo_folder(cache_dir: Path, repo_id: str, repo_type: str = "model") -> Path:
    return Path(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def install_snapshot(
    source: Path,
    cache_dir: Path,
    repo_id: str,
    commit: str,
    *,
    ref: str | None = "main",
    repo_type: str = "model",
) -> Path:
    """Copy every file of source into the cache as snapshot `commit` of repo_id; point ref at it."""
    repo = repo_folder(cache_dir, repo_id, repo_type)
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    staging = repo / "snapshots" / f".{commit}.{os.getpid()}.incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        digest = _sha256(path)
        blob = blobs / digest
        if not blob.exists():
            partial = blobs / f"{digest}.{os.getpid()}.incomplete"
            shutil.copyfile(path, partial)
            partial.replace(blob)
        link = staging / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if snapshot.exists():
        shutil.rmtree(staging)
    else:
        staging.replace(snapshot)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
