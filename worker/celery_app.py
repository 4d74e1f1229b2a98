"""The Celery app and its settings: nothing else.

Queues: `training` (one fine-tune at a time per GPU: concurrency 1, prefetch 1) and
`inference` (chat completions against finished adapters). Late acks stay off: a
message is acknowledged when a worker takes it, and the database decides what
happens to a run whose worker vanished (worker/orphans.py re-queues it from its
last checkpoint), so no broker visibility timeout has to outlast the longest run.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.config import get_settings

TRAINING_QUEUE = "training"
INFERENCE_QUEUE = "inference"
# Webhook deliveries: short HTTP calls, taken by the inference worker between chat requests.
WEBHOOK_QUEUE = "webhooks"


def _transport_options(broker_url: str) -> dict[str, Any]:
    if broker_url.startswith("sqla+sqlite"):
        # kombu hands these to SQLAlchemy's create_engine: several processes share the
        # SQLite file, so wait for its lock instead of failing at once.
        return {"connect_args": {"timeout": 30}}
    return {}


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery(
        "loraboard",
        broker=settings.resolved_broker_url,
        backend=settings.resolved_result_backend_url,
        include=["worker.tasks"],
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_routes={
            "loraboard.train_run": {"queue": TRAINING_QUEUE},
            "loraboard.chat_completion": {"queue": INFERENCE_QUEUE},
            "loraboard.deliver_webhook": {"queue": WEBHOOK_QUEUE},
        },
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=None,
        # Chat results are read once by the waiting API request, then useless.
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings.resolved_broker_url),
        worker_hijack_root_logger=False,
    )
    return app


celery_app = make_celery()
