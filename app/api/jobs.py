"""/v1/fine_tuning/jobs: create, list, retrieve, cancel; events, checkpoints, downloads."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import FileResponse

from app.api import schemas
from app.api.schemas import ERROR_RESPONSES
from app.api.shapes import checkpoint_list, event_object, job_object
from app.db import SessionDep
from app.errors import APIError
from app.lifecycle import artifacts
from app.services import runs, webhooks
from app.services.job_requests import JobCreate, run_config_from_request

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], responses=ERROR_RESPONSES)


@router.post("", summary="Create a fine-tuning job; it is queued for a worker")
def create_job(request: JobCreate, session: SessionDep) -> schemas.FineTuningJob:
    config = run_config_from_request(request)
    webhooks.check_job_webhook(request.metadata)
    run = runs.submit_run(session, config, suffix=request.suffix, metadata=request.metadata)
    return job_object(run)


@router.get("", summary="List jobs, newest first (cursor pagination with after/limit)")
def list_jobs(
    request: Request,
    session: SessionDep,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=100),
    status: str | None = None,
    metadata: str | None = Query(
        None,
        description="JSON object, or metadata[key]=value pairs "
        "as OpenAI clients send them: only jobs whose metadata matches",
    ),
) -> schemas.JobList:
    wanted = _metadata_filter(request, metadata)
    page_runs, has_more = runs.list_runs(session, limit=limit, after=after, status=status, metadata=wanted)
    return schemas.JobList(data=[job_object(run) for run in page_runs], has_more=has_more)


def _metadata_filter(request: Request, metadata: str | None) -> dict[str, str] | None:
    wanted = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    if metadata:
        try:
            wanted.update(json.loads(metadata))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise APIError(400, "metadata must be a JSON object", param="metadata") from error
    return wanted or None


@router.get("/{fine_tuning_job_id}", summary="Retrieve a job")
def retrieve_job(fine_tuning_job_id: str, session: SessionDep) -> schemas.FineTuningJob:
    return job_object(runs.get_run(session, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", summary="Cancel a queued or running job")
def cancel_job(fine_tuning_job_id: str, session: SessionDep) -> schemas.FineTuningJob:
    return job_object(runs.cancel_run(session, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/pause", summary="Pause a running job: it saves a checkpoint and stops")
def pause_job(fine_tuning_job_id: str, session: SessionDep) -> schemas.FineTuningJob:
    return job_object(runs.pause_run(session, fine_tuning_job_id))


@router.post(
    "/{fine_tuning_job_id}/resume",
    summary="Resume a paused, cancelled or failed job from its last checkpoint",
)
def resume_job(fine_tuning_job_id: str, session: SessionDep) -> schemas.FineTuningJob:
    return job_object(runs.resume_run(session, fine_tuning_job_id))


@router.get("/{fine_tuning_job_id}/events", summary="The job's events, newest first (messages and metrics)")
def list_events(
    fine_tuning_job_id: str,
    session: SessionDep,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=1000),
) -> schemas.EventList:
    runs.get_run(session, fine_tuning_job_id)
    after_id = None
    if after:
        try:
            after_id = int(after.removeprefix("ftevent-"))
        except ValueError as error:
            raise APIError(400, f"Invalid event id '{after}'", param="after") from error
    events, has_more = runs.list_events(session, fine_tuning_job_id, limit=limit, after=after_id)
    return schemas.EventList(data=[event_object(event) for event in events], has_more=has_more)


@router.get("/{fine_tuning_job_id}/checkpoints", summary="The job's checkpoints, newest first")
def list_checkpoints(
    fine_tuning_job_id: str,
    session: SessionDep,
    after: str | None = None,
    limit: int = Query(10, ge=1, le=100),
) -> schemas.CheckpointList:
    run = runs.get_run(session, fine_tuning_job_id)
    checkpoints, has_more = runs.list_checkpoints(session, run.id, limit=limit, after=after)
    return checkpoint_list(run, checkpoints, has_more)


def _zip_response(directory: Path, name: str, background: BackgroundTasks) -> FileResponse:
    archive = artifacts.zip_directory(directory, name)
    background.add_task(archive.unlink, missing_ok=True)
    return FileResponse(archive, media_type="application/zip", filename=f"{name}.zip")


@router.get(
    "/{fine_tuning_job_id}/adapter",
    summary="Download the trained adapter as a zip",
    response_class=FileResponse,
)
def download_adapter(
    fine_tuning_job_id: str, session: SessionDep, background: BackgroundTasks
) -> FileResponse:
    run = runs.get_run(session, fine_tuning_job_id)
    directory = artifacts.adapter_dir(run.id)
    if run.status != "succeeded" or not directory.is_dir():
        raise APIError(
            409,
            f"Job {run.id} has no adapter yet (status: {run.status})",
            param="fine_tuning_job_id",
            code="adapter_not_ready",
        )
    return _zip_response(directory, f"{run.id}-adapter", background)


@router.get(
    "/{fine_tuning_job_id}/checkpoints/{checkpoint_id}/download",
    summary="Download one checkpoint's adapter as a zip",
    response_class=FileResponse,
)
def download_checkpoint(
    fine_tuning_job_id: str, checkpoint_id: str, session: SessionDep, background: BackgroundTasks
) -> FileResponse:
    run = runs.get_run(session, fine_tuning_job_id)
    checkpoint = runs.get_checkpoint(session, run.id, checkpoint_id)
    directory = Path(checkpoint.path)
    if not directory.is_dir():
        raise APIError(
            410,
            f"Checkpoint {checkpoint_id} was removed (save_total_limit)",
            param="checkpoint_id",
            code="checkpoint_removed",
        )
    return _zip_response(directory, f"{run.id}-checkpoint-{checkpoint.step}", background)
