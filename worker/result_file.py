"""What a finished run leaves behind besides the adapter: its metrics as CSV (OpenAI's result file)."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

from sqlmodel import Session

from app.config import get_settings
from app.lifecycle.run_states import held_run, list_metrics
from app.models import METRIC_FIELDS, DataFile, new_id


def register_metrics_csv(session: Session, run_id: str) -> DataFile:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "metrics.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(METRIC_FIELDS)
            for metric in list_metrics(session, run_id):
                writer.writerow(
                    ["" if getattr(metric, name) is None else getattr(metric, name) for name in METRIC_FIELDS]
                )
        record = register_result_file(
            session, path, f"{run_id}-metrics.csv", owner=held_run(session, run_id).owner
        )
        session.commit()
        session.refresh(record)
        return record


def register_result_file(session: Session, source: Path, filename: str, owner: str | None = None) -> DataFile:
    """A file the system produced (the metrics CSV of a job), listed like uploads (OpenAI's result_files)."""
    settings = get_settings()
    file_id = new_id("file")
    path = settings.files_dir / f"{file_id}{source.suffix}"
    shutil.copyfile(source, path)
    record = DataFile(
        id=file_id,
        filename=filename,
        purpose="fine-tune-results",
        bytes=path.stat().st_size,
        path=str(path),
        format="csv",
        owner=owner,  # the run's owner: the worker registers it, for no one in particular
    )
    session.add(record)
    return record
