"""A training run's child process readies itself while it waits for the run.

The training worker forks the child for the next run as soon as the last one ends (prefork
pool, one task per child), and at the worker's start: the child mostly waits idle for its
run. It spends the wait on what the parent cannot do before forking (worker/training/
preload.py): importing bitsandbytes, peft and trl, which touch CUDA when imported, making
the CUDA context and, on a GPU, starting Inductor's pool of compile workers (which
torch.compile would otherwise start at a run's first step). The run then starts with them
done instead of paying for them before its first step. The cost: an idle training worker
holds a CUDA context (a few hundred MB of its GPU's memory) and, on a GPU, the compile
workers' processes until its next run; a training worker owns its GPU anyway.

It runs on a thread, so that the child answers the pool at once (Celery kills a child that
takes more than a few seconds to report ready); a run joins the thread before it starts.
A failure here is only logged: the run imports the same modules itself and reports any error.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

log = logging.getLogger(__name__)

WARMED = (
    "bitsandbytes",
    "peft",
    "trl",
    "worker.training.trainer",
    "worker.training.acceleration",
)

_warmup: threading.Thread | None = None


def start_warmup(**_signal_kwargs: object) -> None:
    """Begin readying this child (a Celery worker_process_init handler)."""
    global _warmup
    _warmup = threading.Thread(target=_ready_child, name="training-child-warmup", daemon=True)
    _warmup.start()


def wait_for_warmup() -> None:
    """Until the child's warm-up (if it began one) is over, so a run never imports beside it."""
    if _warmup is not None:
        _warmup.join()


def _ready_child() -> None:
    started = time.perf_counter()
    try:
        for name in WARMED:
            importlib.import_module(name)
        import torch

        if torch.cuda.is_available():
            torch.zeros(1, device="cuda")  # the CUDA context, which the run's first tensor would make
            from torch._inductor.async_compile import maybe_warm_pool

            maybe_warm_pool()  # a no-op without triton or with TORCH_WARM_POOL=0
    except Exception:
        log.warning("the training child's warm-up failed; the run will import what it needs", exc_info=True)
        return
    log.info("training child ready in %.1f s", time.perf_counter() - started)
