"""Compare: overlay the curves of several runs and list the config values that differ."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.db import SessionDep
from app.pages.templating import render
from app.services import run_views, runs

router = APIRouter(include_in_schema=False)
MAX_COMPARED = 8


@router.get("/compare")
def compare_page(
    request: Request,
    session: SessionDep,
    run_ids: list[str] = Query(default=[], alias="runs"),
    x: str = "step",
) -> Response:
    chosen = run_views.compare_runs(session, run_ids[:MAX_COMPARED])
    recent, _ = runs.list_runs(session, limit=50)
    series = [
        {
            "id": run.id,
            "label": run.suffix or run.id[-8:],
            "metrics": run_views.metric_history(session, run.id),
        }
        for run in chosen
    ]
    context = {
        "chosen": chosen,
        "chosen_ids": [run.id for run in chosen],
        "recent": recent,
        "series": series,
        "x": "tokens" if x == "tokens" else "step",
        "differences": run_views.config_differences(chosen) if chosen else [],
    }
    return render(request, "pages/compare.html", "partials/compare_result.html", context)
