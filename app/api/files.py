"""/v1/files: upload, list, read and delete training files (OpenAI's Files API)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app.api import schemas
from app.api.schemas import ERROR_RESPONSES
from app.api.shapes import file_list, file_object
from app.db import SessionDep
from app.services import files

router = APIRouter(prefix="/files", tags=["files"], responses=ERROR_RESPONSES)


@router.post(
    "",
    summary="Upload a training file (JSONL, JSON, CSV or Parquet); validated before it is accepted",
)
async def upload_file(
    session: SessionDep, file: UploadFile = File(...), purpose: str = Form(...)
) -> schemas.FileObject:
    record = await run_in_threadpool(
        files.store_upload, session, file.file, file.filename or "upload", purpose
    )
    return file_object(record)


@router.get("", summary="List files, newest first")
def list_files(
    session: SessionDep,
    purpose: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> schemas.FileList:
    records = files.list_files(session, purpose=purpose, limit=limit + 1, after=after, order=order)
    return file_list(records[:limit], len(records) > limit)


@router.get("/{file_id}", summary="Retrieve a file's metadata")
def retrieve_file(file_id: str, session: SessionDep) -> schemas.FileObject:
    return file_object(files.get_file(session, file_id))


@router.get("/{file_id}/content", summary="Download a file's content", response_class=FileResponse)
def file_content(file_id: str, session: SessionDep) -> FileResponse:
    record = files.get_file(session, file_id)
    return FileResponse(record.path, filename=record.filename)


@router.delete("/{file_id}", summary="Delete a file")
def delete_file(file_id: str, session: SessionDep) -> schemas.FileDeleted:
    files.delete_file(session, file_id)
    return schemas.FileDeleted(id=file_id, deleted=True)
