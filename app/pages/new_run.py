"""The new-run form: presets, clone, live estimates, validation at the field, launch."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlmodel import Session
from starlette.responses import Response

from app.db import SessionDep
from app.errors import APIError
from app.pages.templating import render
from app.services import files, runs
from app.services.dataset_preview import count_samples
from app.services.estimates import KNOWN_SHAPES, estimate_run, verdict
from app.services.run_form import build_groups, config_values, lenient_config, parse_form
from app.services.run_views import planned_lr_curve
from app.services.workers import training_worker_gpus, workers_online
from core.model_catalog import BUILTIN_MODELS
from core.run_config import DEMO_DATASET_ID, PRESETS, RunConfig
from core.schedule import derive_schedule

router = APIRouter(include_in_schema=False)
PRESET_TITLES = {
    "classic": "Classic Llama-2-7B QLoRA",
    "smollm2": "Quick start: real SmolLM2-135M on the antonyms",
    "demo": "CPU demo (tiny random model, 1 minute)",
}


def dataset_choices(session: Session) -> list[dict[str, str]]:
    choices = [{"value": DEMO_DATASET_ID, "label": f"{DEMO_DATASET_ID} (shipped demo, 1,200 chats)"}]
    for record in files.list_files(session, purpose="fine-tune", limit=200):
        samples = f"{record.num_samples:,} samples" if record.num_samples else "?"
        choices.append({"value": record.id, "label": f"{record.filename} · {record.format} · {samples}"})
    return choices


def model_choices() -> list[dict[str, str]]:
    """The built-in models first (with size and licence), then the hub ids the estimates know."""
    builtin = [
        {"value": model.id, "label": f"{model.title} · {model.parameters} · {model.license}"}
        for model in BUILTIN_MODELS.values()
    ]
    known = sorted({name for name in KNOWN_SHAPES if "/" in name} - set(BUILTIN_MODELS), key=str.lower)
    return builtin + [{"value": name, "label": name} for name in known]


def form_context(
    session: Session,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    preset: str | None = None,
    clone_of: str | None = None,
    suffix: str | None = None,
) -> dict[str, Any]:
    choices = dataset_choices(session)
    dataset = values.get("dataset") or ""
    known = any(choice["value"] == dataset for choice in choices)
    return {
        "groups": build_groups(values, errors),
        "errors": errors or {},
        "preset": preset,
        "presets": PRESET_TITLES,
        "clone_of": clone_of,
        "suffix": suffix or "",
        "dataset_choices": choices,
        "dataset_value": dataset if known else "",
        "dataset_custom": "" if known else dataset,
        "model_choices": model_choices(),
        "builtin_models": list(BUILTIN_MODELS.values()),
    }


@router.get("/runs/new")
def new_run_page(
    request: Request,
    session: SessionDep,
    preset: str | None = None,
    clone: str | None = None,
    dataset: str | None = None,
) -> Response:
    clone_of = None
    if clone:
        source = runs.get_run(session, clone)
        values, clone_of, preset = dict(source.config), source.id, None
    else:
        preset = preset if preset in PRESETS else "classic"
        values = config_values(RunConfig(**PRESETS[preset]))
    if dataset:
        values["dataset"] = dataset
    return render(
        request,
        "pages/new_run.html",
        "partials/run_form.html",
        form_context(session, values, preset=preset, clone_of=clone_of),
    )


@router.post("/runs/new")
async def create_run(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    parsed = parse_form(form)
    if parsed.config is not None:
        try:
            run = runs.submit_run(session, parsed.config, suffix=parsed.suffix)
        except APIError as error:  # a missing file id or model: the same checks the API makes
            field = {"training_file": "dataset", "model": "model_name"}.get(
                error.param or "", "validation_dataset"
            )
            parsed.errors[field] = error.message
        else:
            return RedirectResponse(f"/runs/{run.id}", status_code=303)
    context = form_context(
        session,
        parsed.values,
        parsed.errors,
        suffix=parsed.suffix,
        clone_of=str(form.get("clone_of") or "") or None,
    )
    return render(request, "pages/new_run.html", "partials/run_form.html", context, status_code=400)


@router.post("/runs/new/estimate")
async def estimate(request: Request, session: SessionDep) -> Response:
    """The live panel beside the form: derived schedule, LR curve, parameters and memory."""
    parsed = parse_form(await request.form())
    config, errors = lenient_config(parsed.values)
    context: dict[str, Any] = {"errors": errors, "config": config}
    if config is not None:
        samples = count_samples(session, config.dataset)
        derived = derive_schedule(config, samples) if samples else None
        online = workers_online(session)
        context.update(
            samples=samples,
            derived=derived,
            lr_curve=planned_lr_curve(config, derived or {}),
            estimate=estimate_run(config),
            online=online,
        )
        memory = context["estimate"].memory
        if memory:
            context["worker_verdicts"] = [
                verdict(memory["total_bytes"], gigabytes, label)
                if gigabytes is not None
                else {"name": label, "status": "cpu", "gb": None, "headroom_gb": None}
                for label, gigabytes in training_worker_gpus(online)
            ]
    return render(request, "partials/estimates.html", "partials/estimates.html", context)
