"""Runs whose worker vanished: detected from their heartbeat and re-queued
(docs/architecture.md, convention 5).

A run resumes from its last checkpoint (the task passes resume_from_checkpoint when
checkpoints exist), so a crash costs at most save_steps steps. A run that was being
cancelled when its worker died is simply marked cancelled.
"""

from __future__ import annotations

import logging

from sqlmodel import Session

from app.config import get_settings
from app.lifecycle import run_states
from app.models import RunStatus

log = logging.getLogger(__name__)


def recover_orphans(session: Session, stale_after_s: float, worker: str | None = None) -> list[str]:
    recovered = []
    reason = (
        f"Worker {worker} restarted" if worker else f"No heartbeat for {stale_after_s:.0f} s: worker lost"
    )
    max_attempts = get_settings().max_run_attempts
    for run in run_states.find_stale_runs(session, stale_after_s, worker=worker):
        if run.status in (RunStatus.cancelling, RunStatus.pausing):
            run_states.mark_stopped(session, run.id, run.current_step)
        elif run.attempts >= max_attempts:
            # A run that kills its worker every time (out of host memory, a crash in a kernel)
            # would otherwise be re-queued forever.
            run_states.mark_failed(
                session,
                run.id,
                f"The worker was lost {run.attempts} times while training this job; it is not "
                f"re-queued again (LORABOARD_MAX_RUN_ATTEMPTS={max_attempts}). Resume it to try again.",
                code="worker_lost",
            )
            log.warning("gave up on run %s after %d attempts", run.id, run.attempts)
        elif run_states.requeue_orphan(session, run.id, reason):
            session.refresh(run)
            run_states.enqueue_run(session, run)
            recovered.append(run.id)
            log.warning("re-queued orphaned run %s (%s)", run.id, reason)
    return recovered
