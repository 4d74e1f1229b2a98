"""The training task, when a run's start goes wrong: what a user sees on the job.

In process against a real SQLite file: the task runs eagerly (Celery's apply).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session

from app.db import get_engine
from app.migrate import upgrade
from app.models import DataFile, RunStatus
from app.services import files, runs
from core.run_config import preset_config


@pytest.fixture(autouse=True)
def migrated() -> None:
    upgrade()


def queued_run_on_an_upload() -> tuple[str, str]:
    with Session(get_engine()) as session:
        record = files.store_upload(
            session, _Bytes(b'{"text": "a"}\n{"text": "b"}\n'), "two.jsonl", "fine-tune"
        )
        run = runs.create_run(session, preset_config("demo", dataset=record.id))
        return run.id, record.id


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk


def test_a_run_whose_file_vanished_before_it_started_fails_with_a_readable_error() -> None:
    from worker.tasks import train_run

    run_id, file_id = queued_run_on_an_upload()
    with Session(get_engine()) as session:  # gone from under the job (an operator, a disk cleanup)
        record = session.get(DataFile, file_id)
        assert record is not None
        Path(record.path).unlink()
        session.delete(record)
        session.commit()
    assert train_run.apply(args=[run_id]).get() == "failed"
    with Session(get_engine()) as session:
        run = runs.get_run(session, run_id)
        assert run.status == RunStatus.failed.value
        assert run.error_message == f"The training file {file_id} no longer exists; upload it again."
        assert run.finished_at is not None
