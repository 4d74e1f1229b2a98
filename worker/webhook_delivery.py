"""Webhook delivery, as OpenAI sends them: one signed POST per attempt, each recorded in the job's events.

Each event is signed as OpenAI's are, by the Standard Webhooks scheme: headers webhook-id,
webhook-timestamp and webhook-signature = "v1," + base64(HMAC-SHA256(secret,
"<id>.<timestamp>.<body>")), the secret being the base64 after "whsec_". So OpenAI's own
client verifies them (`client.webhooks.unwrap(body, headers, secret=...)`).

The state change only queues the delivery (app/lifecycle/webhook_events.py); the task
(worker/tasks.py, on the `webhooks` queue the inference worker consumes) calls deliver,
and retries a failure after 1, 2, 4, ... x LORABOARD_WEBHOOK_RETRY_BASE_S.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

from sqlmodel import Session

from app.config import get_settings
from app.lifecycle.webhook_events import webhook_url
from app.models import Event, Run

TIMEOUT_S = 10.0


def signature_headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{digest}",
        "content-type": "application/json",
        "user-agent": "Loraboard-Webhooks",
    }


def event_body(event_id: str, event_type: str, created_at: int, run_id: str) -> bytes:
    """OpenAI's webhook event object: the job id only; the receiver reads the job from the API."""
    payload = {
        "id": event_id,
        "object": "event",
        "created_at": created_at,
        "type": event_type,
        "data": {"id": run_id},
    }
    return json.dumps(payload).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> int | str:
    """The receiver's HTTP status, or why nothing came back."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError) as error:
        return f"{type(error).__name__}: {getattr(error, 'reason', error)}"


def deliver(
    session: Session, *, run_id: str, event_id: str, event_type: str, created_at: int, attempt: int
) -> bool:
    """One attempt: POST the signed event, record it in the job's events; True when the receiver took it."""
    settings = get_settings()
    run = session.get(Run, run_id)
    url = webhook_url(run) if run is not None else None
    if run is None or url is None or not settings.webhook_secret:
        return True  # nothing (left) to deliver
    body = event_body(event_id, event_type, created_at, run_id)
    outcome = post(url, body, signature_headers(settings.webhook_secret, event_id, int(time.time()), body))
    delivered = isinstance(outcome, int) and 200 <= outcome < 300
    last = attempt >= settings.webhook_max_attempts
    data: dict[str, Any] = {
        "webhook": {
            "event_id": event_id,
            "type": event_type,
            "url": url,
            "attempt": attempt,
            "status_code": outcome if isinstance(outcome, int) else None,
            "delivered": delivered,
        }
    }
    if delivered:
        message, level = f"Webhook {event_type} delivered to {url} (attempt {attempt})", "info"
    else:
        then = "giving up" if last else f"retrying in {retry_delay_s(attempt):g} s"
        message = f"Webhook {event_type} to {url} failed (attempt {attempt}: {outcome}); {then}"
        level = "error" if last else "warn"
    session.add(Event(run_id=run_id, message=message, level=level, data=data))
    session.commit()
    return delivered or last


def retry_delay_s(attempt: int) -> float:
    return get_settings().webhook_retry_base_s * 2 ** (attempt - 1)
