"""The worker's ETA reaches the run row (not the metrics table) and the dashboard counts it down."""

from __future__ import annotations

from datetime import UTC

from sqlmodel import Session, select

from app.db import get_engine
from app.lifecycle.run_states import mark_running, mark_training
from app.migrate import upgrade
from app.models import Event, Metric, Run
from app.services.runs import create_run, progress
from core.run_config import RunConfig
from worker.recorder import DatabaseReporter
from worker.training.reporting import MetricValues


def test_each_log_stores_the_workers_estimate_on_the_run() -> None:
    upgrade()
    with Session(get_engine()) as session:
        run = create_run(session, RunConfig(model_name="demo-tiny-llama", dataset="demo-antonyms"))
        assert mark_running(session, run.id, "training@unit", None)
        mark_training(session, run.id)  # the trainer has begun: validating_files -> running
        session.refresh(run)
        run.total_steps = 100
        session.add(run)
        session.commit()
        run_id = run.id

    reporter = DatabaseReporter(run_id)
    reporter.metrics(MetricValues(step=20, loss=1.5, eta_seconds=120.0))
    with Session(get_engine()) as session:
        run = session.get(Run, run_id)
        assert run is not None and run.eta_seconds == 120.0 and run.eta_at is not None
        logged_at = run.eta_at.replace(tzinfo=UTC)  # SQLite hands back naive UTC
        assert progress(run, now=logged_at)["eta_seconds"] == 120.0
        metric = session.exec(select(Metric).where(Metric.run_id == run_id)).one()
        assert (metric.step, metric.loss) == (20, 1.5)

    # a log without an estimate (the worker had none yet) leaves no stale one behind
    reporter.metrics(MetricValues(step=25, loss=1.4))
    with Session(get_engine()) as session:
        run = session.get(Run, run_id)
        assert run is not None and run.eta_seconds is None and run.eta_at is None

    # a new attempt starts without the old attempt's estimate
    reporter.metrics(MetricValues(step=30, loss=1.3, eta_seconds=60.0))
    with Session(get_engine()) as session:
        run = session.get(Run, run_id)
        assert run is not None and run.eta_seconds == 60.0
        run.status = "queued"
        session.add(run)
        session.commit()
        assert mark_running(session, run_id, "training@unit", None)
        session.expire_all()
        run = session.get(Run, run_id)
        assert run is not None and run.eta_seconds is None and run.eta_at is None


def test_metrics_events_carry_openais_names_with_the_token_accuracy() -> None:
    upgrade()
    with Session(get_engine()) as session:
        run = create_run(session, RunConfig(model_name="demo-tiny-llama", dataset="demo-antonyms"))
        run_id = run.id
    reporter = DatabaseReporter(run_id)
    reporter.metrics(MetricValues(step=5, loss=1.25, mean_token_accuracy=0.75))
    reporter.metrics(MetricValues(step=5, eval_loss=1.5, eval_mean_token_accuracy=0.625))
    with Session(get_engine()) as session:
        data = [event.data for event in session.exec(select(Event).where(Event.run_id == run_id)).all()]
    assert {"step": 5, "train_loss": 1.25, "train_mean_token_accuracy": 0.75}.items() <= next(
        item for item in data if item and "train_loss" in item
    ).items()
    assert {"valid_loss": 1.5, "valid_mean_token_accuracy": 0.625}.items() <= next(
        item for item in data if item and "valid_loss" in item
    ).items()
