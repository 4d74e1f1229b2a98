"""Runs as a user asks for them: creation, the reads the API and pages share, and the
changes a user requests (cancel, pause, resume).

The state changes themselves are app/lifecycle/run_states.py's conditional UPDATEs, shared
with the workers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from app.errors import APIError, not_found
from app.lifecycle import webhook_events
from app.lifecycle.run_states import add_event, enqueue_run, latest_checkpoint, transition
from app.lifecycle.task_queue import celery_client
from app.models import Checkpoint, DataFile, Event, Metric, Run, RunStatus, utcnow
from app.services.model_availability import check_model_available
from app.services.ownership import new_owner, only_visible, visible
from app.services.sources import check_source
from core.run_config import RunConfig

RESUMABLE_STATUSES = (RunStatus.paused, RunStatus.cancelled, RunStatus.failed)


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
    """Store a run as queued and commit it; the caller enqueues after this returns
    (docs/architecture.md, convention 4)."""
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


def list_succeeded_runs(session: Session, *, limit: int | None = None) -> list[Run]:
    """The visible runs that left an adapter to chat with, newest first."""
    query = (
        only_visible(select(Run), Run.owner)
        .where(Run.status == RunStatus.succeeded.value)
        .order_by(col(Run.created_at).desc())
    )
    if limit:
        query = query.limit(limit)
    return list(session.exec(query).all())


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


# --- changes a user requests -------------------------------------------------------


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
    if transition(
        session, run_id, (RunStatus.queued,), status=RunStatus.cancelled.value, finished_at=utcnow()
    ):
        add_event(session, run_id, "Job cancelled before it started")
        session.commit()
        webhook_events.notify(session, run_id, "cancelled")
        if run.task_id:
            celery_client().control.revoke(run.task_id)
    elif transition(
        session, run_id, (RunStatus.paused,), status=RunStatus.cancelled.value, finished_at=utcnow()
    ):
        add_event(session, run_id, "Paused job cancelled; its checkpoints are kept")
        session.commit()
        webhook_events.notify(session, run_id, "cancelled")
    elif transition(
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
    if not transition(session, run_id, (RunStatus.running,), status=RunStatus.pausing.value):
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
    if not transition(
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
