"""Webhooks as OpenAI sends them: fine_tuning.job.succeeded, .failed and .cancelled.

A job's URL is its metadata's `webhook_url`, else the deployment's LORABOARD_WEBHOOK_URL.
A state change to a final status queues the event here, after its commit; a worker
delivers it (worker/webhook_delivery.py).
"""

from __future__ import annotations

import secrets
import time

from sqlmodel import Session

from app.config import get_settings
from app.lifecycle.task_queue import celery_client
from app.models import Run
from core.queues import DELIVER_WEBHOOK_TASK

EVENT_TYPES = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}
METADATA_KEY = "webhook_url"


def webhook_url(run: Run) -> str | None:
    return (run.user_metadata or {}).get(METADATA_KEY) or get_settings().webhook_url


def notify(session: Session, run_id: str, status: str) -> None:
    """Queue the event of a job that just reached a final status (call after the commit)."""
    run = session.get(Run, run_id)
    if run is None or status not in EVENT_TYPES or not webhook_url(run) or not get_settings().webhook_secret:
        return
    celery_client().send_task(
        DELIVER_WEBHOOK_TASK,
        kwargs={
            "run_id": run_id,
            "event_id": f"evt_{secrets.token_hex(12)}",
            "event_type": EVENT_TYPES[status],
            "created_at": int(time.time()),
        },
    )
