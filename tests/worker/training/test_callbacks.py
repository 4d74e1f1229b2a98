"""The reporter callback: a non-finite loss or gradient ends training with a hint."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from worker.training.callbacks import ReporterCallback
from worker.training.reporting import MemoryReporter, TrainingDiverged


@pytest.mark.parametrize("logs", [{"loss": math.nan}, {"loss": 2.0, "grad_norm": math.inf}])
def test_a_non_finite_loss_or_gradient_ends_training_with_a_hint(tmp_path: Path, logs: dict) -> None:
    reporter = MemoryReporter()
    callback = ReporterCallback(reporter, tmp_path / "metrics.jsonl")
    state = SimpleNamespace(global_step=5, epoch=0.5, num_input_tokens_seen=100, max_steps=10)
    with pytest.raises(TrainingDiverged, match="at step 5.*Lower the learning rate.*float32"):
        callback.on_log(SimpleNamespace(), state, SimpleNamespace(), logs={"learning_rate": 1e-3, **logs})
    assert reporter.metric_rows == []  # nothing non-finite reaches the database
