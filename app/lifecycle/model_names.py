"""The names a fine-tuned model goes by: OpenAI's ft:<base>:<suffix>:<job id>, and its checkpoints'."""

from __future__ import annotations

import re

from app.models import Run

_MODEL_REF = re.compile(r":(?P<run_id>ftjob-[0-9a-f]+)(?::ckpt-step-(?P<step>\d+))?$")


def fine_tuned_model_name(run: Run) -> str:
    """OpenAI's shape, ft:<base>:<suffix>:<job id>; the job id makes it unique and resolvable."""
    base = run.config["model_name"]
    return f"ft:{base}:{run.suffix or 'loraboard'}:{run.id}"


def checkpoint_model_name(run: Run, step: int) -> str:
    return f"{fine_tuned_model_name(run)}:ckpt-step-{step}"


def parse_model_reference(model: str) -> tuple[str, int | None] | None:
    """'ft:…:ftjob-…[:ckpt-step-N]' -> (run id, checkpoint step or None); a base model id -> None."""
    match = _MODEL_REF.search(model)
    if not match or not model.startswith("ft:"):
        return None
    step = match.group("step")
    return match.group("run_id"), int(step) if step else None
