"""Start a worker: `python -m worker [training|inference]`; or `python -m worker prepare-models`.

training: one fine-tune at a time (one process per GPU), a fresh child process per
run so GPU memory is returned between runs. inference: chat completions, a single
process that keeps the loaded models between requests; it also delivers the webhooks (a
short HTTP call each). Not the training worker too: a finished job's webhook would wait
behind the next queued run, and two workers declaring one queue at once race on the
SQLite broker's queue table (UNIQUE constraint failed: kombu_queue.name).
"""

from __future__ import annotations

import sys

from core.queues import INFERENCE_QUEUE, TRAINING_QUEUE, WEBHOOK_QUEUE
from worker.celery_app import celery_app
from worker.prepare_models import prepare_models

ROLES = {
    "training": [
        "-Q",
        TRAINING_QUEUE,
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "--max-tasks-per-child",
        "1",
        "-n",
        f"{TRAINING_QUEUE}@%h",
    ],
    "inference": [
        "-Q",
        f"{INFERENCE_QUEUE},{WEBHOOK_QUEUE}",
        "--pool",
        "solo",
        "-n",
        f"{INFERENCE_QUEUE}@%h",
    ],
}


def main(argv: list[str]) -> None:
    role = argv[0] if argv else "training"
    if role == "prepare-models":
        raise SystemExit(prepare_models())
    if role not in ROLES:
        raise SystemExit(
            f"usage: python -m worker [{'|'.join(ROLES)}] [celery worker options] | prepare-models"
        )
    if role == "training":
        from celery.signals import worker_process_init

        from app.config import get_settings
        from worker.training.acceleration.compile import keep_compile_caches_in
        from worker.training.child_warmup import start_warmup
        from worker.training.preload import preload_training_libraries

        # Both before the pool forks: each run's child starts with the libraries imported and
        # torch.compile's caches on the data volume.
        preload_training_libraries()
        keep_compile_caches_in(get_settings().compile_cache_dir)
        # Then each child, once forked, readies what the parent could not while it waits for a run.
        worker_process_init.connect(start_warmup, weak=False)
    celery_app.worker_main(["worker", "--loglevel", "INFO", *ROLES[role], *argv[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
