"""Orphan recovery: a run whose worker went quiet is queued again, up to the set attempts.

In process against a real SQLite file, with the server's own recovery.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from app.db import get_engine
from app.lifecycle import run_states
from app.lifecycle.orphans import recover_orphans
from app.migrate import upgrade
from app.models import Run, RunStatus, utcnow
from app.services import runs
from core.run_config import preset_config


@pytest.fixture(autouse=True)
def migrated() -> None:
    upgrade()


def stale_running_run(attempts: int) -> str:
    with Session(get_engine()) as session:
        run = Run(
            config=preset_config("demo").model_dump(mode="json"),
            status=RunStatus.running.value,
            worker="training@lost",
            attempts=attempts,
            heartbeat_at=utcnow() - timedelta(hours=1),
        )
        session.add(run)
        session.commit()
        return run.id


def test_a_run_that_keeps_losing_its_worker_fails_after_the_set_attempts() -> None:
    again, given_up = stale_running_run(attempts=1), stale_running_run(attempts=3)
    with Session(get_engine()) as session:
        recovered = recover_orphans(session, 120)
        assert again in recovered and given_up not in recovered
        assert runs.get_run(session, again).status == RunStatus.queued.value
        failed = runs.get_run(session, given_up)
        assert failed.status == RunStatus.failed.value and failed.error_code == "worker_lost"
        assert "lost 3 times" in (failed.error_message or "")
        runs.cancel_run(session, again)
        resumed = runs.resume_run(session, given_up)  # a person's resume gets its attempts back
        assert resumed.status == RunStatus.queued.value and resumed.attempts == 0
        runs.cancel_run(session, given_up)


def test_two_server_processes_finding_the_same_orphans_act_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With server_workers > 1 every server process runs the orphan check: two may read the
    same stale runs before either writes. Each run is then re-queued or failed once, with one event."""
    again, given_up = stale_running_run(attempts=1), stale_running_run(attempts=3)
    with Session(get_engine()) as first, Session(get_engine()) as second:
        read_by_second = run_states.find_stale_runs(second, 120)  # before the first one writes
        assert {again, given_up} <= {run.id for run in read_by_second}
        assert again in recover_orphans(first, 120)
        monkeypatch.setattr(run_states, "find_stale_runs", lambda *_args, **_kwargs: read_by_second)
        assert recover_orphans(second, 120) == []

    with Session(get_engine()) as session:
        requeued = [e for e in runs.list_events(session, again)[0] if "re-queued" in e.message]
        failed = [e for e in runs.list_events(session, given_up)[0] if e.message.startswith("Job failed")]
        assert len(requeued) == 1 and len(failed) == 1
        assert runs.get_run(session, again).status == RunStatus.queued.value
        assert runs.get_run(session, given_up).status == RunStatus.failed.value
        runs.cancel_run(session, again)
