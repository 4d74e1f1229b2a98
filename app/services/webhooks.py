"""Checks a job's webhook when it is created (app/lifecycle/webhook_events.py queues its events)."""

from __future__ import annotations

from urllib.parse import urlparse

from app.config import get_settings
from app.errors import APIError
from app.lifecycle.webhook_events import METADATA_KEY


def check_job_webhook(metadata: dict[str, str] | None) -> None:
    """At job creation: metadata.webhook_url must be an http(s) URL, with a secret to sign with."""
    url = (metadata or {}).get(METADATA_KEY)
    if url is None:
        return
    if urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
        raise APIError(400, f"metadata.webhook_url must be an http(s) URL, not {url!r}", param="metadata")
    if not get_settings().webhook_secret:
        raise APIError(
            400,
            "metadata.webhook_url needs a signing secret on the server (LORABOARD_WEBHOOK_SECRET)",
            param="metadata",
            code="webhooks_not_configured",
        )
