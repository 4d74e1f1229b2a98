"""Open live-run pages must not starve the rest of the server (issue 16, item 3).

A real server (uvicorn) on the embedded SQLite database; no worker, so the job stays
queued and its stream stays open. 15 streams used to hold the database pool's 15
connections: /healthz then waited 27 s for one.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.stack import ADMIN_HEADERS, Stack


async def open_streams(
    base_url: str, url: str, count: int, opened: asyncio.Event, done: asyncio.Event
) -> int:
    started = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal started
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()  # kept referenced: a dropped iterator closes the stream
            await chunks.__anext__()
            started += 1
            if started == count:
                opened.set()
            await done.wait()

    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=limits, headers=ADMIN_HEADERS
    ) as client:
        await asyncio.gather(*(one(client) for _ in range(count)))
    return started


async def watch_while_polling(base_url: str, job_id: str, streams: int, polls: int) -> dict:
    opened, done = asyncio.Event(), asyncio.Event()
    watchers = asyncio.create_task(open_streams(base_url, f"/runs/{job_id}/stream", streams, opened, done))
    await asyncio.wait_for(opened.wait(), timeout=60)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=ADMIN_HEADERS) as client:
        started = time.monotonic()
        health = await client.get("/healthz")
        health_seconds = time.monotonic() - started
        answers = await asyncio.gather(
            *(client.get(f"/v1/fine_tuning/jobs/{job_id}") for _ in range(polls)), return_exceptions=True
        )
        over = await client.get(f"/runs/{job_id}/stream", headers={"accept": "application/json"})
    done.set()
    await watchers
    return {"health": health.status_code, "health_seconds": health_seconds, "answers": answers, "over": over}


def test_open_streams_hold_no_database_connection(stack_factory) -> None:
    stack: Stack = stack_factory("sqlite", workers=())
    stack.env["LORABOARD_SSE_MAX_STREAMS_PER_CLIENT"] = "30"
    stack.stop()
    stack.start_server()
    job = httpx.post(
        f"{stack.base_url}/v1/fine_tuning/jobs",
        json={"model": "demo-tiny-llama", "training_file": "demo-antonyms"},
        timeout=30,
        headers=stack.headers,
    ).json()
    result = asyncio.run(watch_while_polling(stack.base_url, job["id"], streams=30, polls=50))
    assert result["health"] == 200 and result["health_seconds"] < 2.0
    codes = [
        answer.status_code if isinstance(answer, httpx.Response) else repr(answer)
        for answer in result["answers"]
    ]
    assert codes == [200] * 50
    # The 31st stream from the same client is refused, in OpenAI's shape.
    assert result["over"].status_code == 429
    assert result["over"].json()["error"]["code"] == "too_many_streams"
