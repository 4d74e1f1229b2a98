"""Datasets: upload with progress, detected format, rendered samples and token lengths."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Request, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.db import SessionDep
from app.errors import APIError
from app.models import DataFile
from app.pages.templating import render
from app.services import files
from app.services.dataset_preview import build_preview, dataset_path
from core.formats import DatasetError
from core.run_config import DEMO_DATASET_ID, DEMO_MODEL_ID

router = APIRouter(include_in_schema=False)


@router.get("/datasets")
def datasets_page(request: Request, session: SessionDep) -> Response:
    records = files.list_files(session, purpose="fine-tune", limit=200)
    return render(
        request,
        "pages/datasets.html",
        "partials/datasets_table.html",
        {"records": records, "demo_dataset": DEMO_DATASET_ID},
    )


@router.post("/datasets")
async def upload_dataset(request: Request, session: SessionDep, file: UploadFile = File(...)) -> Response:
    """Store and validate the file (the same service as POST /v1/files), then show its preview."""
    try:
        record = await run_in_threadpool(
            files.store_upload, session, file.file, file.filename or "upload", "fine-tune"
        )
    except APIError as error:
        return render(
            request,
            "partials/upload_result.html",
            "partials/upload_result.html",
            {"upload_error": error.message},
            status_code=400,
        )
    response = await run_in_threadpool(
        _preview_response, request, session, record.id, DEMO_MODEL_ID, None, "partials/upload_result.html"
    )
    # The answer also carries the refreshed list of datasets (an out-of-band swap).
    response.headers["HX-Push-Url"] = f"/datasets/{record.id}"
    return response


@router.get("/datasets/{reference}")
def dataset_page(
    reference: str,
    request: Request,
    session: SessionDep,
    model: str = DEMO_MODEL_ID,
    max_seq_length: int | None = None,
) -> Response:
    return _preview_response(
        request, session, reference, model or DEMO_MODEL_ID, max_seq_length, "partials/dataset_preview.html"
    )


def _preview_response(
    request: Request,
    session: SessionDep,
    reference: str,
    model: str,
    max_seq_length: int | None,
    fragment: str,
) -> Response:
    path = dataset_path(session, reference)
    if path is None:
        raise APIError(404, f"No dataset '{reference}' on this server", code="dataset_not_found")
    record = session.get(DataFile, reference)
    context: dict[str, Any] = {
        "reference": reference,
        "record": record,
        "model": model,
        "preview": None,
        "preview_error": None,
        "records": files.list_files(session, purpose="fine-tune", limit=200),
        "demo_dataset": DEMO_DATASET_ID,
    }
    try:
        context["preview"] = build_preview(
            path, record.filename if record else reference, model, max_seq_length
        )
    except DatasetError as error:
        context["preview_error"] = str(error)
    return render(request, "pages/dataset.html", fragment, context)
