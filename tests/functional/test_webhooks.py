"""Webhooks reach a real local receiver, signed as OpenAI's: the official client verifies them.

A job's metadata.webhook_url, and the deployment's LORABOARD_WEBHOOK_URL for the others;
succeeded, failed and cancelled; a receiver that fails first gets the event again after the
backoff, and every attempt shows in the job's events.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.stack import ADMIN_KEY, free_port

SECRET = "whsec_" + base64.b64encode(b"loraboard-test-webhook-secret-32b").decode()


class Receiver:
    """An HTTP server that records each POST; the first `fail_first` answers per path are 500s."""

    def __init__(self, fail_first: int = 1) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name for the POST handler
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.requests.append((self.path, headers, body))
                seen = sum(1 for path, _, _ in receiver.requests if path == self.path)
                self.send_response(500 if seen <= receiver.fail_first else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self, path: str, timeout: float = 120) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [(headers, body) for at, headers, body in self.requests if at == path]
            if len(hits) > self.fail_first:
                return hits
            time.sleep(0.2)
        raise AssertionError(f"no successful delivery to {path}: {self.requests}")


def wait_final(client: openai.OpenAI, job_id: str, timeout: float = 300):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


@pytest.mark.slow
def test_signed_webhooks_with_retries(stack_factory) -> None:
    receiver = Receiver(fail_first=1)
    stack = stack_factory(
        "sqlite",
        settings={
            "LORABOARD_WEBHOOK_SECRET": SECRET,
            "LORABOARD_WEBHOOK_URL": f"{receiver.url}/deployment",
            "LORABOARD_WEBHOOK_RETRY_BASE_S": "0.5",
        },
    )
    client = openai.OpenAI(
        base_url=f"{stack.base_url}/v1", api_key=ADMIN_KEY, webhook_secret=SECRET, max_retries=0, timeout=300
    )
    hyperparameters = {"max_steps": 4, "logging_steps": 2, "batch_size": 4}
    method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}

    job = client.fine_tuning.jobs.create(
        model="demo-tiny-llama",
        training_file="demo-antonyms",
        method=method,
        metadata={"webhook_url": f"{receiver.url}/job"},
    )
    assert wait_final(client, job.id).status == "succeeded", stack.log("worker-training")
    first, retried = receiver.delivered("/job")[:2]
    event = client.webhooks.unwrap(retried[1], retried[0])  # raises unless the signature verifies
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == job.id
    assert first[0]["webhook-id"] == retried[0]["webhook-id"]  # the same event, delivered again
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(retried[1].replace(job.id.encode(), b"ftjob-forged"), retried[0])

    deadline = time.monotonic() + 60
    while True:
        messages = [item.message for item in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        if any("delivered" in message for message in messages):
            break
        assert time.monotonic() < deadline, messages
        time.sleep(0.3)
    assert any("fine_tuning.job.succeeded" in m and "failed (attempt 1: 500)" in m for m in messages)
    assert any(
        m.startswith("Webhook fine_tuning.job.succeeded delivered") and "attempt 2" in m for m in messages
    )

    # Without a URL of its own a job notifies the deployment's: a failure and a cancel.
    failing = client.fine_tuning.jobs.create(
        # Accepted (under the allowed root) but missing when the worker looks: the run fails.
        model="demo-tiny-llama",
        training_file=str(stack.data_dir / "local" / "missing.jsonl"),
        method=method,
    )
    assert wait_final(client, failing.id).status == "failed"
    cancelled = client.fine_tuning.jobs.create(
        model="demo-tiny-llama", training_file="demo-antonyms", method={"type": "supervised"}
    )
    client.fine_tuning.jobs.cancel(cancelled.id)
    receiver.fail_first = 0
    deadline = time.monotonic() + 120
    while True:
        events = [json.loads(body) for path, _, body in receiver.requests if path == "/deployment"]
        kinds = {(item["type"], item["data"]["id"]) for item in events}
        if {("fine_tuning.job.failed", failing.id), ("fine_tuning.job.cancelled", cancelled.id)} <= kinds:
            break
        assert time.monotonic() < deadline, (kinds, stack.log("worker-inference"))
        time.sleep(0.3)
