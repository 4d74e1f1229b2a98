"""Playground: a conversation with a fine-tuned adapter (or a checkpoint) and its base model beside it."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from fastapi import APIRouter, Form, Request
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.db import SessionDep
from app.errors import APIError
from app.models import Checkpoint, Run, RunStatus
from app.pages.templating import render
from app.services import runs
from app.services.completions import completion_object, start_chat, wait_for_answer
from app.services.ownership import only_visible

router = APIRouter(include_in_schema=False)


def model_options(session: Session) -> list[dict[str, Any]]:
    """Every finished adapter and each of its checkpoints, newest run first."""
    options = []
    finished = session.exec(
        only_visible(select(Run), Run.owner)
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


async def _answer(
    session: Session, model: str, messages: list[dict[str, str]], max_tokens: int, temperature: float
) -> dict[str, Any]:
    try:
        pending = await run_in_threadpool(
            partial(
                start_chat,
                session,
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=1.0,
                seed=0,
                stop=None,
            )
        )
        completion = completion_object(model, await wait_for_answer(pending))
    except APIError as error:
        return {"model": model, "error": error.message}
    choice = completion["choices"][0]
    return {
        "model": model,
        "content": choice["message"]["content"],
        "finish_reason": choice["finish_reason"],
        "usage": completion["usage"],
    }


MAX_TURNS_KEPT = 20  # earlier turns are dropped from the context (the models are small)


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
    """The next turn of the conversation, answered by the adapter and, beside it, its base model,
    through the same service as /v1/chat/completions."""
    turns = parse_history(history)
    prompt, system = prompt.strip(), system.strip()
    max_tokens = min(max(max_tokens, 1), 512)
    temperature = min(max(temperature, 0.0), 2.0)
    answers = [
        await _answer(session, model, conversation(system, turns, "adapter", prompt), max_tokens, temperature)
    ]
    reference = runs.parse_model_reference(model)
    run = session.get(Run, reference[0]) if reference else None
    if compare_base and run is not None:
        base_messages = conversation(system, turns, "base", prompt)
        answers.append(
            await _answer(session, run.config["model_name"], base_messages, max_tokens, temperature)
        )
    said = [answer.get("content", "") for answer in answers] + [""]
    turns.append({"user": prompt, "adapter": said[0], "base": said[1]})
    return render(
        request,
        "partials/chat_exchange.html",
        "partials/chat_exchange.html",
        {
            "prompt": prompt,
            "answers": answers,
            "base": run.config["model_name"] if run else None,
            "history": json.dumps(turns),
            "turn": len(turns),
        },
    )
