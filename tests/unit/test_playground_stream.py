"""The playground's answers stream: from the page (htmx) the exchange holds placeholders that
loraboard.js fills from /playground/stream; a bad model still answers at once, as an error."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.migrate import upgrade


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    upgrade()
    from app.main import app

    with TestClient(app) as test_client:
        yield test_client


def test_the_page_gets_stream_placeholders(client: TestClient) -> None:
    form = {"model": "demo-tiny-llama", "prompt": "hi <b>", "max_tokens": "8", "temperature": "0"}
    page = client.post("/playground/chat", data=form, headers={"HX-Request": "true"}).text
    attribute = page.split('data-stream="', 1)[1].split('"', 1)[0]
    assert json.loads(html.unescape(attribute)) == {
        "model": "demo-tiny-llama",
        "prompt": "hi <b>",
        "system": "",
        "max_tokens": 8,
        "temperature": 0.0,
    }
    missing = {**form, "model": "ft:demo-tiny-llama:x:ftjob-000000"}
    page = client.post("/playground/chat", data=missing, headers={"HX-Request": "true"}).text
    assert "does not exist" in page and "data-stream" not in page
