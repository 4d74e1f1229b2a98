"""Faults around a run: what a user sees on the job when its start or its training goes wrong.

In process against a real SQLite file: the training task runs eagerly (Celery's apply), the
orphan recovery is the server's own (issue 16, items 5 and 8).
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlmodel import Session

from app.db import get_engine
from app.lifecycle.orphans import recover_orphans
from app.migrate import upgrade
from app.models import DataFile, Run, RunStatus, utcnow
from app.services import files, runs
from core.run_config import preset_config
from worker.training.callbacks import ReporterCallback
from worker.training.reporting import MemoryReporter, TrainingDiverged


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


@pytest.mark.parametrize("logs", [{"loss": math.nan}, {"loss": 2.0, "grad_norm": math.inf}])
def test_a_non_finite_loss_or_gradient_ends_training_with_a_hint(tmp_path: Path, logs: dict) -> None:
    reporter = MemoryReporter()
    callback = ReporterCallback(reporter, tmp_path / "metrics.jsonl")
    state = SimpleNamespace(global_step=5, epoch=0.5, num_input_tokens_seen=100, max_steps=10)
    with pytest.raises(TrainingDiverged, match="at step 5.*Lower the learning rate.*float32"):
        callback.on_log(SimpleNamespace(), state, SimpleNamespace(), logs={"learning_rate": 1e-3, **logs})
    assert reporter.metric_rows == []  # nothing non-finite reaches the database
