"""integrations: wandb: the database reporter, plus each metrics row logged to a W&B run.

The run is named after the job (or wandb_run_name), carries the run config, and is
resumed by id when a lost worker's job is picked up again. In LORABOARD_WANDB_MODE=offline
it is written under <data dir>/wandb for `wandb sync` later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import get_settings
from core.run_config import RunConfig
from worker.recorder import DatabaseReporter
from worker.training.reporting import MetricValues

# Loraboard's names -> OpenAI's (as in its metrics events), the rest as they are.
OPENAI_NAMES = {"loss": "train_loss", "eval_loss": "valid_loss"}


class WandbReporter:
    def __init__(self, inner: DatabaseReporter, config: RunConfig, run_id: str) -> None:
        import wandb

        settings = get_settings()
        if settings.wandb_mode == "online" and settings.wandb_api_key:
            wandb.login(key=settings.wandb_api_key, relogin=False)
        directory = settings.data_dir / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        self.inner = inner
        self.run = wandb.init(
            project=config.wandb_project,
            entity=config.wandb_entity,
            name=config.wandb_run_name or run_id,
            tags=config.wandb_tags,
            config=config.model_dump(mode="json"),
            id=run_id,
            resume="allow",
            mode=settings.wandb_mode,
            dir=str(directory),
        )
        inner.event(f"Logging to Weights & Biases: project {config.wandb_project} ({settings.wandb_mode})")

    def metrics(self, values: MetricValues) -> None:
        self.inner.metrics(values)
        row = {OPENAI_NAMES.get(key, key): value for key, value in values.as_dict().items() if key != "step"}
        self.run.log(row, step=values.step)

    def finish(self, succeeded: bool) -> None:
        self.run.finish(exit_code=0 if succeeded else 1)

    # Everything else is the database reporter's.
    def event(self, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self.inner.event(message, level, data)

    def checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        self.inner.checkpoint(step, path, metrics)

    def checkpoint_removed(self, path: Path) -> None:
        self.inner.checkpoint_removed(path)

    def derived(self, values: dict[str, Any]) -> None:
        self.inner.derived(values)

    def runtime(self, values: dict[str, Any]) -> None:
        self.inner.runtime(values)

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def save_before_stop(self) -> bool:
        return self.inner.save_before_stop()

    def training_started(self) -> None:
        self.inner.training_started()
