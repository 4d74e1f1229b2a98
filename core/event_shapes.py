"""The data of the events a worker records, in the shape the API and the live pages read back.

A 'metrics' event carries OpenAI's names (train_loss, valid_loss, ...) plus what Loraboard
tracks; the worker writes it, the job's events endpoint and the dashboard read it as is.
"""

from __future__ import annotations

from typing import Any, Protocol


class MetricRow(Protocol):
    """The measured values of one logging step (app/models.py's Metric has them all)."""

    step: int
    epoch: float | None
    loss: float | None
    eval_loss: float | None
    mean_token_accuracy: float | None
    eval_mean_token_accuracy: float | None
    learning_rate: float | None
    grad_norm: float | None
    tokens_per_second: float | None
    tokens_seen: int | None
    gpu_memory_allocated_mb: float | None
    gpu_memory_reserved_mb: float | None


def metric_event_data(metric: MetricRow, total_steps: int | None) -> dict[str, Any]:
    """The data of a 'metrics' event (OpenAI's train_loss/valid_loss names, plus what Loraboard tracks)."""
    values = {
        "step": metric.step,
        "total_steps": total_steps,
        "epoch": metric.epoch,
        "train_loss": metric.loss,
        "valid_loss": metric.eval_loss,
        "train_mean_token_accuracy": metric.mean_token_accuracy,
        "valid_mean_token_accuracy": metric.eval_mean_token_accuracy,
        "learning_rate": metric.learning_rate,
        "grad_norm": metric.grad_norm,
        "tokens_per_second": metric.tokens_per_second,
        "tokens_seen": metric.tokens_seen,
        "gpu_memory_allocated_mb": metric.gpu_memory_allocated_mb,
        "gpu_memory_reserved_mb": metric.gpu_memory_reserved_mb,
    }
    return {key: value for key, value in values.items() if value is not None}


# The phases before a run's first step, as the worker times them into runtime["timings"]
# (worker/training/run_timings.py) and the run page lists them: key (seconds) -> label.
STARTUP_PHASES: tuple[tuple[str, str], ...] = (
    ("model_files_s", "model files"),
    ("data_s", "data"),
    ("model_load_s", "loading the model"),
    ("trainer_s", "tokenizing"),
)
