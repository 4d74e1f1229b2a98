"""/v1/chat/completions and /v1/models: talk to a fine-tuned adapter (OpenAI's shapes)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from app.api import schemas
from app.api.schemas import ERROR_RESPONSES
from app.db import SessionDep
from app.errors import APIError
from app.lifecycle import model_names
from app.models import Run, RunStatus
from app.services import runs
from app.services.chat_stream import stream_chat
from app.services.completions import await_chat, completion_body, start_chat
from app.services.ownership import visible
from core.model_catalog import BUILTIN_MODELS, BuiltinModel

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)


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


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI options whose meaning Loraboard cannot honour: refused by name, never silently ignored.
NOT_SERVED = {
    "response_format": "structured output (response_format) is not supported; ask for a format in the prompt",
    "tools": "tool calling (tools) is not supported by Loraboard's chat",
    "tool_choice": "tool calling (tool_choice) is not supported by Loraboard's chat",
    "functions": "function calling (functions) is not supported by Loraboard's chat",
    "function_call": "function calling (function_call) is not supported by Loraboard's chat",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
}


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
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="after")
    def _refuse_what_is_not_served(self) -> ChatCompletionRequest:
        for name, reason in NOT_SERVED.items():
            if (self.model_extra or {}).get(name) not in (None, [], {}):
                raise APIError(400, f"{reason}.", param=name, code="unsupported_parameter")
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true.", param="top_logprobs")
        return self

    @property
    def stop_list(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop


# With stream=true the answer is server-sent events: `data: <ChatCompletionChunk>` per piece, `data: [DONE]`.
STREAM_RESPONSE = {
    "content": {
        "text/event-stream": {
            "schema": {"type": "string", "description": "data: {chat.completion.chunk} ... data: [DONE]"}
        }
    }
}


@router.post(
    "/chat/completions",
    summary="Chat with a base model or a fine-tuned adapter (served by a worker); stream=true streams",
    response_model=schemas.ChatCompletion,
    responses={200: STREAM_RESPONSE},
)
async def chat_completions(request: ChatCompletionRequest, session: SessionDep) -> Any:
    """Async: a request waits on the worker without holding a server thread."""
    pending, target = await run_in_threadpool(
        start_chat,
        session,
        model=request.model,
        messages=[message.as_text() for message in request.messages],
        max_tokens=request.max_completion_tokens or request.max_tokens or 256,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=request.stop_list,
        stream=request.stream,
        logprobs=request.logprobs,
        top_logprobs=request.top_logprobs or 0,
    )
    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        events = stream_chat(pending, model=request.model, target=target, include_usage=include_usage)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return completion_body(request.model, target, await await_chat(pending))


def _model_object(model_id: str, created: int | None, owned_by: str) -> schemas.ModelObject:
    return schemas.ModelObject(id=model_id, created=created or 0, owned_by=owned_by)


def _builtin_object(model: BuiltinModel) -> schemas.ModelObject:
    """A built-in base model, with what the model picker shows (size, licence, provenance) beside
    OpenAI's fields."""
    details = schemas.BuiltinModelDetails(
        title=model.title, parameters=model.parameters, license=model.license, note=model.note
    )
    return schemas.ModelObject(id=model.id, created=0, owned_by="loraboard", loraboard=details)


@router.get(
    "/models", summary="Models you can chat with: the built-in base models and every fine-tuned adapter"
)
def list_models(session: SessionDep) -> schemas.ModelList:
    data = [_builtin_object(model) for model in BUILTIN_MODELS.values()]
    data += [
        _model_object(run.fine_tuned_model or "", runs.timestamp(run.finished_at), "user")
        for run in runs.list_succeeded_runs(session)
    ]
    return schemas.ModelList(data=data)


@router.get("/models/{model:path}", summary="Retrieve a model")
def retrieve_model(model: str, session: SessionDep) -> schemas.ModelObject:
    if model in BUILTIN_MODELS:
        return _builtin_object(BUILTIN_MODELS[model])
    reference = model_names.parse_model_reference(model)
    run = session.get(Run, reference[0]) if reference else None
    if run is None or run.status != RunStatus.succeeded or not visible(run.owner):
        raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
    return _model_object(model, runs.timestamp(run.finished_at), "user")
