"""The Reporter a Celery task hands to training: everything lands in the database, in order.

Each metrics row is committed as it is reported (with its 'metrics' event), so a
crash loses nothing already reported, and is published on Redis pub/sub when
LORABOARD_REDIS_URL is set, for listeners that want pushes instead of polling.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from app.config import get_settings
from app.db import get_engine
from app.lifecycle import run_states
from app.models import Checkpoint, Metric, Run, RunStatus, utcnow
from core.event_shapes import metric_event_data
from worker.server_paths import hide_server_paths, hide_server_paths_in
from worker.training.reporting import MetricValues

log = logging.getLogger(__name__)

METRICS_CHANNEL = "loraboard:runs:{run_id}"
CANCEL_CHECK_INTERVAL_S = 1.0


class DatabaseReporter:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.engine = get_engine()
        self._publisher = _redis_publisher()
        self._last_cancel_check = 0.0
        self._stop_request: RunStatus | None = None
        self._latest_metrics: dict[str, Any] = {}

    def training_started(self) -> None:
        """validating_files -> running: the callbacks call it once the Trainer begins."""
        with Session(self.engine) as session:
            run_states.mark_training(session, self.run_id)

    def event(self, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        # Training's own lines name paths ("adapter saved: ...", library warnings).
        message, data = hide_server_paths(message), hide_server_paths_in(data)
        with Session(self.engine) as session:
            run_states.add_event(session, self.run_id, message, level=level, data=data)
            session.commit()

    def metrics(self, values: MetricValues) -> None:
        fields = values.as_dict()
        eta_seconds = fields.pop("eta_seconds", None)
        metric = Metric(run_id=self.run_id, **fields)
        with Session(self.engine) as session:
            run = session.get(Run, self.run_id)
            total_steps = run.total_steps if run else None
            session.add(metric)
            data = metric_event_data(metric, total_steps)
            self._latest_metrics.update(data)
            kind = "evaluation" if values.eval_loss is not None else "training"
            run_states.add_event(
                session, self.run_id, _describe(values, total_steps, kind), type="metrics", data=data
            )
            if run is not None:
                if kind == "training":
                    now = utcnow()
                    if run.first_logged_step is None:
                        run.first_logged_step, run.first_logged_at = values.step, now
                    run.last_logged_at = now
                    run.eta_seconds, run.eta_at = eta_seconds, now if eta_seconds is not None else None
                run.current_step = max(run.current_step, values.step)
                if values.tokens_seen is not None:
                    run.trained_tokens = max(run.trained_tokens, values.tokens_seen)
                session.add(run)
            session.commit()
            session.refresh(metric)
        self._publish({"type": "metrics", "id": metric.id, **data})

    def checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        with Session(self.engine) as session:
            existing = session.exec(
                select(Checkpoint).where(Checkpoint.run_id == self.run_id, Checkpoint.step == step)
            ).first()
            record = existing or Checkpoint(run_id=self.run_id, step=step, path=str(path))
            record.metrics = {**self._latest_metrics, **metrics, "step": step}
            session.add(record)
            run_states.add_event(
                session, self.run_id, f"Checkpoint saved at step {step}", data={"step": step}
            )
            session.commit()
        self._publish({"type": "checkpoint", "step": step})

    def checkpoint_removed(self, path: Path) -> None:
        with Session(self.engine) as session:
            record = session.exec(
                select(Checkpoint).where(Checkpoint.run_id == self.run_id, Checkpoint.path == str(path))
            ).first()
            if record is not None:
                session.delete(record)
                run_states.add_event(
                    session, self.run_id, f"Checkpoint at step {record.step} removed (save_total_limit)"
                )
                session.commit()

    def derived(self, values: dict[str, Any]) -> None:
        with Session(self.engine) as session:
            run = session.get(Run, self.run_id)
            if run is None:
                return
            run.derived = {**run.derived, **values}
            if values.get("total_steps"):
                run.total_steps = int(values["total_steps"])
            session.add(run)
            session.commit()

    def runtime(self, values: dict[str, Any]) -> None:
        with Session(self.engine) as session:
            run = session.get(Run, self.run_id)
            if run is None:
                return
            run.runtime = {**run.runtime, **hide_server_paths_in(values)}
            session.add(run)
            session.commit()

    def should_stop(self) -> bool:
        # Called every step: read the database at most once a second.
        now = time.monotonic()
        if self._stop_request is None and now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL_S:
            self._last_cancel_check = now
            with Session(self.engine) as session:
                self._stop_request = run_states.stop_request(session, self.run_id)
        return self._stop_request is not None

    def save_before_stop(self) -> bool:
        """A pause keeps everything up to this step in a checkpoint; a cancel keeps what was saved."""
        return self._stop_request == RunStatus.pausing

    def _publish(self, payload: dict[str, Any]) -> None:
        if self._publisher is None:
            return
        try:
            self._publisher.publish(METRICS_CHANNEL.format(run_id=self.run_id), json.dumps(payload))
        except Exception:  # pub/sub is best effort: the database already has the row
            log.warning("could not publish metrics on Redis", exc_info=True)


def _describe(values: MetricValues, total_steps: int | None, kind: str) -> str:
    of = f"/{total_steps}" if total_steps else ""
    if kind == "evaluation":
        return f"Step {values.step}{of}: validation loss={values.eval_loss:.4f}"
    parts = [f"Step {values.step}{of}:"]
    if values.loss is not None:
        parts.append(f"training loss={values.loss:.4f}")
    if values.learning_rate is not None:
        parts.append(f"lr={values.learning_rate:.3g}")
    if values.grad_norm is not None:
        parts.append(f"grad norm={values.grad_norm:.3f}")
    return " ".join(parts)


def _redis_publisher() -> Any:
    url = get_settings().redis_url
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url)


class Heartbeat:
    """Marks the run alive every few seconds from a thread, however long one step takes."""

    def __init__(self, run_id: str, interval_s: float) -> None:
        self.run_id = run_id
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with Session(get_engine()) as session:
                    run_states.heartbeat(session, self.run_id)
            except Exception:
                log.warning("heartbeat failed for %s", self.run_id, exc_info=True)
