"""Uploaded datasets: stored under the data directory, validated before they are accepted."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from sqlmodel import Session, col, select

from app.config import get_settings
from app.errors import APIError, not_found
from app.lifecycle import run_states
from app.models import DataFile, Run, RunStatus, new_id
from app.services.ownership import new_owner, only_visible, visible
from core.formats import SUPPORTED_EXTENSIONS, DatasetError, ReadLimits, validate_file

UPLOAD_PURPOSES = ("fine-tune",)

CHUNK = 1 << 20


def store_upload(session: Session, stream: BinaryIO, filename: str, purpose: str) -> DataFile:
    """Save, validate and register an uploaded training file; a malformed one is refused whole."""
    if purpose not in UPLOAD_PURPOSES:
        raise APIError(400, f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}", param="purpose")
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise APIError(
            400,
            f"Unsupported file type '{suffix or filename}': upload one of {', '.join(SUPPORTED_EXTENSIONS)}",
            param="file",
            code="invalid_file_format",
        )
    settings = get_settings()
    file_id = new_id("file")
    path = settings.files_dir / f"{file_id}{suffix}"
    size = _copy_limited(stream, path, settings.max_upload_mb * CHUNK)
    try:
        return _register_upload(session, path, file_id, filename, purpose, size)
    except BaseException:
        # Refused or broken, the bytes must not stay behind: no file on disk without its row.
        path.unlink(missing_ok=True)
        raise


def upload_body_limit() -> int:
    """The largest request body an upload route reads: the file's limit plus room for the multipart
    envelope. Starlette refuses a larger Content-Length before reading, and stops a body that grows past."""
    return get_settings().max_upload_mb * CHUNK + CHUNK


def dataset_limits() -> ReadLimits:
    settings = get_settings()
    return ReadLimits(
        max_bytes=settings.max_dataset_mb * CHUNK,
        max_rows=settings.max_dataset_rows,
        max_columns=settings.max_dataset_columns,
        max_depth=settings.max_json_depth,
    )


def _register_upload(
    session: Session, path: Path, file_id: str, filename: str, purpose: str, size: int
) -> DataFile:
    try:
        summary = validate_file(path, limits=dataset_limits())
    except DatasetError as error:
        raise APIError(
            400, f"Invalid training file '{Path(filename).name}': {error}", param="file", code="invalid_file"
        ) from error
    record = DataFile(
        id=file_id,
        filename=Path(filename).name,
        purpose=purpose,
        bytes=size,
        path=str(path),
        format=summary.format,
        num_samples=summary.num_samples,
        owner=new_owner(),
    )
    session.add(record)
    session.commit()
    session.refresh(record)
    return record


def _copy_limited(stream: BinaryIO, path: Path, limit: int) -> int:
    size = 0
    with path.open("wb") as out:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > limit:
                out.close()
                path.unlink(missing_ok=True)
                raise APIError(
                    413,
                    f"File larger than the {limit // CHUNK} MB limit",
                    param="file",
                    code="file_too_large",
                )
            out.write(chunk)
    if size == 0:
        path.unlink(missing_ok=True)
        raise APIError(400, "The file is empty", param="file", code="invalid_file")
    return size


def get_file(session: Session, file_id: str) -> DataFile:
    record = session.get(DataFile, file_id)
    if record is None or not visible(record.owner):
        raise not_found("file", file_id)
    return record


def list_files(
    session: Session,
    purpose: str | None = None,
    limit: int = 10000,
    after: str | None = None,
    order: str = "desc",
) -> list[DataFile]:
    query = only_visible(select(DataFile), DataFile.owner)
    if purpose:
        query = query.where(DataFile.purpose == purpose)
    if after:
        anchor = get_file(session, after)
        query = query.where(
            col(DataFile.created_at) < anchor.created_at
            if order == "desc"
            else col(DataFile.created_at) > anchor.created_at
        )
    ordering = col(DataFile.created_at).desc() if order == "desc" else col(DataFile.created_at).asc()
    return list(session.exec(query.order_by(ordering).limit(limit)).all())


def delete_file(session: Session, file_id: str) -> None:
    """Refused (409) while a queued or running job still needs the file: it would fail, or never start."""
    record = get_file(session, file_id)
    # A job in these states still reads its files (a paused one resumes).
    active = [status.value for status in (*run_states.ACTIVE_STATUSES, RunStatus.paused)]
    for run in session.exec(select(Run).where(col(Run.status).in_(active))).all():
        if file_id in (run.config.get("dataset"), run.config.get("validation_dataset")):
            raise APIError(
                409,
                f"File {file_id} is used by job {run.id} ({run.status}); delete it once the job has ended.",
                param="file_id",
                code="file_in_use",
            )
    Path(record.path).unlink(missing_ok=True)
    session.delete(record)
    session.commit()
