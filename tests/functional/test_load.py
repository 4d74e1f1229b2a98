"""Load, bounded for `make test` (issue 16): live-run watchers and API pollers while a demo run trains.

A real server and training worker on the embedded SQLite defaults, at a size a shared
2-core CI box carries next to the training run itself; bench/load_watchers.py is the same
load at the issue's size (200 watchers, 50 pollers) against any server. RELIABILITY.md
records the figures of both.
"""

from __future__ import annotations

import asyncio
import json

from bench.load_watchers import run_load
from tests.stack import ADMIN_KEY, Stack

WATCHERS = 50
POLLERS = 20


def test_watchers_and_pollers_while_a_run_trains(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory("sqlite", workers=("training",))
    report = asyncio.run(run_load(stack.base_url, ADMIN_KEY, WATCHERS, POLLERS, max_steps=40, timeout_s=600))
    figures = report.as_dict()
    print(json.dumps(figures, indent=2))  # the figures RELIABILITY.md quotes (pytest -s shows them)
    assert figures["errors"] == 0, figures["first_errors"]
    assert figures["polls"] > 100 and figures["stream_messages"] >= WATCHERS
    assert figures["poll_p99_ms"] < 500, figures
