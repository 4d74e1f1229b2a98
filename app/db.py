"""Engine and the session dependency (one commit rule: the caller that opens a session commits it)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends
from sqlalchemy import Engine, event
from sqlmodel import Session, create_engine

from app.config import get_settings

# Every thread of the server's threadpool (anyio's default: 40) may hold a connection at
# once; with fewer, a busy moment made requests wait 30 s for one and fail with a 500
# ("QueuePool limit of size 5 overflow 10 reached"). The overflow closes when idle.
POOL_SIZE = 10
POOL_OVERFLOW = 40


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Server, workers and the broker share SQLite files across processes: wait on
        # locks instead of failing, and use WAL so readers never block the writer.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


def get_session() -> Iterator[Session]:
    with Session(get_engine()) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
