"""A run's states, changed by the server and the workers alike.

State changes are conditional UPDATEs (`... WHERE status IN (...)`), so a cancel
racing a worker's start, or two workers racing for one run, never both win. A change
to a final state queues the job's webhook after its commit (webhook_events.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from app.lifecycle import webhook_events
from app.lifecycle.model_names import fine_tuned_model_name
from app.lifecycle.task_queue import celery_client
from app.models import Checkpoint, Event, Metric, Run, RunStatus, utcnow
from core.queues import TRAIN_RUN_TASK

ACTIVE_STATUSES = (
    RunStatus.queued,
    RunStatus.validating_files,
    RunStatus.running,
    RunStatus.cancelling,
    RunStatus.pausing,
)
# A worker holds the run in these states.
WORKER_STATUSES = (RunStatus.validating_files, RunStatus.running, RunStatus.cancelling, RunStatus.pausing)


def enqueue_run(session: Session, run: Run) -> Run:
    """Send the run's id (never its config) to the training queue."""
    result = celery_client().send_task(TRAIN_RUN_TASK, args=[run.id])
    run.task_id = result.id
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


# --- state changes -----------------------------------------------------------------


def add_event(
    session: Session,
    run_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    # OpenAI's levels are info, warn and error; the training code's logging habit says "warning".
    level = "warn" if level == "warning" else level
    session.add(Event(run_id=run_id, message=message, level=level, type=type, data=data or {}))


def transition(session: Session, run_id: str, allowed: tuple[RunStatus, ...], **values: Any) -> bool:
    """Write values if the run's status is one of allowed, and commit; True when this call changed it."""
    statement = (
        update(Run)
        .where(col(Run.id) == run_id, col(Run.status).in_([status.value for status in allowed]))
        .values(**values)
    )
    changed = session.execute(statement).rowcount > 0  # type: ignore[attr-defined]
    session.commit()
    return changed


def mark_running(session: Session, run_id: str, worker: str, task_id: str | None) -> bool:
    """Claim a queued run for this worker (validating_files until training starts); False if it
    was cancelled or taken meanwhile."""
    now = utcnow()
    claimed = transition(
        session,
        run_id,
        (RunStatus.queued,),
        status=RunStatus.validating_files.value,
        worker=worker,
        task_id=task_id,
        started_at=now,
        heartbeat_at=now,
        attempts=Run.attempts + 1,
        first_logged_step=None,
        first_logged_at=None,
        last_logged_at=None,
        eta_seconds=None,
        eta_at=None,
    )
    if claimed:
        add_event(session, run_id, f"Worker {worker} took the job: validating the training files")
        session.commit()
    return claimed


def mark_training(session: Session, run_id: str) -> None:
    """The data checked and loaded, the model built: the first step is next."""
    if transition(session, run_id, (RunStatus.validating_files,), status=RunStatus.running.value):
        add_event(session, run_id, "Files validated; training started")
        session.commit()


def heartbeat(session: Session, run_id: str) -> None:
    transition(session, run_id, WORKER_STATUSES, heartbeat_at=utcnow())


def stop_request(session: Session, run_id: str) -> RunStatus | None:
    """What the worker must do at its next step: None (go on), cancelling or pausing."""
    status = session.exec(select(Run.status).where(Run.id == run_id)).first()
    if status in (RunStatus.cancelling.value, RunStatus.cancelled.value):
        return RunStatus.cancelling
    if status == RunStatus.pausing.value:
        return RunStatus.pausing
    return None


def mark_succeeded(session: Session, run_id: str, *, trained_tokens: int, result_file_id: str | None) -> None:
    run = held_run(session, run_id)
    runtime = dict(run.runtime)
    if result_file_id:
        runtime["result_files"] = [result_file_id]
    succeeded = transition(
        session,
        run_id,
        WORKER_STATUSES,
        status=RunStatus.succeeded.value,
        finished_at=utcnow(),
        fine_tuned_model=fine_tuned_model_name(run),
        trained_tokens=trained_tokens,
        runtime=runtime,
    )
    add_event(session, run_id, "The job has successfully completed")
    session.commit()
    if succeeded:
        webhook_events.notify(session, run_id, "succeeded")


def mark_cancelled(session: Session, run_id: str, step: int) -> None:
    if transition(session, run_id, WORKER_STATUSES, status=RunStatus.cancelled.value, finished_at=utcnow()):
        add_event(session, run_id, f"Job cancelled at step {step}; checkpoints saved so far are kept")
        session.commit()
        webhook_events.notify(session, run_id, "cancelled")


def mark_stopped(session: Session, run_id: str, step: int) -> None:
    """The worker stopped early at a request: paused (it saved a checkpoint) or cancelled."""
    if transition(session, run_id, (RunStatus.pausing,), status=RunStatus.paused.value):
        add_event(session, run_id, f"Job paused at step {step}; resume continues from there")
        session.commit()
    else:
        mark_cancelled(session, run_id, step)


def mark_failed(
    session: Session, run_id: str, message: str, *, code: str = "training_error", param: str | None = None
) -> None:
    failed = transition(
        session,
        run_id,
        ACTIVE_STATUSES,
        status=RunStatus.failed.value,
        finished_at=utcnow(),
        error_code=code,
        error_message=message,
        error_param=param,
    )
    if failed:
        # Only the call that failed the run says so: two server processes finding the same
        # orphan must not log its failure twice, nor one that ended meanwhile as failed.
        add_event(session, run_id, f"Job failed: {message}", level="error")
        session.commit()
        webhook_events.notify(session, run_id, "failed")


def discard_metrics_after(session: Session, run_id: str, step: int) -> None:
    """On resume, drop what was logged after the checkpoint: those steps are trained again."""
    for metric in session.exec(select(Metric).where(Metric.run_id == run_id, col(Metric.step) > step)).all():
        session.delete(metric)
    for event in session.exec(select(Event).where(Event.run_id == run_id, Event.type == "metrics")).all():
        if event.data and event.data.get("step", 0) > step:
            session.delete(event)
    session.commit()


def requeue_orphan(session: Session, run_id: str, reason: str) -> bool:
    """A running run whose worker vanished goes back to the queue; it resumes from its last checkpoint."""
    requeued = transition(
        session,
        run_id,
        (RunStatus.validating_files, RunStatus.running),
        status=RunStatus.queued.value,
        worker=None,
        heartbeat_at=None,
    )
    if requeued:
        add_event(session, run_id, f"{reason}; re-queued to resume from its last checkpoint", level="warn")
        session.commit()
    return requeued


def find_stale_runs(session: Session, stale_after_s: float, worker: str | None = None) -> list[Run]:
    """Runs in a worker's hands whose heartbeat stopped (or, with worker, that this worker left behind)."""
    query = select(Run).where(col(Run.status).in_([status.value for status in WORKER_STATUSES]))
    if worker:
        query = query.where(Run.worker == worker)
    else:
        query = query.where(col(Run.heartbeat_at) < utcnow() - timedelta(seconds=stale_after_s))
    return list(session.exec(query).all())


# --- reads both sides need ---------------------------------------------------------


def list_metrics(
    session: Session, run_id: str, *, after_id: int = 0, limit: int | None = None
) -> list[Metric]:
    """Oldest first from an id on (the live charts resume from the last id they saw)."""
    query = select(Metric).where(Metric.run_id == run_id, col(Metric.id) > after_id).order_by(col(Metric.id))
    if limit:
        query = query.limit(limit)
    return list(session.exec(query).all())


def latest_checkpoint(session: Session, run_id: str) -> Checkpoint | None:
    return session.exec(
        select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(col(Checkpoint.step).desc()).limit(1)
    ).first()


def held_run(session: Session, run_id: str) -> Run:
    """The run a worker holds, whoever owns it (runs are never deleted, so it is there)."""
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"No job found with id '{run_id}'.")
    return run
