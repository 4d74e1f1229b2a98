"""What a finished run leaves behind besides the adapter: its metrics as CSV (OpenAI's result file)."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from sqlmodel import Session

from app.models import METRIC_FIELDS, DataFile
from app.services import files, runs


def register_metrics_csv(session: Session, run_id: str) -> DataFile:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "metrics.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(METRIC_FIELDS)
            for metric in runs.list_metrics(session, run_id):
                writer.writerow(
                    ["" if getattr(metric, name) is None else getattr(metric, name) for name in METRIC_FIELDS]
                )
        record = files.register_result_file(
            session, path, f"{run_id}-metrics.csv", owner=runs.get_run(session, run_id).owner
        )
        session.commit()
        session.refresh(record)
        return record
