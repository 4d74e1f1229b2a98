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
