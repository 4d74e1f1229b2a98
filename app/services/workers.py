"""Which workers are online, asked through Celery's remote control (short timeout, cached).

Broadcast needs a broker that supports fanout (Redis does); on the embedded SQLite
broker nobody answers, and the dashboard says "unknown" rather than "none".
GPU memory of a worker comes from the runtime its last run recorded, when it did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from app.models import Run

CACHE_S = 15.0
INSPECT_TIMEOUT_S = 0.8
_cache: dict[str, Any] = {"at": 0.0, "value": None}


@dataclass
class WorkersOnline:
    answered: bool  # False: the broker carries no broadcast (SQLite), so we cannot tell
    names: list[str] = field(default_factory=list)
    error: str | None = None


def workers_online() -> WorkersOnline:
    now = time.monotonic()
    if _cache["value"] is not None and now - _cache["at"] < CACHE_S:
        return _cache["value"]
    value = _ask_workers()
    _cache.update(at=now, value=value)
    return value


def _ask_workers() -> WorkersOnline:
    from worker.celery_app import celery_app

    try:
        replies = celery_app.control.inspect(timeout=INSPECT_TIMEOUT_S).ping() or {}
    except Exception as error:  # a transport without fanout, or a broker that is down
        return WorkersOnline(answered=False, error=f"{type(error).__name__}: {error}")
    return WorkersOnline(answered=bool(replies), names=sorted(replies))


def worker_gpu_memory_gb(session: Session, names: list[str]) -> dict[str, float]:
    """name -> total GPU memory in GB, from the runtime block of the newest run each worker trained."""
    found: dict[str, float] = {}
    rows = session.exec(
        select(Run).where(col(Run.worker).in_(names)).order_by(col(Run.created_at).desc()).limit(200)
    ).all()
    for run in rows:
        if run.worker in found or not run.worker:
            continue
        total_mb = _gpu_total_mb(run.runtime)
        if total_mb:
            found[run.worker] = total_mb / 1024
    return found


def _gpu_total_mb(runtime: dict[str, Any]) -> float | None:
    for key in ("gpu_memory_total_mb", "gpu_total_memory_mb", "device_memory_mb"):
        value = runtime.get(key)
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return None
