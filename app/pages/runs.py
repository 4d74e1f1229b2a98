"""The runs list, a run's page, its live event stream and its cancel button."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlmodel import Session
from starlette.responses import Response

from app.config import get_settings
from app.db import SessionDep
from app.errors import APIError
from app.lifecycle import artifacts, model_names, run_states
from app.models import Run, RunStatus
from app.pages.templating import is_htmx, render, render_fragment
from app.services import run_views, runs, streaming

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 20
STATUS_FILTERS = [status.value for status in RunStatus]
RESUMABLE = {RunStatus.paused.value, RunStatus.cancelled.value, RunStatus.failed.value}


@router.get("/")
def runs_page(
    request: Request, session: SessionDep, status: str | None = None, after: str | None = None
) -> Response:
    status = status if status in STATUS_FILTERS else None
    page, has_more = runs.list_runs(session, limit=PAGE_SIZE, status=status, after=after)
    rows = run_views.run_rows(session, page)
    context = {
        "rows": rows,
        "has_more": has_more,
        "status": status,
        "after": after,
        "counts": runs.count_runs_by_status(session),
        "statuses": STATUS_FILTERS,
        "live": any(row.active for row in rows),
    }
    return render(request, "pages/runs.html", "partials/runs_table.html", context)


def is_live(run: Run) -> bool:
    """Queued or training: the page streams. Paused and finished runs change only when someone acts."""
    return run.status in {status.value for status in run_states.ACTIVE_STATUSES}


def header_context(session: Session, run: Run) -> dict[str, Any]:
    adapter_ready = run.status == RunStatus.succeeded.value and artifacts.adapter_dir(run.id).is_dir()
    return {
        "run": run,
        "progress": runs.progress(run),
        "loss": runs.latest_loss(session, run.id),
        "hint": run_views.failure_hint(run),
        "startup": run_views.startup_view(run),
        "adapter_ready": adapter_ready,
        "cancellable": not run.run_status.is_final and run.status != RunStatus.cancelling.value,
        "pausable": run.status == RunStatus.running.value,
        "resumable": run.status in RESUMABLE,
    }


def log_context(session: Session, run: Run) -> dict[str, Any]:
    events, _ = runs.list_events(session, run.id, limit=200)
    return {"run": run, "events": events}


def checkpoints_context(session: Session, run: Run) -> dict[str, Any]:
    checkpoints, _ = runs.list_checkpoints(session, run.id, limit=100)
    return {
        "run": run,
        "checkpoints": checkpoints,
        "model_name": lambda step: model_names.checkpoint_model_name(run, step),
    }


def live_fragments(session: Session, run: Run) -> dict[str, str]:
    """The run page's parts the stream re-sends when they change (SSE event name -> HTML)."""
    return {
        "status": render_fragment("partials/run_header.html", header_context(session, run)),
        "log": render_fragment("partials/run_events.html", log_context(session, run)),
        "checkpoints": render_fragment("partials/run_checkpoints.html", checkpoints_context(session, run)),
    }


@router.get("/runs/{run_id}")
def run_page(run_id: str, request: Request, session: SessionDep) -> Response:
    run = runs.get_run(session, run_id)
    config = run_views.run_config(run)
    derived = run_views.derived_values(session, run)
    context = {
        **header_context(session, run),
        **log_context(session, run),
        **checkpoints_context(session, run),
        "config_rows": run_views.config_table(run),
        "derived": derived,
        "metrics": run_views.metric_history(session, run.id),
        "last_metric_id": run_views.last_metric_id(session, run.id),
        "planned_lr": run_views.planned_lr_curve(config, derived),
        "max_grad_norm": run.config.get("max_grad_norm"),
        "live": is_live(run),
    }
    return render(request, "pages/run.html", "partials/run_header.html", context)


@router.get("/runs/{run_id}/stream")
async def run_stream(
    run_id: str,
    request: Request,
    after: int | None = None,
    last_event_id: str | None = Header(default=None),
) -> StreamingResponse:
    # No SessionDep here: a dependency's session lives until the response ends, and a stream's
    # response lasts minutes; 15 open pages held the whole connection pool. Each poll opens its own.
    start = streaming.resume_point(after, last_event_id)
    # The stream's first poll, before the response starts: a run that is missing or not the
    # viewer's is a 404, not an empty stream. It is the shared poll the stream then reads from
    # cache, so 200 pages opening at once make one database read, not 200 thread hops.
    await streaming.SHARED_POLLS.poll(run_id, start, live_fragments)
    settings = get_settings()
    client = request.client.host if request.client else "unknown"
    slot = streaming.STREAM_SLOTS.take(client, settings.sse_max_streams_per_client)
    events = streaming.run_events(run_id, start, live_fragments, settings.sse_max_connection_s, slot=slot)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _act(request: Request, session: Session, run_id: str, action: Any) -> Response:
    """Cancel, pause or resume through the runs service; answer the header (htmx) or the page."""
    try:
        run = action(session, run_id)
    except APIError as error:
        if error.status_code == 404:
            raise
        run = runs.get_run(session, run_id)  # the state moved on meanwhile: show it as it is
    if is_htmx(request):
        return render(
            request, "partials/run_header.html", "partials/run_header.html", header_context(session, run)
        )
    return RedirectResponse(f"/runs/{run.id}", status_code=303)


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: str, request: Request, session: SessionDep) -> Response:
    return _act(request, session, run_id, runs.cancel_run)


@router.post("/runs/{run_id}/pause")
def pause(run_id: str, request: Request, session: SessionDep) -> Response:
    return _act(request, session, run_id, runs.pause_run)


@router.post("/runs/{run_id}/resume")
def resume(run_id: str, request: Request, session: SessionDep) -> Response:
    """A plain form post: the redirect reloads the page, which reconnects the live stream."""
    return _act(request, session, run_id, runs.resume_run)
