"""The official `openai` client streams a chat completion from a real server and inference worker.

The pieces travel worker -> result backend -> server -> SSE as generate() makes them: once on
the embedded SQLite broker and result backend, once on PostgreSQL + Redis. Every raw event is
checked against OpenAI's own chunk schema.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.openai_spec import assert_conforms
from tests.stack import ADMIN_HEADERS, ADMIN_KEY, Stack

QUESTION = [{"role": "user", "content": "What is the opposite of hot?"}]
BASE = "demo-tiny-llama"  # the base model alone: random weights, so it rambles to max_tokens


def raw_events(stack: Stack, body: dict) -> list[tuple[float, str]]:
    """(arrival time, data) of each server-sent event, as they come off the socket."""
    events = []
    with httpx.stream(
        "POST", f"{stack.base_url}/v1/chat/completions", json=body, headers=ADMIN_HEADERS, timeout=300
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/event-stream"
        )
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append((time.monotonic(), line.removeprefix("data: ")))
    return events


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres-redis"])
def test_official_client_streams_chat(stack_factory, backend: str) -> None:
    stack = stack_factory(backend, workers=("inference",))
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=300)
    options = {"model": BASE, "messages": QUESTION, "temperature": 0, "max_tokens": 120}

    whole = client.chat.completions.create(**options, logprobs=True, top_logprobs=2)
    assert whole.choices[0].logprobs and whole.choices[0].logprobs.content
    assert whole.choices[0].logprobs.content[0].top_logprobs[0].logprob <= 0
    assert_conforms(
        "CreateChatCompletionResponse",
        httpx.post(
            f"{stack.base_url}/v1/chat/completions",
            json={**options, "logprobs": True},
            headers=ADMIN_HEADERS,
            timeout=300,
        ).json(),
    )

    chunks = list(
        client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
    # the usage chunk last: the answer ran to max_tokens
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == options["max_tokens"]
    assert len({chunk.id for chunk in chunks}) == 1

    # The raw stream: OpenAI's chunk schema on every event, [DONE] last, and the content
    # arriving over the generation rather than in one burst at its end.
    events = raw_events(stack, {**options, "stream": True, "logprobs": True})
    assert events[-1][1] == "[DONE]"
    bodies = [json.loads(data) for _, data in events[:-1]]
    for body in bodies:
        assert_conforms("CreateChatCompletionStreamResponse", body)
    content_times = [
        at
        for (at, _), body in zip(events, bodies, strict=False)
        if body["choices"][0]["delta"].get("content")
    ]
    assert len(content_times) >= 3
    assert content_times[-1] - content_times[0] > 0.05, "every piece came at once: nothing was streamed"
    assert all(
        body["choices"][0]["logprobs"] for body in bodies[1:-1] if body["choices"][0]["delta"].get("content")
    )
