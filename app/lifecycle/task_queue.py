"""The server side's handle on the Celery app: it sends tasks by their names (core/queues.py)
and reads their results, without importing the worker's code."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.config import get_settings
from core.queues import make_celery


@lru_cache
def celery_client() -> Celery:
    settings = get_settings()
    # Not the current app: in a worker process the worker's own app (with its tasks) stays current.
    return make_celery(
        settings.resolved_broker_url, settings.resolved_result_backend_url, set_as_current=False
    )
