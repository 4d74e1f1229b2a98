"""SQLModel tables. The schema itself is made only by Alembic (migrations/).

The database is the truth about a run: its config, its state, what it measured,
what it saved. The broker only carries work.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """OpenAI-style ids: 'ftjob-…', 'file-…', 'ftckpt-…'."""
    return f"{prefix}-{secrets.token_hex(12)}"


def _timestamp(*, nullable: bool, index: bool = False) -> Any:
    """A timezone-aware timestamp; the required ones default to now."""
    column = Column(DateTime(timezone=True), nullable=nullable, index=index)
    if nullable:
        return Field(default=None, sa_column=column)
    return Field(default_factory=utcnow, sa_column=column)


class RunStatus(StrEnum):
    queued = "queued"
    validating_files = "validating_files"  # a worker took it: checking the data, building the model
    running = "running"
    cancelling = "cancelling"  # cancel asked; the worker stops at the next step
    pausing = "pausing"  # pause asked; the worker saves a checkpoint at the next step and stops
    paused = "paused"  # stopped with a checkpoint; resume re-queues it
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: str = Field(default_factory=lambda: new_id("ftjob"), primary_key=True, max_length=64)
    created_at: datetime = _timestamp(nullable=False, index=True)
    started_at: datetime | None = _timestamp(nullable=True)
    finished_at: datetime | None = _timestamp(nullable=True)
    heartbeat_at: datetime | None = _timestamp(nullable=True)
    status: str = Field(default=RunStatus.queued.value, max_length=16, index=True)
    owner: str | None = Field(default=None, max_length=64, index=True)  # ApiKey.user; None: admin-only
    # The validated RunConfig (core/run_config.py) as JSON: the one source of truth.
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # Values derived from the config and the data (effective batch, total steps, ...).
    derived: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # What the worker actually used (device, dtypes, mapped arguments, library versions).
    runtime: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    user_metadata: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    suffix: str | None = Field(default=None, max_length=64)
    fine_tuned_model: str | None = Field(default=None, max_length=300)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error_param: str | None = Field(default=None, max_length=64)
    worker: str | None = Field(default=None, max_length=200)
    task_id: str | None = Field(default=None, max_length=64)
    attempts: int = Field(default=0)
    current_step: int = Field(default=0)
    total_steps: int | None = Field(default=None)
    trained_tokens: int = Field(default=0)
    # Step timing of the current attempt, for the ETA: the first and the latest logged step.
    # Measured between logs, so model loading and data preparation don't inflate it.
    first_logged_step: int | None = Field(default=None)
    first_logged_at: datetime | None = _timestamp(nullable=True)
    last_logged_at: datetime | None = _timestamp(nullable=True)
    # The worker's own estimate of the training time left, and when it was made: it knows
    # each step's time and tokens and the tokens still to train (worker/training/eta.py).
    eta_seconds: float | None = Field(default=None)
    eta_at: datetime | None = _timestamp(nullable=True)

    @property
    def run_status(self) -> RunStatus:
        return RunStatus(self.status)


class Metric(SQLModel, table=True):
    """One logging step or one evaluation of a run; ids grow in insertion order (SSE event ids)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_step", "run_id", "step"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", max_length=64, ondelete="CASCADE")
    created_at: datetime = _timestamp(nullable=False)
    step: int
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    tokens_seen: int | None = None
    gpu_memory_allocated_mb: float | None = None
    gpu_memory_reserved_mb: float | None = None
    mean_token_accuracy: float | None = None
    eval_mean_token_accuracy: float | None = None


# The measured values of a metrics row, in the order exports and charts show them.
METRIC_FIELDS = (
    "step",
    "epoch",
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "tokens_per_second",
    "tokens_seen",
    "gpu_memory_allocated_mb",
    "gpu_memory_reserved_mb",
)


class Event(SQLModel, table=True):
    """The run's log: messages (state changes, warnings) and one 'metrics' event per metrics row."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run_id_id", "run_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", max_length=64, ondelete="CASCADE")
    created_at: datetime = _timestamp(nullable=False)
    level: str = Field(default="info", max_length=16)
    type: str = Field(default="message", max_length=16)
    message: str = Field(sa_column=Column(Text, nullable=False))
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Checkpoint(SQLModel, table=True):
    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_run_step", "run_id", "step", unique=True),)

    id: str = Field(default_factory=lambda: new_id("ftckpt"), primary_key=True, max_length=64)
    run_id: str = Field(foreign_key="runs.id", max_length=64, ondelete="CASCADE")
    created_at: datetime = _timestamp(nullable=False)
    step: int
    path: str = Field(sa_column=Column(Text, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class DataFile(SQLModel, table=True):
    """An uploaded file: a training set validated at upload, or a result file."""

    __tablename__ = "files"

    id: str = Field(default_factory=lambda: new_id("file"), primary_key=True, max_length=64)
    created_at: datetime = _timestamp(nullable=False)
    filename: str = Field(max_length=255)
    purpose: str = Field(default="fine-tune", max_length=32)
    bytes: int
    path: str = Field(sa_column=Column(Text, nullable=False))
    format: str | None = Field(default=None, max_length=32)
    num_samples: int | None = None
    status: str = Field(default="processed", max_length=16)
    owner: str | None = Field(default=None, max_length=64, index=True)


class WorkerNode(SQLModel, table=True):
    """A worker process that announced itself; it refreshes last_seen_at while alive.

    Kept in the database rather than asked over the broker, because the embedded
    SQLite broker carries no broadcast: this works the same on every broker.
    """

    __tablename__ = "workers"

    name: str = Field(primary_key=True, max_length=200)  # Celery node name, e.g. training@gpu-host-1
    hostname: str = Field(max_length=200)
    queues: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # [{"name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559}], empty on a CPU-only worker
    devices: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    started_at: datetime = _timestamp(nullable=False)
    last_seen_at: datetime = _timestamp(nullable=False, index=True)


class ApiKey(SQLModel, table=True):
    """A key that opens the API and the dashboard; only its SHA-256 is stored.

    `user` names the owner of what the key creates (runs, files, adapters); an admin key
    sees everything. The plaintext is shown once, when the key is made.
    """

    __tablename__ = "api_keys"

    id: str = Field(default_factory=lambda: new_id("key"), primary_key=True, max_length=64)
    created_at: datetime = _timestamp(nullable=False)
    name: str = Field(max_length=100)
    user: str = Field(max_length=64, index=True)
    is_admin: bool = False
    prefix: str = Field(max_length=16)  # the first characters, to tell keys apart in a list
    key_hash: str = Field(max_length=64, unique=True, index=True)
    revoked_at: datetime | None = _timestamp(nullable=True)
