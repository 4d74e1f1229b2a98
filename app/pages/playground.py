"""Playground: a conversation with a fine-tuned adapter (or a checkpoint) and its base model beside it.

Each side keeps its own side of the conversation: the adapter sees its own earlier answers,
the base its own, as a chat with either alone would. The page keeps the finished turns in
a hidden field (history) and sends them back with each message. From the page (htmx) the
answers stream in (loraboard.js posts each side's messages to /playground/stream and adds
the finished turn to the history); a plain form post waits for them whole.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Form, Request
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from app.db import SessionDep
from app.errors import APIError
from app.lifecycle import model_names
from app.models import Checkpoint, Run
from app.pages.templating import render
from app.services import runs
from app.services.chat_stream import stream_chat
from app.services.completions import await_chat, completion_body, resolve_model, start_chat

router = APIRouter(include_in_schema=False)


def model_options(session: Session) -> list[dict[str, Any]]:
    """Every finished adapter and each of its checkpoints, newest run first."""
    options = []
    for run in runs.list_succeeded_runs(session, limit=50):
        options.append(
            {
                "value": run.fine_tuned_model or model_names.fine_tuned_model_name(run),
                "label": f"{run.suffix or run.id} · final adapter",
                "base": run.config["model_name"],
            }
        )
        checkpoints = session.exec(
            select(Checkpoint).where(Checkpoint.run_id == run.id).order_by(col(Checkpoint.step).desc())
        ).all()
        options += [
            {
                "value": model_names.checkpoint_model_name(run, checkpoint.step),
                "label": f"{run.suffix or run.id} · checkpoint step {checkpoint.step}",
                "base": run.config["model_name"],
            }
            for checkpoint in checkpoints
        ]
    return options


@router.get("/playground")
def playground_page(request: Request, session: SessionDep, model: str | None = None) -> Response:
    options = model_options(session)
    selected = model or (options[0]["value"] if options else None)
    return render(
        request, "pages/playground.html", "pages/playground.html", {"options": options, "selected": selected}
    )


CHAT_OPTIONS = {"top_p": 1.0, "seed": 0, "stop": None}
MAX_TURNS_KEPT = 20  # earlier turns are dropped from the context (the models are small)
ROLES = ("system", "user", "assistant")


async def _answer(
    session: Session, model: str, messages: list[dict[str, str]], max_tokens: int, temperature: float
) -> dict[str, Any]:
    """A whole answer, awaited without holding a server thread."""
    try:
        pending, target = await run_in_threadpool(
            start_chat,
            session,
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            **CHAT_OPTIONS,
        )
        completion = completion_body(model, target, await await_chat(pending))
    except APIError as error:
        return {"model": model, "error": error.message}
    choice = completion.choices[0]
    return {
        "model": model,
        "content": choice.message.content,
        "finish_reason": choice.finish_reason,
        "usage": completion.usage.model_dump(),
    }


def parse_history(raw: str) -> list[dict[str, Any]]:
    """The conversation so far, as the page keeps it: [{"user", "adapter", "base"}], oldest first.

    It comes back from the browser, so anything malformed starts a new conversation."""
    try:
        turns = json.loads(raw or "[]")
    except ValueError:
        return []
    if not isinstance(turns, list):
        return []
    kept = [
        {key: turn[key] if isinstance(turn.get(key), str) else "" for key in ("user", "adapter", "base")}
        for turn in turns
        if isinstance(turn, dict) and isinstance(turn.get("user"), str)
    ]
    return kept[-MAX_TURNS_KEPT:]


def conversation(system: str, history: list[dict[str, Any]], side: str, prompt: str) -> list[dict[str, str]]:
    """One side's messages: each side sees its own earlier answers, as a chat with it alone would."""
    messages = [{"role": "system", "content": system}] if system else []
    for turn in history:
        messages.append({"role": "user", "content": turn["user"]})
        messages.append({"role": "assistant", "content": turn[side]})
    messages.append({"role": "user", "content": prompt})
    return messages


def _stream_placeholder(
    session: Session, model: str, messages: list[dict[str, str]], max_tokens: int, temperature: float
) -> dict[str, Any]:
    """An answer the page fills in as it streams (loraboard.js posts `stream` to /playground/stream)."""
    try:
        resolve_model(session, model)
    except APIError as error:
        return {"model": model, "error": error.message}
    fields = {
        "model": model,
        "messages": json.dumps(messages),
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    return {"model": model, "stream": fields}


@router.post("/playground/chat")
async def chat(
    request: Request,
    session: SessionDep,
    model: str = Form(...),
    prompt: str = Form(...),
    system: str = Form(""),
    history: str = Form("[]"),
    max_tokens: int = Form(32),
    temperature: float = Form(0.0),
    compare_base: bool = Form(False),
) -> Response:
    """The next turn: the adapter's answer and, beside it, its base model's, through the same
    service as /v1/chat/completions."""
    turns = parse_history(history)
    prompt, system = prompt.strip(), system.strip()
    max_tokens = min(max(max_tokens, 1), 512)
    temperature = min(max(temperature, 0.0), 2.0)
    reference = model_names.parse_model_reference(model)
    run = session.get(Run, reference[0]) if reference else None
    sides = [("adapter", model)]
    if compare_base and run is not None:
        sides.append(("base", run.config["model_name"]))
    if request.headers.get("HX-Request"):
        # Streamed: the page adds this turn to the history once both answers are complete.
        answers = [
            _stream_placeholder(
                session, name, conversation(system, turns, side, prompt), max_tokens, temperature
            )
            for side, name in sides
        ]
    else:
        answers = [
            await _answer(session, name, conversation(system, turns, side, prompt), max_tokens, temperature)
            for side, name in sides
        ]
        said = {side: answer.get("content", "") for (side, _), answer in zip(sides, answers, strict=True)}
        turns.append({"user": prompt, "adapter": said.get("adapter", ""), "base": said.get("base", "")})
    return render(
        request,
        "partials/chat_exchange.html",
        "partials/chat_exchange.html",
        {
            "prompt": prompt,
            "answers": answers,
            "base": run.config["model_name"] if run else None,
            "history": json.dumps(turns),
        },
    )


def parse_messages(raw: str) -> list[dict[str, str]]:
    """One side's conversation as the page sends it back; a 400 if it is not one."""
    try:
        messages = json.loads(raw)
    except ValueError:
        messages = None
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(item, dict) and item.get("role") in ROLES and isinstance(item.get("content"), str)
            for item in messages
        )
    ):
        raise APIError(400, "messages must be a list of {role, content} turns", param="messages")
    return [{"role": item["role"], "content": item["content"]} for item in messages]


@router.post("/playground/stream")
async def stream(
    session: SessionDep,
    model: str = Form(...),
    messages: str = Form(...),
    max_tokens: int = Form(32),
    temperature: float = Form(0.0),
) -> Response:
    """One answer as server-sent chat.completion.chunk events, as /v1/chat/completions streams them."""
    pending, target = await run_in_threadpool(
        start_chat,
        session,
        model=model,
        messages=parse_messages(messages),
        max_tokens=min(max(max_tokens, 1), 512),
        temperature=min(max(temperature, 0.0), 2.0),
        stream=True,
        **CHAT_OPTIONS,
    )
    events = stream_chat(pending, model=model, target=target, include_usage=True)
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
