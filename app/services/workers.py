"""Which workers are online, from the registry they keep in the database (worker/registry.py).

A worker refreshes its row every 15 s; one not seen for ONLINE_WITHIN_S is taken as
gone (it may have died without saying so). Each row carries its GPUs, so the
memory estimate can say whether a run fits on the workers that exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlmodel import Session, col, select

from app.models import WorkerNode, utcnow

ONLINE_WITHIN_S = 60.0


@dataclass
class WorkersOnline:
    nodes: list[WorkerNode] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]


def workers_online(session: Session) -> WorkersOnline:
    since = utcnow() - timedelta(seconds=ONLINE_WITHIN_S)
    nodes = session.exec(
        select(WorkerNode).where(col(WorkerNode.last_seen_at) >= since).order_by(col(WorkerNode.name))
    ).all()
    return WorkersOnline(nodes=list(nodes))


def training_worker_gpus(online: WorkersOnline) -> list[tuple[str, float | None]]:
    """(label, GPU memory in GB or None for a CPU-only worker) for each online training worker's GPU."""
    found: list[tuple[str, float | None]] = []
    for node in online.nodes:
        if "training" not in node.queues:
            continue
        if not node.devices:
            found.append((f"{node.name} (CPU)", None))
        for device in node.devices:
            found.append((f"{node.name}: {device['name']}", device["memory_total_mb"] / 1024))
    return found
