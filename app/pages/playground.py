"""Playground: one prompt, answered by a fine-tuned adapter (or a checkpoint) and by its base model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from app.db import SessionDep
from app.errors import APIError
from app.models import Checkpoint, Run, RunStatus
from app.pages.templating import render
from app.services import runs
from app.services.chat_stream import stream_chat
from app.services.completions import complete_chat, resolve_model, start_chat

router = APIRouter(include_in_schema=False)


def model_options(session: Session) -> list[dict[str, Any]]:
    """Every finished adapter and each of its checkpoints, newest run first."""
    options = []
    finished = session.exec(
        select(Run)
        .where(Run.status == RunStatus.succeeded.value)
        .order_by(col(Run.created_at).desc())
        .limit(50)
    ).all()
    for run in finished:
        options.append(
            {
                "value": run.fine_tuned_model or runs.fine_tuned_model_name(run),
                "label": f"{run.suffix or run.id} · final adapter",
                "base": run.config["model_name"],
            }
        )
        checkpoints = session.exec(
            select(Checkpoint).where(Checkpoint.run_id == run.id).order_by(col(Checkpoint.step).desc())
        ).all()
        options += [
            {
                "value": runs.checkpoint_model_name(run, checkpoint.step),
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


def _answer(
    session: Session, model: str, messages: list[dict[str, str]], max_tokens: int, temperature: float
) -> dict[str, Any]:
    try:
        completion = complete_chat(
            session,
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=1.0,
            seed=0,
            stop=None,
        )
    except APIError as error:
        return {"model": model, "error": error.message}
    choice = completion.choices[0]
    return {
        "model": model,
        "content": choice.message.content,
        "finish_reason": choice.finish_reason,
        "usage": completion.usage.model_dump(),
    }


def _stream_placeholder(session: Session, model: str, fields: dict[str, Any]) -> dict[str, Any]:
    """An answer the page fills in as it streams (loraboard.js posts `stream` to /playground/stream)."""
    try:
        resolve_model(session, model)
    except APIError as error:
        return {"model": model, "error": error.message}
    return {"model": model, "stream": {**fields, "model": model}}


@router.post("/playground/chat")
def chat(
    request: Request,
    session: SessionDep,
    model: str = Form(...),
    prompt: str = Form(...),
    system: str = Form(""),
    max_tokens: int = Form(32),
    temperature: float = Form(0.0),
    compare_base: bool = Form(False),
) -> Response:
    """Each side answers the same fresh conversation, through the same service as /v1/chat/completions.

    From the page (htmx) the answers stream in; a plain form post waits for them whole.
    """
    messages = _messages(system, prompt)
    max_tokens = min(max(max_tokens, 1), 512)
    temperature = min(max(temperature, 0.0), 2.0)
    reference = runs.parse_model_reference(model)
    run = session.get(Run, reference[0]) if reference else None
    models = [model]
    if compare_base and run is not None:
        models.append(run.config["model_name"])
    if request.headers.get("HX-Request"):
        fields = {"system": system, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
        answers = [_stream_placeholder(session, name, fields) for name in models]
    else:
        answers = [_answer(session, name, messages, max_tokens, temperature) for name in models]
    return render(
        request,
        "partials/chat_exchange.html",
        "partials/chat_exchange.html",
        {"prompt": prompt, "answers": answers, "base": run.config["model_name"] if run else None},
    )


def _messages(system: str, prompt: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system.strip()}] if system.strip() else []
    messages.append({"role": "user", "content": prompt.strip()})
    return messages


@router.post("/playground/stream")
async def stream(
    session: SessionDep,
    model: str = Form(...),
    prompt: str = Form(...),
    system: str = Form(""),
    max_tokens: int = Form(32),
    temperature: float = Form(0.0),
) -> Response:
    """One answer as server-sent chat.completion.chunk events, as /v1/chat/completions streams them."""
    pending, target = await run_in_threadpool(
        start_chat,
        session,
        model=model,
        messages=_messages(system, prompt),
        max_tokens=min(max(max_tokens, 1), 512),
        temperature=min(max(temperature, 0.0), 2.0),
        top_p=1.0,
        seed=0,
        stop=None,
        stream=True,
    )
    events = stream_chat(pending, model=model, target=target, include_usage=True)
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
