"""OpenAI's chat completion objects as its spec (version 2.3.0) defines them: built by the
completion services (completions.py, chat_stream.py), declared by /v1/chat/completions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.openai_object import OpenAIObject


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str = Field(description="Names the served base, adapter and quantization.")
    choices: list[Choice]
    usage: Usage


class Delta(OpenAIObject):
    omit_if_none = frozenset({"role", "content"})

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(OpenAIObject):
    """One server-sent event of a streamed completion (`data: {...}`; the stream ends `data: [DONE]`)."""

    omit_if_none = frozenset({"usage"})

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
