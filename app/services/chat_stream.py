"""stream=true chat completions: the worker's pieces as server-sent `chat.completion.chunk` events.

The inference task writes the pieces it has so far into its own state in the result backend
(worker/tasks.py, every 50 ms at most); this generator reads that state from the event loop,
sends each piece once as it appears, then the finish reason, the usage when
stream_options.include_usage asked for it, and `data: [DONE]`, as OpenAI's stream does.
A failure after the stream began can only travel inside it: OpenAI's clients raise on an
`error` event, so it is sent as one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from celery.result import AsyncResult
from pydantic import BaseModel

from app.config import get_settings
from app.errors import error_body
from app.services import chat_objects
from app.services.completions import POLL_INTERVAL_S, completion_id, fingerprint, read_task, usage

DONE = "data: [DONE]\n\n"


def _event(body: BaseModel | dict[str, Any]) -> str:
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
    return f"data: {text}\n\n"


async def stream_chat(
    pending: AsyncResult, *, model: str, target: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    chunk_id, created, system_fingerprint = completion_id(), int(time.time()), fingerprint(target)

    def chunk(delta: chat_objects.Delta, finish_reason: Any = None, logprobs: Any = None) -> str:
        choice = chat_objects.ChunkChoice(
            index=0, delta=delta, finish_reason=finish_reason, logprobs=logprobs
        )
        return _event(
            chat_objects.ChatCompletionChunk(
                id=chunk_id,
                created=created,
                model=model,
                system_fingerprint=system_fingerprint,
                choices=[choice],
            )
        )

    def piece_chunk(piece: dict[str, Any]) -> str:
        logprobs = piece.get("logprobs")
        return chunk(
            chat_objects.Delta(content=piece["text"]),
            logprobs=chat_objects.ChoiceLogprobs(content=logprobs) if logprobs is not None else None,
        )

    yield chunk(chat_objects.Delta(role="assistant", content=""))
    sent = 0
    timeout = get_settings().completion_timeout_s
    deadline = time.monotonic() + timeout
    while True:
        status, result = await read_task(pending)
        pieces = result.get("pieces", []) if isinstance(result, dict) else []
        for piece in pieces[sent:]:
            yield piece_chunk(piece)
        sent = max(sent, len(pieces))
        if status == "SUCCESS":
            break
        if status in ("FAILURE", "REVOKED") or time.monotonic() > deadline:
            if status not in ("FAILURE", "REVOKED"):
                await asyncio.to_thread(pending.revoke)
            message = (
                f"Generation failed on the worker: {result}"
                if status != "PENDING"
                else f"No inference worker answered within {timeout:.0f} s"
            )
            yield _event(error_body(message, "server_error", None, "generation_failed"))
            yield DONE
            return
        await asyncio.sleep(POLL_INTERVAL_S)

    yield chunk(chat_objects.Delta(), finish_reason=result["finish_reason"])
    if include_usage:
        yield _event(
            chat_objects.ChatCompletionChunk(
                id=chunk_id,
                created=created,
                model=model,
                system_fingerprint=system_fingerprint,
                choices=[],
                usage=usage(result["prompt_tokens"], result["completion_tokens"]),
            )
        )
    yield DONE
