"""Read models for the run screens: list rows, derived values, the planned LR curve, failure hints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, func, select

from app.lifecycle import run_states
from app.models import Metric, Run, RunStatus
from app.services import runs
from app.services.dataset_preview import count_samples
from app.services.ownership import only_visible
from core.event_shapes import STARTUP_PHASES
from core.run_config import RunConfig, field_docs
from core.schedule import derive_schedule, lr_at

LR_CURVE_POINTS = 200


@dataclass
class RunRow:
    run: Run
    progress: dict[str, Any]
    loss: float | None

    @property
    def active(self) -> bool:
        return self.run.status in (status.value for status in run_states.ACTIVE_STATUSES)


def run_rows(session: Session, page: list[Run]) -> list[RunRow]:
    return [RunRow(run, runs.progress(run), runs.latest_loss(session, run.id)) for run in page]


def run_config(run: Run) -> RunConfig | None:
    try:
        return RunConfig(**run.config)
    except ValidationError:  # a config stored by an older schema still shows, without derived values
        return None


def derived_values(session: Session, run: Run) -> dict[str, Any]:
    """What the worker recorded; before it starts, the same arithmetic from the config and the data."""
    if run.derived:
        return dict(run.derived)
    config = run_config(run)
    samples = count_samples(session, run.config["dataset"]) if config else None
    if config is None or not samples:
        return {}
    return {**derive_schedule(config, samples), "planned": True}


def planned_lr_curve(config: RunConfig | None, derived: dict[str, Any]) -> list[list[float]] | None:
    """[[steps], [lr]] of the schedule the trainer will follow, or None when it cannot be drawn."""
    total = derived.get("total_steps")
    if config is None or not total:
        return None
    warmup = derived.get("warmup_steps", 0)
    stride = max(1, total // LR_CURVE_POINTS)
    steps = list(range(1, total + 1, stride))  # optimizer steps are 1-based (lr_at's convention)
    if steps[-1] != total:
        steps.append(total)
    values = [lr_at(step, config, total, warmup) for step in steps]
    if any(value is None for value in values):
        return None
    return [steps, values]  # type: ignore[list-item]


def config_table(run: Run) -> list[dict[str, Any]]:
    """Every config value with its one-line description, in the form's order."""
    docs = field_docs()
    return [
        {
            "name": name,
            "value": run.config.get(name),
            "description": doc["description"],
            "group": doc["group"],
        }
        for name, doc in docs.items()
        if name in run.config
    ]


def last_metric_id(session: Session, run_id: str) -> int:
    return session.exec(select(func.max(Metric.id)).where(Metric.run_id == run_id)).first() or 0


def metric_history(session: Session, run_id: str) -> list[dict[str, Any]]:
    from app.services.streaming import metric_payload

    return [metric_payload(metric) for metric in run_states.list_metrics(session, run_id)]


OOM_MARKERS = ("out of memory", "outofmemoryerror", "cuda oom", "cublas_status_alloc_failed")


def failure_hint(run: Run) -> dict[str, Any] | None:
    """What to change when a run failed: out of memory has a standard list; others point at the field."""
    if run.status != RunStatus.failed.value:
        return None
    message = (run.error_message or "").lower()
    config = run.config
    if any(marker in message for marker in OOM_MARKERS):
        batch = config.get("per_device_train_batch_size", 1)
        accumulation = config.get("gradient_accumulation_steps", 1)
        steps = [
            f"Halve per_device_train_batch_size ({batch} → {max(1, batch // 2)}) and double "
            f"gradient_accumulation_steps ({accumulation} → {accumulation * 2}): same effective batch, "
            "half the activations.",
            "Lower max_seq_length: activations grow linearly with it.",
        ]
        if not config.get("gradient_checkpointing"):
            steps.insert(0, "Turn on gradient_checkpointing: activations shrink from every layer to one.")
        if not config.get("use_nested_quant"):
            steps.append("Turn on use_nested_quant: about 0.3 GB less on a 7B model.")
        if config.get("target_modules") == "all-linear" or config.get("lora_r", 0) > 16:
            steps.append("Adapt fewer modules or lower lora_r: each LoRA parameter costs 16 bytes with Adam.")
        return {"title": "The GPU ran out of memory", "steps": steps}
    if run.error_param:
        return {
            "title": f"Check the field {run.error_param}",
            "steps": ["Clone this run, correct the field and launch again."],
        }
    return {
        "title": "Training stopped with an error",
        "steps": ["The event log below has the worker's messages; clone the run to try again with changes."],
    }


def compare_runs(session: Session, run_ids: list[str]) -> list[Run]:
    found = session.exec(only_visible(select(Run), Run.owner).where(col(Run.id).in_(run_ids))).all()
    order = {run_id: index for index, run_id in enumerate(run_ids)}
    return sorted(found, key=lambda run: order.get(run.id, 0))


def config_differences(page: list[Run]) -> list[dict[str, Any]]:
    """The config fields whose values are not the same in every run (all of them when one run)."""
    names = [name for name in field_docs() if any(name in run.config for run in page)]
    rows = []
    for name in names:
        values = [run.config.get(name) for run in page]
        if len(page) < 2 or any(value != values[0] for value in values[1:]):
            rows.append({"name": name, "values": values})
    return rows


def startup_view(run: Run) -> dict[str, Any]:
    """What the run's first minute is spent on: the phase now (while no step has ended), or,
    once step 1 is done, the seconds to it and where they went."""
    runtime = run.runtime or {}
    timings = runtime.get("timings") or {}
    view: dict[str, Any] = {"phase": None, "first_step_s": None, "parts": []}
    phase = runtime.get("phase")
    if run.status in (status.value for status in run_states.ACTIVE_STATUSES) and isinstance(phase, dict):
        view["phase"] = {"name": phase.get("name"), "since": phase.get("since")}
    first_step = timings.get("first_step_s")
    if isinstance(first_step, int | float):
        view["first_step_s"] = float(first_step)
        before = 0.0
        for key, label in STARTUP_PHASES:
            if isinstance(timings.get(key), int | float):
                view["parts"].append((label, float(timings[key])))
                before += float(timings[key])
        view["parts"].append(("step 1", max(float(first_step) - before, 0.0)))
    return view
