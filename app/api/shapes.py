"""Database rows -> the typed bodies of app/api/schemas.py (OpenAI's objects, plus a `loraboard` block).

The official `openai` client parses these into its own types, so field names, types and
enums follow OpenAI's spec; Loraboard's finer states and extras sit in the `loraboard` block.
"""

from __future__ import annotations

from typing import Any

from app.api import schemas
from app.lifecycle import model_names
from app.models import Checkpoint, DataFile, Event, Run, RunStatus
from app.services import runs
from app.services.integrations import job_integrations
from app.services.job_requests import auto_learning_rate

# OpenAI's job states are fewer than Loraboard's: a job asked to pause or cancel is still
# running until its next step; a paused one has stopped and waits, like a cancelled one
# (which Loraboard can resume too).
PUBLIC_STATUS = {
    RunStatus.pausing: "running",
    RunStatus.cancelling: "running",
    RunStatus.paused: "cancelled",
}
# Event levels as the spec spells them (the worker's messages say "warning").
PUBLIC_LEVEL = {"warning": "warn"}
N_EPOCHS_RANGE = (1, 50)
BATCH_SIZE_RANGE = (1, 256)


def public_status(status: str) -> str:
    return PUBLIC_STATUS.get(RunStatus(status), status)


def file_object(record: DataFile) -> schemas.FileObject:
    return schemas.FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=runs.timestamp(record.created_at) or 0,
        filename=record.filename,
        purpose=record.purpose,
        status=record.status,  # type: ignore[arg-type]  # stored as one of the three
        loraboard=schemas.FileExtras(format=record.format, num_samples=record.num_samples),
    )


def file_list(records: list[DataFile], has_more: bool) -> schemas.FileList:
    return schemas.FileList(
        data=[file_object(record) for record in records],
        first_id=records[0].id if records else "",
        last_id=records[-1].id if records else "",
        has_more=has_more,
    )


def _in_range(value: Any, bounds: tuple[int, int]) -> int | str:
    """An integral value within OpenAI's bounds, else 'auto' (the exact value is in loraboard.config)."""
    if isinstance(value, int | float) and float(value).is_integer() and bounds[0] <= value <= bounds[1]:
        return int(value)
    return "auto"


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    epochs = config["num_train_epochs"] if config.get("max_steps", -1) <= 0 else None
    return {
        "n_epochs": _in_range(epochs, N_EPOCHS_RANGE),
        "batch_size": _in_range(config["per_device_train_batch_size"], BATCH_SIZE_RANGE),
        "learning_rate_multiplier": config["learning_rate"] / auto_learning_rate(config["model_name"]),
    }


def job_object(run: Run) -> schemas.FineTuningJob:
    config = run.config
    error = None
    if run.error_message:
        error = schemas.JobError(
            code=run.error_code or "training_error", message=run.error_message, param=run.error_param
        )
    openai_values = hyperparameters(config)
    return schemas.FineTuningJob(
        id=run.id,
        created_at=runs.timestamp(run.created_at) or 0,
        error=error,
        fine_tuned_model=run.fine_tuned_model,
        finished_at=runs.timestamp(run.finished_at),
        hyperparameters=schemas.Hyperparameters(**openai_values),
        model=config["model_name"],
        organization_id="loraboard",
        result_files=run.runtime.get("result_files", []),
        seed=config["seed"],
        status=public_status(run.status),  # type: ignore[arg-type]
        trained_tokens=run.trained_tokens or None,
        training_file=config["dataset"],
        validation_file=config.get("validation_dataset"),
        estimated_finish=runs.estimated_finish(run),
        integrations=job_integrations(config),
        metadata=run.user_metadata or None,
        user_provided_suffix=run.suffix,
        method=schemas.Method(
            supervised=schemas.SupervisedMethod(
                hyperparameters=schemas.SupervisedHyperparameters(**{**config, **openai_values})
            )
        ),
        loraboard=schemas.JobExtras(
            status=run.status,
            config=config,
            derived=run.derived,
            runtime=run.runtime,
            current_step=run.current_step,
            total_steps=run.total_steps,
            progress=schemas.JobProgress(**runs.progress(run)),
            started_at=runs.timestamp(run.started_at),
            worker=run.worker,
            attempts=run.attempts,
        ),
    )


def event_object(event: Event) -> schemas.JobEvent:
    return schemas.JobEvent(
        id=f"ftevent-{event.id}",
        created_at=runs.timestamp(event.created_at) or 0,
        level=PUBLIC_LEVEL.get(event.level, event.level),  # type: ignore[arg-type]
        message=event.message,
        data=event.data or {},
        type=event.type,  # type: ignore[arg-type]
    )


def checkpoint_object(run: Run, checkpoint: Checkpoint) -> schemas.Checkpoint:
    metrics = {key: value for key, value in checkpoint.metrics.items() if value is not None}
    metrics.setdefault("step", checkpoint.step)
    return schemas.Checkpoint(
        id=checkpoint.id,
        created_at=runs.timestamp(checkpoint.created_at) or 0,
        fine_tuned_model_checkpoint=model_names.checkpoint_model_name(run, checkpoint.step),
        fine_tuning_job_id=run.id,
        metrics=schemas.CheckpointMetrics(**metrics),
        step_number=checkpoint.step,
    )


def checkpoint_list(run: Run, checkpoints: list[Checkpoint], has_more: bool) -> schemas.CheckpointList:
    return schemas.CheckpointList(
        data=[checkpoint_object(run, checkpoint) for checkpoint in checkpoints],
        first_id=checkpoints[0].id if checkpoints else None,
        last_id=checkpoints[-1].id if checkpoints else None,
        has_more=has_more,
    )
