"""Shared stream polls: one database read per run and cursor, nothing kept for missing runs."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import Session

from app.errors import APIError
from app.migrate import upgrade
from app.models import Run
from app.services.streaming import SharedPolls


def no_fragments(_session: Session, _run: Run) -> dict[str, str]:
    return {}


def test_a_missing_run_is_a_404_and_leaves_nothing_behind() -> None:
    upgrade()
    polls = SharedPolls(ttl_s=60)

    async def poll_missing_runs() -> None:
        for number in range(50):
            with pytest.raises(APIError) as missing:
                await polls.poll(f"ftjob-missing{number}", 0, no_fragments)
            assert missing.value.status_code == 404

    asyncio.run(poll_missing_runs())
    # Stream URLs with made-up run ids must not grow the server's memory.
    assert polls._locks == {} and polls._results == {}


def test_each_poll_goes_out_as_one_chunk() -> None:
    # 200 open pages: one send per page and poll, not one per metric and fragment.
    from app.db import get_engine
    from app.services.runs import create_run
    from app.services.streaming import run_events
    from core.run_config import RunConfig

    upgrade()
    with Session(get_engine()) as session:
        run = create_run(session, RunConfig(model_name="demo-tiny-llama", dataset="demo-antonyms"))
        run.status = "succeeded"  # a finished run: one poll, then the stream ends
        session.add(run)
        session.commit()
        run_id = run.id

    def two_fragments(_session: Session, _run: Run) -> dict[str, str]:
        return {"status": "<b>done</b>", "log": "<ul></ul>"}

    async def chunks() -> list[str]:
        return [chunk async for chunk in run_events(run_id, 0, two_fragments, max_seconds=5)]

    (chunk,) = asyncio.run(chunks())
    assert chunk.startswith("retry: ") and chunk.endswith("event: done\ndata: finished\n\n")
    assert "event: status\ndata: <b>done</b>" in chunk and "event: log\ndata: <ul></ul>" in chunk
