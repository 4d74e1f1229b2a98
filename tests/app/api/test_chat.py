"""Chat when the model or the worker is not there (issue 16, items 4 and 10).

In process, real SQLite database and SQLite broker; no inference worker runs, which is
the fault under test. The worker registry rows are what a worker writes when it starts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, delete

from app.config import get_settings
from app.db import get_engine
from app.models import WorkerNode, utcnow

QUESTION = [{"role": "user", "content": "What is the opposite of hot?"}]


def set_inference_worker(alive: bool) -> None:
    with Session(get_engine()) as session:
        session.exec(delete(WorkerNode))  # type: ignore[call-overload]
        if alive:
            session.add(
                WorkerNode(
                    name="inference@gone-quiet", hostname="h", queues=["inference"], last_seen_at=utcnow()
                )
            )
        session.commit()


def chat(client: TestClient, model: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json={"model": model, "messages": QUESTION})
    return response.status_code, response.json(), time.monotonic() - started


@pytest.mark.parametrize(
    "model", ["someone/not-a-model", "/etc", "../../etc", "ft:demo-tiny-llama:x:ftjob-0000ffff", "a\nb"]
)
def test_an_unknown_model_is_404_at_once(client: TestClient, model: str) -> None:
    set_inference_worker(alive=True)
    status, body, seconds = chat(client, model)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert seconds < 2.0  # no hub retries, no worker involved


def test_no_inference_worker_is_503_at_once(client: TestClient) -> None:
    set_inference_worker(alive=False)
    status, body, seconds = chat(client, "demo-tiny-llama")
    assert status == 503 and body["error"]["code"] == "no_inference_worker"
    assert body["error"]["type"] == "server_error" and seconds < 2.0


def broker_chat_tasks() -> list[dict]:
    path = get_settings().data_dir.resolve() / "broker.db"
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT payload FROM kombu_message").fetchall()
    messages = [json.loads(payload) for (payload,) in rows]
    return [m for m in messages if m.get("headers", {}).get("task") == "loraboard.chat_completion"]


def test_waiting_chats_hold_no_server_thread_and_expire(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_inference_worker(alive=True)  # registered, but it never answers
    monkeypatch.setattr(get_settings(), "completion_timeout_s", 3.0)
    answers: list[int] = []

    def one_chat() -> None:
        answers.append(chat(client, "demo-tiny-llama")[0])

    waiting = [threading.Thread(target=one_chat) for _ in range(45)]
    for thread in waiting:
        thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    # More chats wait than the server's threadpool has threads (40): were each to hold one,
    # every sync endpoint would freeze.
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/files").status_code == 200
    assert time.monotonic() - started < 1.5
    for thread in waiting:
        thread.join(timeout=60)
    assert answers == [504] * len(waiting)  # every waiting chat gave up with a timeout
    tasks = broker_chat_tasks()
    assert tasks and all(task["headers"]["expires"] for task in tasks)  # never run once given up
