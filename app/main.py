"""The app factory: the /v1 API, the HTML pages and the vendored static files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.api import chat, files, jobs
from app.auth import AuthMiddleware, announce_first_start_key
from app.config import get_settings
from app.db import get_engine
from app.errors import install_error_handlers
from app.lifecycle.orphans import recover_orphans
from app.openapi_errors import state_validation_errors_as_400
from app.pages import login
from app.pages import router as pages_router
from app.pages.templating import error_page
from app.services.files import upload_body_limit
from app.upload_limit import UploadLimitMiddleware
from core.run_config import transformers_optimizer_names, transformers_scheduler_names

PROJECT_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def _recover_orphans_once() -> None:
    with Session(get_engine()) as session:
        recover_orphans(session, get_settings().stale_run_after_s)


def _load_run_config_vocabulary() -> None:
    transformers_optimizer_names()
    transformers_scheduler_names()


async def _watch_orphans(interval_s: float) -> None:
    """Every interval: re-queue runs whose worker stopped sending heartbeats."""
    while True:
        try:
            await run_in_threadpool(_recover_orphans_once)
        except Exception:  # a database hiccup must not kill the watcher
            log.exception("orphan check failed")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # Validating a run config needs transformers' optimizer and scheduler names, and
    # importing transformers takes seconds: do it now, not in the first user's request.
    warm_up = asyncio.create_task(run_in_threadpool(_load_run_config_vocabulary))
    watcher = asyncio.create_task(_watch_orphans(max(5.0, settings.stale_run_after_s / 4)))
    # `loraboard serve` has done it already; this is for the app started another way.
    await run_in_threadpool(announce_first_start_key)
    yield
    watcher.cancel()
    warm_up.cancel()


def create_app() -> FastAPI:
    app = FastAPI(
        title="Loraboard",
        summary="Launch and monitor QLoRA fine-tunes. The /v1 API follows OpenAI's fine-tuning API.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app, error_page)
    state_validation_errors_as_400(app)  # /openapi.json promises the 400 that the handlers send
    app.add_middleware(UploadLimitMiddleware, max_body_bytes=upload_body_limit())
    app.add_middleware(AuthMiddleware)  # added last: outermost, nothing runs before the key check
    for module in (files, jobs, chat):
        app.include_router(module.router, prefix="/v1")

    @app.get("/healthz", tags=["health"], summary="Liveness and database check")
    def healthz() -> dict[str, str]:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"status": "ok"}

    app.include_router(login.router)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=PROJECT_ROOT / "static"), name="static")
    return app


app = create_app()
