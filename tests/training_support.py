"""Shared helpers for the training tests: the demo model built once per session, small datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models directory with the demo model built in it (once per test session)."""
    from worker.training.demo_model import ensure_demo_model

    directory = tmp_path_factory.mktemp("models")
    ensure_demo_model(directory)
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
