"""The worker's Celery app: core/queues.py's settings, with the worker's tasks loaded."""

from __future__ import annotations

from app.config import get_settings
from core.queues import make_celery

_settings = get_settings()
celery_app = make_celery(
    _settings.resolved_broker_url, _settings.resolved_result_backend_url, include=["worker.tasks"]
)
