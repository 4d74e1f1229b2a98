"""What training tells the outside world, as a protocol.

The training code (this package) knows nothing of databases or brokers: it calls a
Reporter. The Celery task passes one that writes to the database and publishes on
Redis (worker/recorder.py); tests and the benchmark can pass a plain in-memory one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class MetricValues:
    """One logging step (train metrics) or one evaluation (eval_loss set)."""

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
    """Share of the labelled tokens the model predicted right (trl's mean_token_accuracy)."""
    eval_mean_token_accuracy: float | None = None
    eta_seconds: float | None = None
    """Training time left as estimated at this log (worker/training/eta.py); kept on the run, not a metric."""

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm stopped being a finite number: nothing after it can be trusted."""

    def __init__(self, step: int, name: str, value: float):
        super().__init__(
            f"Training diverged at step {step}: the {name} is {value}. Lower the learning rate "
            "(or lora_alpha), or compute in float32 (bnb_4bit_compute_dtype), and start again."
        )


def first_non_finite(values: MetricValues) -> tuple[str, float] | None:
    """The first figure of a log that is NaN or infinite, by its readable name."""
    import math

    names = {"loss": "training loss", "grad_norm": "gradient norm", "eval_loss": "validation loss"}
    for field_name, readable in names.items():
        value = getattr(values, field_name)
        if value is not None and not math.isfinite(value):
            return readable, value
    return None


@dataclass
class DataSources:
    """Where the data is, already resolved by the caller.

    Each is a local file (.jsonl/.json/.csv/.parquet), a local directory, the
    shipped demo dataset id, or a hub dataset id.
    """

    train: str
    validation: str | None = None


@dataclass
class TrainingResult:
    adapter_dir: Path
    global_step: int
    trained_tokens: int
    final_metrics: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False  # True when should_stop() ended training (cancel)


class Reporter(Protocol):
    def event(self, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        """A line for the run's log (state changes, warnings, what was mapped)."""

    def metrics(self, values: MetricValues) -> None:
        """Every logging step and every evaluation, in order."""

    def checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        """A checkpoint directory was written (adapter + trainer state)."""

    def checkpoint_removed(self, path: Path) -> None:
        """save_total_limit deleted an older checkpoint directory."""

    def derived(self, values: dict[str, Any]) -> None:
        """Values derived from config and data: total_steps, steps_per_epoch, warmup_steps, ..."""

    def runtime(self, values: dict[str, Any]) -> None:
        """What was really used: device, dtypes, the mapped trainer arguments, versions."""

    def should_stop(self) -> bool:
        """True once a cancel or a pause was asked; checked at every step."""
        ...

    def save_before_stop(self) -> bool:
        """When stopping: True (pause) = save a checkpoint of this step first; False (cancel) = just stop."""
        ...


class MemoryReporter:
    """A Reporter that keeps everything in lists (tests, benchmarks, scripts)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any] | None]] = []
        self.metric_rows: list[MetricValues] = []
        self.checkpoints: list[tuple[int, Path, dict[str, Any]]] = []
        self.removed: list[Path] = []
        self.derived_values: dict[str, Any] = {}
        self.runtime_values: dict[str, Any] = {}
        self.stop_requested = False
        self.pause_requested = False

    def event(self, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self.events.append((level, message, data))

    def metrics(self, values: MetricValues) -> None:
        self.metric_rows.append(values)

    def checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        self.checkpoints.append((step, path, metrics))

    def checkpoint_removed(self, path: Path) -> None:
        self.removed.append(path)

    def derived(self, values: dict[str, Any]) -> None:
        self.derived_values.update(values)

    def runtime(self, values: dict[str, Any]) -> None:
        self.runtime_values.update(values)

    def should_stop(self) -> bool:
        return self.stop_requested or self.pause_requested

    def save_before_stop(self) -> bool:
        return self.pause_requested
