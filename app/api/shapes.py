"""The public JSON shapes of the /v1 API: OpenAI's objects, plus a `loraboard` block of extras.

The official `openai` client parses these into its own types, so field names and
types follow OpenAI's fine-tuning API; everything Loraboard adds sits in extra keys
that the client keeps as attributes.
"""

from __future__ import annotations

from typing import Any

from app.models import Checkpoint, DataFile, Event, Metric, Run
from app.services import runs
from app.services.job_requests import CLASSIC_LEARNING_RATE


def file_object(record: DataFile) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": runs.timestamp(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": record.status,
        "status_details": None,
        "loraboard": {"format": record.format, "num_samples": record.num_samples},
    }


def job_object(run: Run) -> dict[str, Any]:
    config = run.config
    error = None
    if run.error_message:
        error = {"code": run.error_code, "message": run.error_message, "param": run.error_param}
    hyperparameters = {
        "n_epochs": config["num_train_epochs"],
        "batch_size": config["per_device_train_batch_size"],
        "learning_rate_multiplier": config["learning_rate"] / CLASSIC_LEARNING_RATE,
    }
    return {
        "id": run.id,
        "object": "fine_tuning.job",
        "created_at": runs.timestamp(run.created_at),
        "error": error,
        "fine_tuned_model": run.fine_tuned_model,
        "finished_at": runs.timestamp(run.finished_at),
        "hyperparameters": hyperparameters,
        "model": config["model_name"],
        "organization_id": "loraboard",
        "result_files": run.runtime.get("result_files", []),
        "seed": config["seed"],
        "status": run.status,
        "trained_tokens": run.trained_tokens or None,
        "training_file": config["dataset"],
        "validation_file": config.get("validation_dataset"),
        "estimated_finish": runs.estimated_finish(run),
        "integrations": [],
        "metadata": run.user_metadata or None,
        "user_provided_suffix": run.suffix,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {**hyperparameters, **config}}},
        "loraboard": {
            "config": config,
            "derived": run.derived,
            "runtime": run.runtime,
            "current_step": run.current_step,
            "total_steps": run.total_steps,
            "progress": runs.progress(run),
            "started_at": runs.timestamp(run.started_at),
            "worker": run.worker,
            "attempts": run.attempts,
        },
    }


def event_object(event: Event) -> dict[str, Any]:
    return {
        "id": f"ftevent-{event.id}",
        "object": "fine_tuning.job.event",
        "created_at": runs.timestamp(event.created_at),
        "level": event.level,
        "message": event.message,
        "data": event.data,
        "type": event.type,
    }


def metric_event_data(metric: Metric, total_steps: int | None) -> dict[str, Any]:
    """The data of a 'metrics' event (OpenAI's train_loss/valid_loss names, plus what Loraboard tracks)."""
    values = {
        "step": metric.step,
        "total_steps": total_steps,
        "epoch": metric.epoch,
        "train_loss": metric.loss,
        "valid_loss": metric.eval_loss,
        "learning_rate": metric.learning_rate,
        "grad_norm": metric.grad_norm,
        "tokens_per_second": metric.tokens_per_second,
        "tokens_seen": metric.tokens_seen,
        "gpu_memory_allocated_mb": metric.gpu_memory_allocated_mb,
        "gpu_memory_reserved_mb": metric.gpu_memory_reserved_mb,
    }
    return {key: value for key, value in values.items() if value is not None}


def checkpoint_object(run: Run, checkpoint: Checkpoint) -> dict[str, Any]:
    metrics = dict(checkpoint.metrics)
    metrics.setdefault("step", checkpoint.step)
    return {
        "id": checkpoint.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": runs.timestamp(checkpoint.created_at),
        "fine_tuned_model_checkpoint": runs.checkpoint_model_name(run, checkpoint.step),
        "fine_tuning_job_id": run.id,
        "metrics": metrics,
        "step_number": checkpoint.step,
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
