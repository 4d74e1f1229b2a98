"""Slow look-ups (the Hugging Face hub) kept off the request: started in the background,
answered from memory.

The live estimate asks about 400 ms after each keystroke. A hub id that the local cache
lacks used to hold each request for the whole look-up (5 s on an air-gapped box, where
the hub client retries). Now the first request starts one look-up and answers at once
("looking it up"); later requests get the result. A failure is remembered for a while,
so typing the same unknown id again costs nothing, and the number of look-ups in flight
is capped so a burst of made-up ids cannot start a thread each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FAILURE_TTL_S = 600.0
MAX_IN_FLIGHT = 4


class LookupPending(LookupError):
    """The answer is not known yet; ask again later."""


class LookupFailed(LookupError):
    """The look-up failed (recently); the message says why."""


@dataclass
class _Entry:
    done: bool = False
    value: Any = None
    error: str | None = None
    finished_at: float = 0.0


class BackgroundLookups:
    def __init__(self, failure_ttl_s: float = FAILURE_TTL_S, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._failure_ttl_s = failure_ttl_s
        self._max_in_flight = max_in_flight

    def get(self, key: str, fetch: Callable[[], Any]) -> Any:
        """fetch()'s value for key; LookupPending while it runs, LookupFailed once it failed."""
        with self._lock:
            entry = self._entries.get(key)
            expired = (
                entry is not None
                and entry.error is not None
                and time.monotonic() - entry.finished_at > self._failure_ttl_s
            )
            if entry is None or expired:
                in_flight = sum(1 for other in self._entries.values() if not other.done)
                if in_flight >= self._max_in_flight:
                    raise LookupPending("other look-ups are in progress; try again in a moment")
                entry = self._entries[key] = _Entry()
                threading.Thread(target=self._run, args=(entry, fetch), daemon=True).start()
        if not entry.done:
            raise LookupPending("looking it up")
        if entry.error is not None:
            raise LookupFailed(entry.error)
        return entry.value

    def _run(self, entry: _Entry, fetch: Callable[[], Any]) -> None:
        try:
            value, error = fetch(), None
        except Exception as failure:
            value, error = None, str(failure) or type(failure).__name__
        with self._lock:
            entry.value, entry.error, entry.finished_at, entry.done = value, error, time.monotonic(), True
