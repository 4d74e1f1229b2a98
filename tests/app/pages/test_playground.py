"""The playground's answers stream: from the page (htmx) the exchange holds placeholders that
loraboard.js fills from /playground/stream; a bad model still answers at once, as an error."""

from __future__ import annotations

import html
import json

from fastapi.testclient import TestClient


def test_the_page_gets_stream_placeholders(client: TestClient) -> None:
    form = {"model": "demo-tiny-llama", "prompt": "hi <b>", "max_tokens": "8", "temperature": "0"}
    page = client.post("/playground/chat", data=form, headers={"HX-Request": "true"}).text
    attribute = page.split('data-stream="', 1)[1].split('"', 1)[0]
    assert json.loads(html.unescape(attribute)) == {
        "model": "demo-tiny-llama",
        "messages": json.dumps([{"role": "user", "content": "hi <b>"}]),
        "max_tokens": 8,
        "temperature": 0.0,
    }
    missing = {**form, "model": "ft:demo-tiny-llama:x:ftjob-000000"}
    page = client.post("/playground/chat", data=missing, headers={"HX-Request": "true"}).text
    assert "does not exist" in page and "data-stream" not in page


def test_a_conversation_goes_on_with_each_sides_own_answers(client: TestClient) -> None:
    history = [{"user": "What is the opposite of hot?", "adapter": "cold", "base": "The opposite is cool."}]
    form = {
        "model": "demo-tiny-llama",
        "prompt": "And of up?",
        "system": "Be brief.",
        "history": json.dumps(history),
        "max_tokens": "8",
    }
    page = client.post("/playground/chat", data=form, headers={"HX-Request": "true"}).text
    stream = json.loads(html.unescape(page.split('data-stream="', 1)[1].split('"', 1)[0]))
    assert json.loads(stream["messages"]) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the opposite of hot?"},
        {"role": "assistant", "content": "cold"},
        {"role": "user", "content": "And of up?"},
    ]
    # The finished turns go back into the form; the streamed one is added by the page when complete.
    kept = page.split('id="c-history" name="history" value="', 1)[1].split('"', 1)[0]
    assert json.loads(html.unescape(kept)) == history


def test_the_stream_endpoint_refuses_what_is_not_a_conversation(client: TestClient) -> None:
    response = client.post(
        "/playground/stream", data={"model": "demo-tiny-llama", "messages": '{"role": "x"}'}
    )
    assert response.status_code == 400
