"""Jinja2 set-up shared by every page module, and the one rule of HTMX responses.

Same URL, two answers (docs/architecture.md, convention 6): the full page, or just its
fragment when htmx asks (HX-Request header); full pages include the very fragments htmx swaps.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.responses import Response

from app import auth
from app.services import runs

TEMPLATES_DIR = Path(__file__).resolve().parent.parent.parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES_DIR)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request, page: str, fragment: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    name = fragment if is_htmx(request) else page
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def error_page(request: Request, status_code: int, message: str) -> Response:
    """The error page a browser gets (app/errors.py's handlers; API clients get JSON)."""
    return templates.TemplateResponse(
        request, "pages/error.html", {"status_code": status_code, "message": message}, status_code=status_code
    )


def render_fragment(name: str, context: dict[str, Any]) -> str:
    """A template rendered to a string, outside a request (the SSE stream's fragments)."""
    return templates.env.get_template(name).render(context)


# --- filters: how numbers read on the dashboard -------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def integer(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.{max(digits - 2, 1)}e}"
    return f"{value:.{digits}g}"


def gigabytes(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) < 1:
        return f"{value * 1024:.0f} MB" if abs(value) >= 0.01 else f"{value * 1024:.1f} MB"
    return f"{value:.1f} GB" if abs(value) >= 10 else f"{value:.2f} GB"


def when(moment: datetime | None) -> str:
    stamp = runs.timestamp(moment)
    return "–" if stamp is None else datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def to_json(value: Any) -> Markup:
    """JSON safe inside <script type="application/json"> (no '</script>' can close it early)."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


templates.env.globals.update(
    progress=runs.progress,
    timestamp=runs.timestamp,
    # Read from the request's context (auth.current_principal), so fragments rendered for the
    # live stream carry it too.
    csrf_token=lambda: auth.csrf_token(auth.current_principal.get()),
    viewer=auth.current_principal.get,
)
templates.env.filters.update(
    duration=duration, integer=integer, number=number, gigabytes=gigabytes, when=when, to_json=to_json
)
