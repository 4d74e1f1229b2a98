"""Workers announce themselves in the database while they live (the dashboard's "workers online").

GPUs are read with nvidia-smi, not torch: initialising CUDA in a prefork parent
would break CUDA in the children that train.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlmodel import Session

from app.db import get_engine
from app.models import WorkerNode, utcnow

log = logging.getLogger(__name__)
HEARTBEAT_S = 15.0
_stop = threading.Event()


def visible_gpus() -> list[dict[str, Any]]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    devices = []
    for line in output.strip().splitlines():
        name, _, memory = line.rpartition(",")
        if name and memory.strip().isdigit():
            devices.append({"name": name.strip(), "memory_total_mb": int(memory)})
    return devices


def announce(name: str, queues: list[str]) -> None:
    with Session(get_engine()) as session:
        node = session.get(WorkerNode, name) or WorkerNode(name=name, hostname=socket.gethostname())
        node.queues = queues
        node.devices = visible_gpus()
        node.started_at = node.last_seen_at = utcnow()
        session.add(node)
        session.commit()


def _keep_alive(name: str) -> None:
    while not _stop.wait(HEARTBEAT_S):
        try:
            with Session(get_engine()) as session:
                node = session.get(WorkerNode, name)
                if node is not None:
                    node.last_seen_at = utcnow()
                    session.add(node)
                    session.commit()
        except Exception:
            log.warning("worker heartbeat failed", exc_info=True)


def consumed_queues(worker: Any) -> list[str]:
    """The queues a starting Celery worker (the worker_ready sender) consumes."""
    return sorted(queue.name for queue in worker.app.amqp.queues.consume_from.values())


@worker_ready.connect
def _on_ready(sender: Any, **_kwargs: Any) -> None:
    announce(sender.hostname, consumed_queues(sender))
    threading.Thread(target=_keep_alive, args=(sender.hostname,), name="worker-registry", daemon=True).start()


@worker_shutdown.connect
def _on_shutdown(sender: Any, **_kwargs: Any) -> None:
    _stop.set()
    with Session(get_engine()) as session:
        node = session.get(WorkerNode, sender.hostname)
        if node is not None:
            session.delete(node)
            session.commit()
