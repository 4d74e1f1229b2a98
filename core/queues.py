"""The Celery app both sides share by name: its queues, its task names and its settings.

The server and the orphan watcher enqueue with `send_task(<name>)`, never importing the
worker's code; the worker's tasks register under the same names (worker/tasks.py).

Queues: `training` (one fine-tune at a time per GPU: concurrency 1, prefetch 1) and
`inference` (chat completions against finished adapters). Late acks stay off: a
message is acknowledged when a worker takes it, and the database decides what
happens to a run whose worker vanished (app/lifecycle/orphans.py re-queues it from its
last checkpoint), so no broker visibility timeout has to outlast the longest run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

CELERY_APP_NAME = "loraboard"

TRAINING_QUEUE = "training"
INFERENCE_QUEUE = "inference"
# Webhook deliveries: short HTTP calls, taken by the inference worker between chat requests.
WEBHOOK_QUEUE = "webhooks"

TRAIN_RUN_TASK = "loraboard.train_run"
CHAT_COMPLETION_TASK = "loraboard.chat_completion"
DELIVER_WEBHOOK_TASK = "loraboard.deliver_webhook"

TASK_ROUTES = {
    TRAIN_RUN_TASK: {"queue": TRAINING_QUEUE},
    CHAT_COMPLETION_TASK: {"queue": INFERENCE_QUEUE},
    DELIVER_WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},
}


def _transport_options(broker_url: str) -> dict[str, Any]:
    if broker_url.startswith("sqla+sqlite"):
        # kombu hands these to SQLAlchemy's create_engine: several processes share the
        # SQLite file, so wait for its lock instead of failing at once.
        return {"connect_args": {"timeout": 30}}
    return {}


def make_celery(
    broker_url: str, backend_url: str, *, include: Sequence[str] = (), set_as_current: bool = True
) -> Celery:
    """The Celery app with Loraboard's settings; the worker passes `include` to load its tasks."""
    app = Celery(
        CELERY_APP_NAME,
        broker=broker_url,
        backend=backend_url,
        include=list(include),
        set_as_current=set_as_current,
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_routes=TASK_ROUTES,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=None,
        # Chat results are read once by the waiting API request, then useless.
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(broker_url),
        worker_hijack_root_logger=False,
    )
    return app
