"""Progress and ETA of a run, as the runs list, the run page and the API show them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.models import Run, utcnow
from app.services.runs import progress


def running_run(**fields) -> Run:
    return Run(config={}, status="running", total_steps=100, current_step=25, **fields)


def test_eta_uses_the_time_between_logs_not_the_model_loading() -> None:
    now = utcnow()
    run = running_run(
        started_at=now - timedelta(seconds=300),  # 250 s of loading before step 1
        first_logged_step=5,
        first_logged_at=now - timedelta(seconds=50),
        last_logged_at=now - timedelta(seconds=10),
    )
    # 2 s a step between the logs, 75 steps to go, 10 s of them already spent since the last log.
    assert progress(run, now)["eta_seconds"] == pytest.approx(140.0)
    assert progress(run, now)["fraction"] == 0.25
    assert progress(run, now)["elapsed_seconds"] == pytest.approx(300.0)


def test_before_two_logs_the_eta_falls_back_to_time_since_start() -> None:
    now = utcnow()
    run = running_run(
        started_at=now - timedelta(seconds=50), first_logged_step=25, first_logged_at=now, last_logged_at=now
    )
    assert progress(run, now)["eta_seconds"] == pytest.approx(150.0)


def test_finished_runs_have_no_eta() -> None:
    now = utcnow()
    run = Run(
        config={},
        status="succeeded",
        total_steps=100,
        current_step=100,
        started_at=now - timedelta(seconds=60),
        finished_at=now - timedelta(seconds=5),
    )
    assert progress(run, now) == {
        "fraction": 1.0,
        "elapsed_seconds": pytest.approx(55.0),
        "eta_seconds": None,
    }


def test_the_workers_estimate_wins_and_counts_down() -> None:
    now = utcnow()
    run = running_run(
        started_at=now - timedelta(seconds=300),
        first_logged_step=5,
        first_logged_at=now - timedelta(seconds=50),
        last_logged_at=now - timedelta(seconds=10),
        eta_seconds=90.0,
        eta_at=now - timedelta(seconds=10),
    )
    assert progress(run, now)["eta_seconds"] == pytest.approx(80.0)
    # an overdue estimate says "any moment", never a negative time
    assert progress(run, now + timedelta(seconds=200))["eta_seconds"] == 0.0
