"""Server directories left out of what a run shows its user (errors, the event log, runtime).

A run's page and the API's events are read by whoever owns the run, who need not know the
server's layout: the data dir, the worker's home and its working directory become
`<data dir>`, `~` and `.`. What is under them (the run's own artifacts) stays readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import get_settings


def hide_server_paths(text: str) -> str:
    settings = get_settings()
    for directory, name in (
        (settings.data_dir.resolve(), "<data dir>"),
        (Path.home(), "~"),
        (Path.cwd(), "."),
    ):
        if len(directory.parts) > 1:  # never "/" itself: every path would be mangled
            text = text.replace(str(directory), name)
    return text


def hide_server_paths_in(value: Any) -> Any:
    """hide_server_paths through a JSON-like value: the mapped trainer arguments a job's
    runtime shows name the output directory."""
    if isinstance(value, str):
        return hide_server_paths(value)
    if isinstance(value, dict):
        return {key: hide_server_paths_in(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [hide_server_paths_in(item) for item in value]
    return value
