"""Orphan recovery: a run whose worker went quiet is queued again, up to the set attempts.

In process against a real SQLite file, with the server's own recovery.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from app.db import get_engine
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
