"""/v1/chat/completions and /v1/models: talk to a fine-tuned adapter (OpenAI's shapes)."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from app.db import SessionDep
from app.errors import APIError
from app.model_catalog import BUILTIN_MODELS, BuiltinModel
from app.models import Run, RunStatus
from app.services import runs
from app.services.completions import completion_object, start_chat, wait_for_answer
from app.services.ownership import visible

router = APIRouter(tags=["chat"])


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]

    def as_text(self) -> dict[str, str]:
        content = self.content
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content}


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False

    @field_validator("stream")
    @classmethod
    def _no_streaming(cls, value: bool) -> bool:
        if value:
            raise ValueError("streaming is not supported yet; send stream=false")
        return value


@router.post(
    "/chat/completions", summary="Chat with a base model or a fine-tuned adapter (served by a worker)"
)
async def chat_completions(request: ChatCompletionRequest, session: SessionDep) -> dict[str, Any]:
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    pending = await run_in_threadpool(
        partial(
            start_chat,
            session,
            model=request.model,
            messages=[message.as_text() for message in request.messages],
            max_tokens=request.max_completion_tokens or request.max_tokens or 256,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=stop,
        )
    )
    # Awaited, not blocked on: a slow or absent worker holds no server thread (completions.py).
    return completion_object(request.model, await wait_for_answer(pending))


def _model_object(model_id: str, created: int | None, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created or 0, "owned_by": owned_by}


def _builtin_object(model: BuiltinModel) -> dict[str, Any]:
    """A built-in base model, with what the model picker shows (size, licence, provenance) beside
    OpenAI's fields."""
    details = {
        "title": model.title,
        "parameters": model.parameters,
        "license": model.license,
        "note": model.note,
    }
    return {**_model_object(model.id, 0, "loraboard"), "loraboard": details}


@router.get(
    "/models", summary="Models you can chat with: the built-in base models and every fine-tuned adapter"
)
def list_models(session: SessionDep) -> dict[str, Any]:
    data = [_builtin_object(model) for model in BUILTIN_MODELS.values()]
    succeeded = session.exec(
        select(Run).where(Run.status == RunStatus.succeeded.value).order_by(col(Run.created_at).desc())
    ).all()
    data += [
        _model_object(run.fine_tuned_model or "", runs.timestamp(run.finished_at), "user")
        for run in succeeded
        if visible(run.owner)
    ]
    return {"object": "list", "data": data}


@router.get("/models/{model:path}", summary="Retrieve a model")
def retrieve_model(model: str, session: SessionDep) -> dict[str, Any]:
    if model in BUILTIN_MODELS:
        return _builtin_object(BUILTIN_MODELS[model])
    reference = runs.parse_model_reference(model)
    run = session.get(Run, reference[0]) if reference else None
    if run is None or run.status != RunStatus.succeeded or not visible(run.owner):
        raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
    return _model_object(model, runs.timestamp(run.finished_at), "user")
