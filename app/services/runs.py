"""Runs: creation, queueing, cancelling, state changes, and the reads the API and pages share.

State changes are conditional UPDATEs (`... WHERE status IN (...)`), so a cancel
racing a worker's start, or two workers racing for one run, never both win.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, func, select

from app.errors import APIError, not_found
from app.models import Checkpoint, DataFile, Event, Metric, Run, RunStatus, utcnow
from app.services import webhooks
from app.services.model_availability import check_model_available
from app.services.ownership import new_owner, only_visible, visible
from app.services.sources import check_source
from core.run_config import RunConfig

ACTIVE_STATUSES = (
    RunStatus.queued,
    RunStatus.validating_files,
    RunStatus.running,
    RunStatus.cancelling,
    RunStatus.pausing,
)
# A worker holds the run in these states.
WORKER_STATUSES = (RunStatus.validating_files, RunStatus.running, RunStatus.cancelling, RunStatus.pausing)
RESUMABLE_STATUSES = (RunStatus.paused, RunStatus.cancelled, RunStatus.failed)
_MODEL_REF = re.compile(r":(?P<run_id>ftjob-[0-9a-f]+)(?::ckpt-step-(?P<step>\d+))?$")


# --- names ---------------------------------------------------------------------


def fine_tuned_model_name(run: Run) -> str:
    """OpenAI's shape, ft:<base>:<suffix>:<job id>; the job id makes it unique and resolvable."""
    base = run.config["model_name"]
    return f"ft:{base}:{run.suffix or 'loraboard'}:{run.id}"


def checkpoint_model_name(run: Run, step: int) -> str:
    return f"{fine_tuned_model_name(run)}:ckpt-step-{step}"


def parse_model_reference(model: str) -> tuple[str, int | None] | None:
    """'ft:…:ftjob-…[:ckpt-step-N]' -> (run id, checkpoint step or None); a base model id -> None."""
    match = _MODEL_REF.search(model)
    if not match or not model.startswith("ft:"):
        return None
    step = match.group("step")
    return match.group("run_id"), int(step) if step else None


# --- creation and queueing -------------------------------------------------------


def resolve_file_reference(session: Session, reference: str | None, param: str) -> str | None:
    """A file id must exist and hold training data; other strings are hub ids or paths for the worker."""
    if reference is None or not reference.startswith("file-"):
        return reference
    record = session.get(DataFile, reference)
    if record is None or not visible(record.owner):
        raise APIError(400, f"File '{reference}' does not exist.", param=param, code="file_not_found")
    if record.purpose != "fine-tune":
        raise APIError(
            400, f"File '{reference}' has purpose '{record.purpose}', not 'fine-tune'.", param=param
        )
    return reference


def checked_sources(config: RunConfig) -> RunConfig:
    """The config with its model and data references checked (sources.check_source)."""
    changes = {
        "model_name": check_source(config.model_name, "model", "model"),
        "dataset": check_source(config.dataset, "training_file", "training file"),
    }
    if config.validation_dataset is not None:
        changes["validation_dataset"] = check_source(
            config.validation_dataset, "validation_file", "validation file"
        )
    return config.model_copy(update=changes)


def create_run(
    session: Session, config: RunConfig, *, suffix: str | None = None, metadata: dict[str, Any] | None = None
) -> Run:
    """Store a run as queued and commit it; the caller enqueues after this returns (DESIGN 4)."""
    config = checked_sources(config)
    check_model_available(config.model_name)
    resolve_file_reference(session, config.dataset, "training_file")
    resolve_file_reference(session, config.validation_dataset, "validation_file")
    run = Run(
        config=config.model_dump(mode="json"), suffix=suffix, user_metadata=metadata or {}, owner=new_owner()
    )
    session.add(run)
    session.flush()  # the run row first: events reference it
    session.add(Event(run_id=run.id, message="Fine-tuning job created", data={"model": config.model_name}))
    session.commit()
    session.refresh(run)
    return run


def enqueue_run(session: Session, run: Run) -> Run:
    """Send the run's id (never its config) to the training queue."""
    from worker.celery_app import celery_app  # the app is light: no training code is imported

    result = celery_app.send_task("loraboard.train_run", args=[run.id])
    run.task_id = result.id
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def submit_run(session: Session, config: RunConfig, **kwargs: Any) -> Run:
    return enqueue_run(session, create_run(session, config, **kwargs))


# --- reads -------------------------------------------------------------------------


def get_run(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None or not visible(run.owner):
        raise not_found("job", run_id, param="fine_tuning_job_id")
    return run


def list_runs(
    session: Session,
    *,
    limit: int = 20,
    after: str | None = None,
    status: str | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[list[Run], bool]:
    """Newest first; `after` is the id of the last run of the previous page. Returns (page, has_more)."""
    query = only_visible(select(Run), Run.owner)
    if status:
        query = query.where(Run.status == status)
    if after:
        anchor = get_run(session, after)
        query = query.where(
            (col(Run.created_at) < anchor.created_at)
            | ((col(Run.created_at) == anchor.created_at) & (col(Run.id) < anchor.id))
        )
    rows = list(
        session.exec(
            query.order_by(col(Run.created_at).desc(), col(Run.id).desc()).limit(
                limit + 1 if not metadata else 100000
            )
        ).all()
    )
    if metadata:
        rows = [run for run in rows if all(run.user_metadata.get(k) == v for k, v in metadata.items())]
    return rows[:limit], len(rows) > limit


def count_runs_by_status(session: Session) -> dict[str, int]:
    rows = session.exec(only_visible(select(Run.status, func.count()), Run.owner).group_by(Run.status)).all()
    return {status: count for status, count in rows}


def list_events(
    session: Session, run_id: str, *, limit: int = 20, after: int | None = None
) -> tuple[list[Event], bool]:
    """Newest first, like OpenAI; `after` is an event id: the page holds older events."""
    query = select(Event).where(Event.run_id == run_id)
    if after is not None:
        query = query.where(col(Event.id) < after)
    rows = list(session.exec(query.order_by(col(Event.id).desc()).limit(limit + 1)).all())
    return rows[:limit], len(rows) > limit


def list_metrics(
    session: Session, run_id: str, *, after_id: int = 0, limit: int | None = None
) -> list[Metric]:
    """Oldest first from an id on (the live charts resume from the last id they saw)."""
    query = select(Metric).where(Metric.run_id == run_id, col(Metric.id) > after_id).order_by(col(Metric.id))
    if limit:
        query = query.limit(limit)
    return list(session.exec(query).all())


def list_checkpoints(
    session: Session, run_id: str, *, limit: int = 10, after: str | None = None
) -> tuple[list[Checkpoint], bool]:
    query = select(Checkpoint).where(Checkpoint.run_id == run_id)
    if after:
        anchor = session.get(Checkpoint, after)
        if anchor is None:
            raise not_found("checkpoint", after, param="after")
        query = query.where(col(Checkpoint.step) < anchor.step)
    rows = list(session.exec(query.order_by(col(Checkpoint.step).desc()).limit(limit + 1)).all())
    return rows[:limit], len(rows) > limit


def get_checkpoint(session: Session, run_id: str, checkpoint_id: str) -> Checkpoint:
    checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None or checkpoint.run_id != run_id:
        raise not_found("checkpoint", checkpoint_id, param="checkpoint_id")
    return checkpoint


def latest_loss(session: Session, run_id: str) -> float | None:
    row = session.exec(
        select(Metric.loss)
        .where(Metric.run_id == run_id, col(Metric.loss).is_not(None))
        .order_by(col(Metric.id).desc())
        .limit(1)
    ).first()
    return row


def progress(run: Run, now: datetime | None = None) -> dict[str, Any]:
    """Fraction done, elapsed and ETA (from the mean step time so far)."""
    now = now or utcnow()
    started = _aware(run.started_at)
    finished = _aware(run.finished_at)
    elapsed = ((finished or now) - started).total_seconds() if started else 0.0
    fraction = None
    eta_seconds = None
    if run.total_steps:
        fraction = min(1.0, run.current_step / run.total_steps)
        if run.status == RunStatus.running and run.current_step > 0:
            eta_seconds = _eta_seconds(run, now, elapsed)
    if run.status == RunStatus.succeeded:
        fraction = 1.0
    return {"fraction": fraction, "elapsed_seconds": elapsed, "eta_seconds": eta_seconds}


def _eta_seconds(run: Run, now: datetime, elapsed: float) -> float:
    """The worker's latest estimate, less the time since; else from the logs' timing.

    The worker fits each step's time to its tokens (worker/training/eta.py). Without its
    estimate: remaining steps x the time per step between the first and the latest log of
    this attempt (model loading and data preparation left out); before two logs, the time
    since start is all we have.
    """
    assert run.total_steps is not None
    eta_at = _aware(run.eta_at)
    if run.eta_seconds is not None and eta_at is not None:
        return max(0.0, run.eta_seconds - (now - eta_at).total_seconds())
    remaining = run.total_steps - run.current_step
    first_at, last_at = _aware(run.first_logged_at), _aware(run.last_logged_at)
    if (
        first_at
        and last_at
        and run.first_logged_step is not None
        and run.current_step > run.first_logged_step
    ):
        per_step = (last_at - first_at).total_seconds() / (run.current_step - run.first_logged_step)
        return max(0.0, per_step * remaining - (now - last_at).total_seconds())
    return elapsed / run.current_step * remaining


def estimated_finish(run: Run) -> int | None:
    eta = progress(run)["eta_seconds"]
    if eta is None:
        return None
    return int((utcnow() + timedelta(seconds=eta)).timestamp())


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    from datetime import UTC

    return moment.replace(tzinfo=UTC)


def timestamp(moment: datetime | None) -> int | None:
    aware = _aware(moment)
    return int(aware.timestamp()) if aware else None


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


def _transition(session: Session, run_id: str, allowed: tuple[RunStatus, ...], **values: Any) -> bool:
    statement = (
        update(Run)
        .where(col(Run.id) == run_id, col(Run.status).in_([status.value for status in allowed]))
        .values(**values)
    )
    changed = session.execute(statement).rowcount > 0  # type: ignore[attr-defined]
    session.commit()
    return changed


def cancel_run(session: Session, run_id: str) -> Run:
    """Queued: cancelled at once. Running: 'cancelling' until the worker stops at its next step."""
    run = get_run(session, run_id)
    if run.run_status.is_final:
        raise APIError(
            400,
            f"Job {run_id} has already {run.status}; it cannot be cancelled.",
            param="fine_tuning_job_id",
            code="job_not_cancellable",
        )
    if _transition(
        session, run_id, (RunStatus.queued,), status=RunStatus.cancelled.value, finished_at=utcnow()
    ):
        add_event(session, run_id, "Job cancelled before it started")
        session.commit()
        webhooks.notify(session, run_id, "cancelled")
        if run.task_id:
            from worker.celery_app import celery_app

            celery_app.control.revoke(run.task_id)
    elif _transition(
        session, run_id, (RunStatus.paused,), status=RunStatus.cancelled.value, finished_at=utcnow()
    ):
        add_event(session, run_id, "Paused job cancelled; its checkpoints are kept")
        session.commit()
        webhooks.notify(session, run_id, "cancelled")
    elif _transition(
        session,
        run_id,
        (RunStatus.validating_files, RunStatus.running, RunStatus.pausing),
        status=RunStatus.cancelling.value,
    ):
        add_event(session, run_id, "Cancel requested; the worker stops at the next step")
        session.commit()
    session.expire_all()
    return get_run(session, run_id)


def pause_run(session: Session, run_id: str) -> Run:
    """Running -> 'pausing': the worker saves a checkpoint at its next step and stops; resume continues it."""
    get_run(session, run_id)
    if not _transition(session, run_id, (RunStatus.running,), status=RunStatus.pausing.value):
        run = get_run(session, run_id)
        raise APIError(
            400,
            f"Only a running job can be paused; job {run_id} is {run.status}.",
            param="fine_tuning_job_id",
            code="job_not_pausable",
        )
    add_event(session, run_id, "Pause requested; the worker saves a checkpoint at the next step")
    session.commit()
    session.expire_all()
    return get_run(session, run_id)


def resume_run(session: Session, run_id: str) -> Run:
    """Paused, cancelled or failed -> queued again; training continues from the last checkpoint, if any."""
    run = get_run(session, run_id)
    if not _transition(
        session,
        run_id,
        RESUMABLE_STATUSES,
        status=RunStatus.queued.value,
        finished_at=None,
        error_code=None,
        error_message=None,
        error_param=None,
        worker=None,
        attempts=0,  # a resume asked for by a person gets the full number of attempts again
    ):
        raise APIError(
            400,
            f"Job {run_id} is {run.status}; only paused, cancelled or failed jobs can be resumed.",
            param="fine_tuning_job_id",
            code="job_not_resumable",
        )
    checkpoint = latest_checkpoint(session, run_id)
    where = (
        f"from the checkpoint at step {checkpoint.step}" if checkpoint else "from the start (no checkpoint)"
    )
    add_event(session, run_id, f"Job resumed; it continues {where}")
    session.commit()
    session.expire_all()
    return enqueue_run(session, get_run(session, run_id))


def mark_running(session: Session, run_id: str, worker: str, task_id: str | None) -> bool:
    """Claim a queued run for this worker (validating_files until training starts); False if it
    was cancelled or taken meanwhile."""
    now = utcnow()
    claimed = _transition(
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
    if _transition(session, run_id, (RunStatus.validating_files,), status=RunStatus.running.value):
        add_event(session, run_id, "Files validated; training started")
        session.commit()


def heartbeat(session: Session, run_id: str) -> None:
    _transition(session, run_id, WORKER_STATUSES, heartbeat_at=utcnow())


def stop_request(session: Session, run_id: str) -> RunStatus | None:
    """What the worker must do at its next step: None (go on), cancelling or pausing."""
    status = session.exec(select(Run.status).where(Run.id == run_id)).first()
    if status in (RunStatus.cancelling.value, RunStatus.cancelled.value):
        return RunStatus.cancelling
    if status == RunStatus.pausing.value:
        return RunStatus.pausing
    return None


def mark_succeeded(session: Session, run_id: str, *, trained_tokens: int, result_file_id: str | None) -> None:
    run = get_run(session, run_id)
    runtime = dict(run.runtime)
    if result_file_id:
        runtime["result_files"] = [result_file_id]
    succeeded = _transition(
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
        webhooks.notify(session, run_id, "succeeded")


def mark_cancelled(session: Session, run_id: str, step: int) -> None:
    if _transition(session, run_id, WORKER_STATUSES, status=RunStatus.cancelled.value, finished_at=utcnow()):
        add_event(session, run_id, f"Job cancelled at step {step}; checkpoints saved so far are kept")
        session.commit()
        webhooks.notify(session, run_id, "cancelled")


def mark_stopped(session: Session, run_id: str, step: int) -> None:
    """The worker stopped early at a request: paused (it saved a checkpoint) or cancelled."""
    if _transition(session, run_id, (RunStatus.pausing,), status=RunStatus.paused.value):
        add_event(session, run_id, f"Job paused at step {step}; resume continues from there")
        session.commit()
    else:
        mark_cancelled(session, run_id, step)


def mark_failed(
    session: Session, run_id: str, message: str, *, code: str = "training_error", param: str | None = None
) -> None:
    failed = _transition(
        session,
        run_id,
        ACTIVE_STATUSES,
        status=RunStatus.failed.value,
        finished_at=utcnow(),
        error_code=code,
        error_message=message,
        error_param=param,
    )
    add_event(session, run_id, f"Job failed: {message}", level="error")
    session.commit()
    if failed:
        webhooks.notify(session, run_id, "failed")


def discard_metrics_after(session: Session, run_id: str, step: int) -> None:
    """On resume, drop what was logged after the checkpoint: those steps are trained again."""
    for metric in session.exec(select(Metric).where(Metric.run_id == run_id, col(Metric.step) > step)).all():
        session.delete(metric)
    for event in session.exec(select(Event).where(Event.run_id == run_id, Event.type == "metrics")).all():
        if event.data and event.data.get("step", 0) > step:
            session.delete(event)
    session.commit()


def latest_checkpoint(session: Session, run_id: str) -> Checkpoint | None:
    return session.exec(
        select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(col(Checkpoint.step).desc()).limit(1)
    ).first()


def requeue_orphan(session: Session, run_id: str, reason: str) -> bool:
    """A running run whose worker vanished goes back to the queue; it resumes from its last checkpoint."""
    requeued = _transition(
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
