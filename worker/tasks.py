"""Celery tasks: thin shells. Load the run, mark it running, call training, record the result.

Tasks take ids, never configs (docs/architecture.md, convention 4): the database row is
the truth, and a task that arrives for a run that was cancelled meanwhile does nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from celery.signals import worker_ready
from sqlmodel import Session

from app.config import get_settings
from app.db import get_engine
from app.lifecycle import artifacts, run_states
from app.lifecycle.orphans import recover_orphans
from app.models import DataFile
from core.queues import CHAT_COMPLETION_TASK, DELIVER_WEBHOOK_TASK, TRAIN_RUN_TASK, TRAINING_QUEUE
from core.run_config import RunConfig
from worker import registry, result_file, webhook_delivery  # importing registry connects its signals
from worker.celery_app import celery_app
from worker.recorder import DatabaseReporter, Heartbeat
from worker.server_paths import hide_server_paths
from worker.training.child_warmup import wait_for_warmup
from worker.training.reporting import DataSources, TrainingDiverged

log = logging.getLogger(__name__)


@celery_app.task(name=TRAIN_RUN_TASK, bind=True)
def train_run(self: Any, run_id: str) -> str:
    with Session(get_engine()) as session:
        if not run_states.mark_running(
            session, run_id, worker=self.request.hostname or "worker", task_id=self.request.id
        ):
            return "skipped: not queued"
    # From here on the run is "running": whatever goes wrong must mark it failed, or the
    # orphan watcher would take it for a lost worker and re-queue it again and again.
    try:
        return _train_claimed_run(run_id)
    except Exception as error:
        log.exception("run %s failed", run_id)
        _record_failure(run_id, _readable(error))
        return "failed"


def _train_claimed_run(run_id: str) -> str:
    settings = get_settings()
    with Session(get_engine()) as session:
        run = run_states.held_run(session, run_id)
        config = RunConfig(**run.config)
        data = DataSources(
            train=_data_source(session, config.dataset, "training file") or config.dataset,
            validation=_data_source(session, config.validation_dataset, "validation file"),
        )
        checkpoint = run_states.latest_checkpoint(session, run_id)
        resume_from = None
        if checkpoint is not None and Path(checkpoint.path).is_dir():
            resume_from = checkpoint.path
            run_states.discard_metrics_after(session, run_id, checkpoint.step)
            run_states.add_event(session, run_id, f"Resuming from the checkpoint at step {checkpoint.step}")
            session.commit()

    wait_for_warmup()  # the child's own imports and CUDA context (child_warmup.py), begun before the run
    from worker.training.arguments import ConfigError  # training code loads torch: only in the worker
    from worker.training.trainer import run_training

    reporter: Any = DatabaseReporter(run_id)
    try:
        if config.wandb_project:  # integrations: wandb
            from worker.wandb_logging import WandbReporter

            reporter = WandbReporter(reporter, config, run_id)
        with Heartbeat(run_id, settings.heartbeat_interval_s):
            result = run_training(
                config,
                artifacts.run_dir(run_id),
                reporter,
                data,
                settings.models_dir,
                resume_from_checkpoint=resume_from,
            )
    except ConfigError as error:
        _record_failure(run_id, str(error), code="invalid_config", param=error.param)
        _finish_integrations(reporter, succeeded=False)
        return "failed"
    except TrainingDiverged as error:
        _record_failure(run_id, str(error), code="training_diverged")
        _finish_integrations(reporter, succeeded=False)
        return "failed"
    except Exception:
        _finish_integrations(reporter, succeeded=False)
        raise  # train_run records it, readably
    _finish_integrations(reporter, succeeded=not result.stopped_early)

    with Session(get_engine()) as session:
        if result.stopped_early:
            run_states.mark_stopped(session, run_id, result.global_step)
            return "stopped"
        metrics_file = result_file.register_metrics_csv(session, run_id)
        run_states.mark_succeeded(
            session, run_id, trained_tokens=result.trained_tokens, result_file_id=metrics_file.id
        )
    return "succeeded"


def _data_source(session: Session, reference: str | None, what: str) -> str | None:
    """A file id -> its stored path (what training reads); hub ids and paths pass through."""
    if reference is None or not reference.startswith("file-"):
        return reference
    record = session.get(DataFile, reference)
    if record is None:  # the file was deleted after the job was queued
        raise LookupError(f"The {what} {reference} no longer exists; upload it again.")
    return record.path


def _readable(error: Exception) -> str:
    """The error for the run's page: its message, with the server's directories left out."""
    message = f"{type(error).__name__}: {error}" if not isinstance(error, LookupError) else str(error)
    return hide_server_paths(message)


def _finish_integrations(reporter: Any, *, succeeded: bool) -> None:
    finish = getattr(reporter, "finish", None)
    if finish is not None:
        finish(succeeded)


def _record_failure(
    run_id: str, message: str, *, code: str = "training_error", param: str | None = None
) -> None:
    with Session(get_engine()) as session:
        run_states.mark_failed(session, run_id, message, code=code, param=param)


# A streamed answer's pieces reach the API through the task's own state in the result
# backend (update_state), so streaming works on every backend Celery has: SQLite and Redis.
# Written at most this often, so a fast model does not write the backend once per token.
STREAM_FLUSH_S = 0.05
STREAMING_STATE = "STREAMING"


@celery_app.task(name=CHAT_COMPLETION_TASK, bind=True)
def chat_completion(
    self: Any,
    *,
    base_model: str,
    adapter_dir: str | None,
    quantization: dict[str, Any],
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    stop: list[str] | None,
    stream: bool = False,
    logprobs: bool = False,
    top_logprobs: int = 0,
) -> dict[str, Any]:
    from worker.training.inference import generate_chat

    pieces: list[dict[str, Any]] = []
    last_flush = [0.0]

    def publish(piece: dict[str, Any]) -> None:
        pieces.append(piece)
        now = time.monotonic()
        if now - last_flush[0] >= STREAM_FLUSH_S:
            self.update_state(state=STREAMING_STATE, meta={"pieces": pieces})
            last_flush[0] = now

    return generate_chat(
        base_model,
        adapter_dir,
        messages,
        models_dir=get_settings().models_dir,
        use_4bit=quantization["use_4bit"],
        quantization=quantization,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=stop,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        on_piece=publish if stream and self.request.id else None,
    )


@celery_app.task(name=DELIVER_WEBHOOK_TASK, bind=True, max_retries=None)
def deliver_webhook(self: Any, *, run_id: str, event_id: str, event_type: str, created_at: int) -> str:
    """One signed POST per attempt; a failure comes back after a growing delay (retry_delay_s)."""
    attempt = self.request.retries + 1
    with Session(get_engine()) as session:
        done = webhook_delivery.deliver(
            session,
            run_id=run_id,
            event_id=event_id,
            event_type=event_type,
            created_at=created_at,
            attempt=attempt,
        )
    if not done:
        raise self.retry(countdown=webhook_delivery.retry_delay_s(attempt))
    return "delivered"


@worker_ready.connect
def _recover_own_orphans(sender: Any, **_kwargs: Any) -> None:
    """A training worker that restarts re-queues the runs it was running when it died."""
    if TRAINING_QUEUE not in registry.consumed_queues(sender):
        return
    with Session(get_engine()) as session:
        recover_orphans(session, get_settings().stale_run_after_s, worker=sender.hostname)
