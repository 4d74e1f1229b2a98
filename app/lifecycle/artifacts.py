"""Where a run's files live, and how they leave as one zip.

Layout under LORABOARD_DATA_DIR/artifacts/<run id>/:
  adapter/                    the final adapter, tokenizer, run_config.json, metrics.jsonl
  checkpoints/checkpoint-N/   each checkpoint, loadable on its own
Server and workers must see the same directory (one machine, or a shared volume).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from app.config import get_settings


def run_dir(run_id: str) -> Path:
    return get_settings().artifacts_dir / run_id


def adapter_dir(run_id: str) -> Path:
    return run_dir(run_id) / "adapter"


def checkpoints_dir(run_id: str) -> Path:
    return run_dir(run_id) / "checkpoints"


def checkpoint_dir(run_id: str, step: int) -> Path:
    return checkpoints_dir(run_id) / f"checkpoint-{step}"


# Trainer state that makes a checkpoint resumable but is of no use to someone
# downloading an adapter (optimizer moments are twice the adapter's size).
_RESUME_ONLY = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"}


def zip_directory(directory: Path, root_name: str, *, include_resume_state: bool = False) -> Path:
    """Zip a directory into a temporary file (deleted by the caller after sending)."""
    descriptor, name = tempfile.mkstemp(prefix="loraboard-", suffix=".zip")
    os.close(descriptor)
    archive = Path(name)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and (include_resume_state or path.name not in _RESUME_ONLY):
                zf.write(path, f"{root_name}/{path.relative_to(directory)}")
    return archive
