"""The typed bodies of the /v1 API: OpenAI's objects as its spec (version 2.3.0) defines them.

Every route declares one of these as its response_model, so /docs shows it and FastAPI
checks each answer against it. Where the spec types a field as an optional non-null value
(a file's status_details, a checkpoint's metrics), a missing value is left out, never
written as null: `OpenAIObject.omit_if_none` names those fields. What Loraboard adds sits
in a `loraboard` block, which the official client keeps as an attribute.
tests/openai_spec holds the spec's own schemas, against which the tests check every body.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)

Auto = Literal["auto"]


class OpenAIObject(BaseModel):
    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    # No return annotation on purpose: pydantic then documents the model's own fields in /docs.
    @model_serializer(mode="wrap")
    def _leave_out_missing(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):  # type: ignore[no-untyped-def]
        data = handler(self)
        for name in self.omit_if_none:
            if data.get(name) is None:
                data.pop(name, None)
        return data


# --- errors ---------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid request: `param` names the field"),
        (404, "Not found"),
    )
}


# --- files ------------------------------------------------------------------------


class FileExtras(BaseModel):
    format: str | None = Field(description="The detected training-data format (text, messages, ...).")
    num_samples: int | None


class FileObject(OpenAIObject):
    omit_if_none = frozenset({"status_details", "expires_at"})

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    loraboard: FileExtras


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    # The spec types both as strings: an empty list answers "".
    first_id: str
    last_id: str
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


# --- fine-tuning jobs ---------------------------------------------------------------


class Hyperparameters(BaseModel):
    n_epochs: int | Auto = Field(description="Passes over the data, 1-50 (Loraboard: num_train_epochs).")
    batch_size: int | Auto = Field(
        description="Samples per step, 1-256 (Loraboard: per_device_train_batch_size)."
    )
    learning_rate_multiplier: float | Auto = Field(
        description="The learning rate as a multiple of the model's default one (auto: 1.0)."
    )


class SupervisedHyperparameters(Hyperparameters):
    """OpenAI's three, plus every run config field by its own name (lora_r, max_seq_length, ...)."""

    model_config = ConfigDict(extra="allow")


class SupervisedMethod(BaseModel):
    hyperparameters: SupervisedHyperparameters


class Method(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


class WandbIntegration(OpenAIObject):
    omit_if_none = frozenset({"tags"})

    project: str
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None


class Integration(BaseModel):
    type: Literal["wandb"] = "wandb"
    wandb: WandbIntegration


class JobProgress(BaseModel):
    fraction: float | None
    elapsed_seconds: float
    eta_seconds: float | None


class JobExtras(BaseModel):
    status: str = Field(
        description="Loraboard's own state: OpenAI's, or one of pausing, paused, cancelling "
        "(reported to OpenAI clients as running, cancelled, running)."
    )
    config: dict[str, Any] = Field(description="The full run config (core/run_config.py).")
    derived: dict[str, Any]
    runtime: dict[str, Any]
    current_step: int
    total_steps: int | None
    progress: JobProgress
    started_at: int | None
    worker: str | None
    attempts: int


class FineTuningJob(OpenAIObject):
    omit_if_none = frozenset({"metadata", "integrations"})

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[Integration] | None = Field(
        default=None, description="[{type: wandb, wandb: {...}}] when the job logs to Weights & Biases."
    )
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None
    method: Method
    loraboard: JobExtras


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any]
    type: Literal["message", "metrics"]


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class CheckpointMetrics(OpenAIObject):
    """OpenAI's names; Loraboard's other measurements of that step ride along."""

    model_config = ConfigDict(extra="allow")
    omit_if_none = frozenset(
        {
            "train_loss",
            "train_mean_token_accuracy",
            "valid_loss",
            "valid_mean_token_accuracy",
            "full_valid_loss",
            "full_valid_mean_token_accuracy",
        }
    )

    step: float
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class Checkpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Checkpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool


# --- models and chat ----------------------------------------------------------------


class BuiltinModelDetails(BaseModel):
    """What the model picker shows of a built-in base model (Loraboard's extension field)."""

    title: str
    parameters: str
    license: str
    note: str


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    loraboard: BuiltinModelDetails | None = Field(
        default=None, description="Loraboard's extension: set on the built-in base models"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


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
