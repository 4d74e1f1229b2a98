"""What a finished run leaves behind besides the adapter: its metrics as CSV (OpenAI's result file)."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from sqlmodel import Session

from app.models import DataFile
from app.services import files, runs

CSV_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "tokens_per_second",
    "tokens_seen",
    "gpu_memory_allocated_mb",
    "gpu_memory_reserved_mb",
)


def register_metrics_csv(session: Session, run_id: str) -> DataFile:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "metrics.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for metric in runs.list_metrics(session, run_id):
                writer.writerow(
                    ["" if getattr(metric, name) is None else getattr(metric, name) for name in CSV_COLUMNS]
                )
        record = files.register_result_file(session, path, f"{run_id}-metrics.csv")
        session.commit()
        session.refresh(record)
        return record
