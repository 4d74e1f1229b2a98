"""Playground: one prompt, answered by a fine-tuned adapter (or a checkpoint) and by its base model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from sqlmodel import Session, col, select
from starlette.responses import Response

from app.db import SessionDep
from app.errors import APIError
from app.models import Checkpoint, Run, RunStatus
from app.pages.templating import render
from app.services import runs
from app.services.completions import complete_chat

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
    """Each side answers the same fresh conversation, through the same service as /v1/chat/completions."""
    messages = [{"role": "system", "content": system.strip()}] if system.strip() else []
    messages.append({"role": "user", "content": prompt.strip()})
    max_tokens = min(max(max_tokens, 1), 512)
    temperature = min(max(temperature, 0.0), 2.0)
    answers = [_answer(session, model, messages, max_tokens, temperature)]
    reference = runs.parse_model_reference(model)
    run = session.get(Run, reference[0]) if reference else None
    if compare_base and run is not None:
        answers.append(_answer(session, run.config["model_name"], messages, max_tokens, temperature))
    return render(
        request,
        "partials/chat_exchange.html",
        "partials/chat_exchange.html",
        {"prompt": prompt, "answers": answers, "base": run.config["model_name"] if run else None},
    )
