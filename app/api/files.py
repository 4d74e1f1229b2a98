"""/v1/files: upload, list, read and delete training files (OpenAI's Files API)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app.api.shapes import file_object, page
from app.db import SessionDep
from app.services import files

router = APIRouter(prefix="/files", tags=["files"])


@router.post(
    "",
    summary="Upload a training file (JSONL, JSON, CSV or Parquet); validated before it is accepted",
)
async def upload_file(
    session: SessionDep, file: UploadFile = File(...), purpose: str = Form(...)
) -> dict[str, Any]:
    record = await run_in_threadpool(
        files.store_upload, session, file.file, file.filename or "upload", purpose
    )
    return file_object(record)


@router.get("", summary="List files, newest first")
def list_files(
    session: SessionDep,
    purpose: str | None = None,
    limit: int = 10000,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    records = files.list_files(session, purpose=purpose, limit=limit + 1, after=after, order=order)
    return page([file_object(record) for record in records[:limit]], len(records) > limit)


@router.get("/{file_id}", summary="Retrieve a file's metadata")
def retrieve_file(file_id: str, session: SessionDep) -> dict[str, Any]:
    return file_object(files.get_file(session, file_id))


@router.get("/{file_id}/content", summary="Download a file's content", response_class=FileResponse)
def file_content(file_id: str, session: SessionDep) -> FileResponse:
    record = files.get_file(session, file_id)
    return FileResponse(record.path, filename=record.filename)


@router.delete("/{file_id}", summary="Delete a file")
def delete_file(file_id: str, session: SessionDep) -> dict[str, Any]:
    files.delete_file(session, file_id)
    return {"id": file_id, "object": "file", "deleted": True}
