"""Server-sent events for a run's page: its metrics, and HTML fragments when they change.

Every metrics message carries `id: <Metric row id>`. A browser that reconnects sends
the last one back as Last-Event-ID and the stream resumes right after it; a page
(re)load passes the last id it rendered as ?after=. Other messages carry no id, so
they never move that cursor. A connection lives at most Settings.sse_max_connection_s,
then ends; the browser's EventSource reconnects on its own (after `retry` ms).

The source is the database, polled: it is the truth the workers write to, and one
query per second per open page is cheap. Redis pub/sub could wake the loop sooner;
polling keeps SQLite-only installs identical to big ones. A stream holds no database
connection between polls (each poll is a short session of its own), and one client may
hold at most Settings.sse_max_streams_per_client streams at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.auth import current_principal
from app.db import get_engine
from app.errors import APIError
from app.lifecycle import run_states
from app.models import METRIC_FIELDS, Metric, Run
from app.services import runs

POLL_INTERVAL_S = 1.0
RETRY_MS = 1000

FragmentRenderer = Callable[[Session, Run], dict[str, str]]


class StreamSlots:
    """Open streams per client: a page left open in 300 tabs (or a script) must not take the server."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, client: str, limit: int) -> AbstractContextManager[None]:
        with self._lock:
            if self._open[client] >= limit:
                raise APIError(
                    429,
                    f"Too many live streams open from this client (at most {limit}); close some pages.",
                    code="too_many_streams",
                    type="rate_limit_error",
                )
            self._open[client] += 1
        return _Slot(self, client)

    def release(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]

    def count(self, client: str) -> int:
        return self._open[client]


class _Slot(AbstractContextManager[None]):
    def __init__(self, slots: StreamSlots, client: str) -> None:
        self._slots, self._client, self._released = slots, client, False

    def __exit__(self, *_exc: object) -> None:
        if not self._released:
            self._released = True
            self._slots.release(self._client)


STREAM_SLOTS = StreamSlots()


class SharedPolls:
    """One database poll per run, cursor and viewer per interval, shared by every stream that asks.

    200 tabs on one run used to run 200 polls (and renders) a second; after their first
    catch-up they all stand at the same cursor, so they now share one. The viewer's key id
    is part of the cache key: fragments carry the viewer's CSRF token, which must not
    reach anyone else's page.
    """

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._results: dict[tuple[str, int, str], tuple[float, Any]] = {}
        self._locks: dict[tuple[str, int, str], asyncio.Lock] = {}

    async def poll(
        self, run_id: str, after_id: int, render: FragmentRenderer
    ) -> tuple[list[Metric], dict[str, str], bool]:
        principal = current_principal.get()
        key = (run_id, after_id, principal.key_id if principal else "")
        hit = self._results.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]  # type: ignore[no-any-return]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._results.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]  # type: ignore[no-any-return]
            try:
                result = await run_in_threadpool(_poll, run_id, after_id, render)
            except BaseException:
                # Nothing to cache (a missing run's 404): no lock kept for a key that never expires.
                self._locks.pop(key, None)
                raise
            now = time.monotonic()
            for stale in [k for k, (expires, _) in self._results.items() if expires <= now]:
                self._results.pop(stale, None)
                self._locks.pop(stale, None)
            self._results[key] = (now + self._ttl_s, result)
            return result


SHARED_POLLS = SharedPolls(ttl_s=POLL_INTERVAL_S * 0.9)


def metric_payload(metric: Metric) -> dict[str, Any]:
    return {"id": metric.id, **{name: getattr(metric, name) for name in METRIC_FIELDS}}


def sse_message(data: str, event: str | None = None, event_id: int | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return "\n".join(lines) + "\n\n"


def resume_point(after: int | None, last_event_id: str | None) -> int:
    """Where to start: the later of the page's last rendered id and the browser's Last-Event-ID."""
    start = after or 0
    if last_event_id and last_event_id.strip().isdigit():
        start = max(start, int(last_event_id))
    return start


def _poll(run_id: str, after_id: int, render: FragmentRenderer) -> tuple[list[Metric], dict[str, str], bool]:
    with Session(get_engine()) as session:
        metrics = run_states.list_metrics(session, run_id, after_id=after_id, limit=500)
        run = runs.get_run(session, run_id)
        # Paused runs end the stream too: they change again only when someone resumes them.
        return (
            metrics,
            render(session, run),
            run.status not in {status.value for status in run_states.ACTIVE_STATUSES},
        )


async def run_events(
    run_id: str,
    after_id: int,
    render: FragmentRenderer,
    max_seconds: float,
    poll_interval_s: float = POLL_INTERVAL_S,
    slot: AbstractContextManager[None] | None = None,
) -> AsyncIterator[str]:
    """Metrics after after_id, then new ones as they come; fragments when they change; 'done' at the end.

    slot is released when the stream ends, however it ends (the client went away included).
    """
    with slot or nullcontext():
        async for message in _run_events(run_id, after_id, render, max_seconds, poll_interval_s):
            yield message


async def _run_events(
    run_id: str, after_id: int, render: FragmentRenderer, max_seconds: float, poll_interval_s: float
) -> AsyncIterator[str]:
    deadline = time.monotonic() + max_seconds
    last_id = after_id
    sent: dict[str, str] = {}
    # One chunk per poll, however many messages it holds: each chunk is a trip through the
    # middleware stack and a socket write, and 200 open pages made 1,000 of them a second.
    batch = [f"retry: {RETRY_MS}\n\n"]
    while True:
        metrics, fragments, final = await SHARED_POLLS.poll(run_id, last_id, render)
        for metric in metrics:
            last_id = metric.id or last_id
            batch.append(sse_message(json.dumps(metric_payload(metric)), event="metrics", event_id=metric.id))
        for name, html in fragments.items():
            if sent.get(name) != html:
                sent[name] = html
                batch.append(sse_message(html, event=name))
        done = final and not metrics
        if done:
            batch.append(sse_message("finished", event="done"))
        if batch:
            yield "".join(batch)
            batch = []
        if done:
            return
        if time.monotonic() >= deadline:
            return  # the lifetime cap: the browser reconnects with Last-Event-ID
        if not metrics or len(metrics) < 500:
            await asyncio.sleep(poll_interval_s)
