"""The worker registry: announced workers are online until they stop refreshing."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from app.db import get_engine
from app.migrate import upgrade
from app.models import WorkerNode, utcnow
from app.services.workers import training_worker_gpus, workers_online
from worker.registry import announce


def test_announced_workers_are_online_and_stale_ones_are_not() -> None:
    upgrade()
    announce("training@unit-a", ["training"])
    announce("inference@unit-a", ["inference"])
    with Session(get_engine()) as session:
        stale = WorkerNode(
            name="training@gone",
            hostname="gone",
            queues=["training"],
            devices=[{"name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559}],
            last_seen_at=utcnow() - timedelta(minutes=5),
        )
        session.merge(stale)
        session.commit()
        online = workers_online(session)
    assert {"training@unit-a", "inference@unit-a"} <= set(online.names)
    assert "training@gone" not in online.names
    # This machine has no GPU: the training worker is listed as a CPU worker, the inference one not at all.
    assert ("training@unit-a (CPU)", None) in training_worker_gpus(online)
    assert not any(label.startswith("inference@") for label, _ in training_worker_gpus(online))


def test_gpu_workers_report_their_memory() -> None:
    upgrade()
    with Session(get_engine()) as session:
        session.merge(
            WorkerNode(
                name="training@gpu-1",
                hostname="gpu-1",
                queues=["training"],
                devices=[{"name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559}],
                last_seen_at=utcnow(),
            )
        )
        session.commit()
        gpus = dict(training_worker_gpus(workers_online(session)))
    assert round(gpus["training@gpu-1: NVIDIA H100 80GB HBM3"]) == 80
