"""An OpenAI fine-tuning request -> a RunConfig.

OpenAI's three hyperparameters map onto the classic names (n_epochs ->
num_train_epochs, batch_size -> per_device_train_batch_size, learning_rate_multiplier ->
a multiple of the learning rate "auto" picks for the model); every other RunConfig
field may be sent by its own name in the same hyperparameters object. OpenAI's names keep
OpenAI's bounds (n_epochs 1-50, batch_size 1-256), and errors name the field as it was sent.
Fields not sent take the preset's value: the classic recipe, or the CPU demo preset
when the model is the built-in demo model (the classic recipe would crawl on a CPU).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import APIError, describe_validation_errors
from app.services import integrations
from core.run_config import MODEL_PRESETS, PRESETS, RunConfig

CLASSIC_LEARNING_RATE: float = RunConfig.model_fields["learning_rate"].default
# OpenAI's name -> the run config's, and the bounds OpenAI's spec gives it.
OPENAI_NAMES = {"n_epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size"}
OPENAI_BOUNDS = {"n_epochs": (1, 50), "batch_size": (1, 256)}
# Fields of the request itself, not hyperparameters: sending them inside
# hyperparameters would be ambiguous.
REQUEST_FIELDS = {"model_name", "dataset", "validation_dataset", "seed"}
# OpenAI's own limits on metadata and suffix: the suffix becomes part of a model id
# (ft:<base>:<suffix>:<job id>), so it must not carry separators, control or bidi characters.
METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
SUFFIX_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
SUPPORTED_METHODS = ("supervised",)
# OpenAI keeps a checkpoint per epoch, the last three: a job that asks for no other saving gets that.
EPOCH_CHECKPOINTS_KEPT = 3


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="allow")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(default="supervised", description="supervised (dpo and reinforcement: a 400)")
    supervised: SupervisedMethod | None = None


class JobCreate(BaseModel):
    """POST /v1/fine_tuning/jobs, as OpenAI defines it."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str = Field(
        min_length=1, max_length=500, description="Base model: hub id, local directory, or demo-tiny-llama."
    )
    training_file: str = Field(
        min_length=1, max_length=1000, description="An uploaded file id, a hub dataset id or a local path."
    )
    validation_file: str | None = Field(default=None, max_length=1000)
    suffix: str | None = Field(
        default=None,
        pattern=SUFFIX_PATTERN,
        description="Up to 64 letters, digits, '-', '_' or '.'; it becomes part of the model id.",
    )
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    metadata: dict[str, str] | None = Field(
        default=None,
        description=f"At most {METADATA_MAX_KEYS} keys of up to {METADATA_MAX_KEY_CHARS} characters, "
        f"values of up to {METADATA_MAX_VALUE_CHARS}.",
    )
    hyperparameters: dict[str, Any] | None = Field(
        default=None, description="Deprecated by OpenAI; use method."
    )
    method: Method | None = None
    integrations: list[dict[str, Any]] | None = Field(
        default=None,
        description="OpenAI's [{type: wandb, wandb: {project, name, entity, tags}}]: accepted where "
        "the wandb package and a key (or offline mode) are configured, else refused (400).",
    )

    @field_validator("metadata")
    @classmethod
    def _openai_metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} keys, found {len(value)}")
        for key, item in value.items():
            if len(key) > METADATA_MAX_KEY_CHARS:
                raise ValueError(f"keys are at most {METADATA_MAX_KEY_CHARS} characters")
            if len(item) > METADATA_MAX_VALUE_CHARS:
                raise ValueError(f"values are at most {METADATA_MAX_VALUE_CHARS} characters")
            if not _storable(key) or not _storable(item):
                raise ValueError("keys and values must be valid Unicode without NUL characters")
        return value


def auto_learning_rate(model: str) -> float:
    """The learning rate 'auto' means for this model: its default preset's."""
    preset = PRESETS[MODEL_PRESETS.get(model, "classic")]
    return float(preset.get("learning_rate", CLASSIC_LEARNING_RATE))


def _check_method(method: Method | None) -> None:
    if method is not None and method.type not in SUPPORTED_METHODS:
        raise APIError(
            400,
            f"Fine-tuning method '{method.type}' is not supported: Loraboard trains supervised "
            "fine-tuning (QLoRA) only; send method.type 'supervised'.",
            param="method.type",
            code="unsupported_method",
        )


def _openai_value(name: str, value: Any) -> Any:
    """'auto' or an integer within OpenAI's bounds for n_epochs / batch_size."""
    if value == "auto":
        return value
    low, high = OPENAI_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise APIError(
            400,
            f"{name} must be 'auto' or an integer from {low} to {high}; got {value!r}",
            param=name,
            code="invalid_hyperparameters",
        )
    return value


def _learning_rate(model: str, multiplier: Any) -> float:
    if (
        isinstance(multiplier, bool)
        or not isinstance(multiplier, int | float)
        or not math.isfinite(multiplier)
        or multiplier <= 0
    ):
        raise APIError(
            400,
            "learning_rate_multiplier must be a positive number or 'auto'",
            param="learning_rate_multiplier",
            code="invalid_hyperparameters",
        )
    return auto_learning_rate(model) * multiplier


def _storable(text: str) -> bool:
    # PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def run_config_from_request(request: JobCreate) -> RunConfig:
    _check_method(request.method)
    integration_values = integrations.config_values(request.integrations)
    hyperparameters = dict(request.hyperparameters or {})
    if request.method and request.method.supervised:
        hyperparameters.update(request.method.supervised.hyperparameters)
    preset_name = hyperparameters.pop("preset", None) or MODEL_PRESETS.get(request.model, "classic")
    if preset_name not in PRESETS:
        raise APIError(
            400, f"Unknown preset '{preset_name}': use one of {', '.join(PRESETS)}", param="preset"
        )
    values: dict[str, Any] = dict(PRESETS[preset_name])

    for name in REQUEST_FIELDS & hyperparameters.keys():
        raise APIError(400, f"'{name}' is a field of the request, not a hyperparameter", param=name)
    sent_as: dict[str, str] = {}  # run config field -> the OpenAI name the user sent it as
    multiplier = hyperparameters.pop("learning_rate_multiplier", "auto")
    for openai_name, name in OPENAI_NAMES.items():
        value = _openai_value(openai_name, hyperparameters.pop(openai_name, "auto"))
        if value != "auto":
            if name in hyperparameters:
                raise APIError(400, f"Send either {openai_name} or {name}, not both", param=openai_name)
            hyperparameters[name] = value
            sent_as[name] = openai_name
    values.update(hyperparameters)
    if multiplier != "auto":
        if "learning_rate" in hyperparameters:
            raise APIError(
                400,
                "Send either learning_rate_multiplier or learning_rate, not both",
                param="learning_rate_multiplier",
            )
        values["learning_rate"] = _learning_rate(request.model, multiplier)
        sent_as["learning_rate"] = "learning_rate_multiplier"

    if not {"save_steps", "save_every_epoch"} & hyperparameters.keys():
        values["save_every_epoch"] = True
        values.setdefault("save_total_limit", EPOCH_CHECKPOINTS_KEPT)
    values.update(integration_values)
    values.update(
        model_name=request.model, dataset=request.training_file, validation_dataset=request.validation_file
    )
    if request.seed is not None:
        values["seed"] = request.seed
    try:
        return RunConfig(**values)
    except ValidationError as error:
        raise _public_error(error, sent_as) from error


def _public_error(error: ValidationError, sent_as: dict[str, str]) -> APIError:
    """The config's complaint, naming each field as the request named it (n_epochs, not num_train_epochs)."""
    details = []
    for item in error.errors():
        location = tuple(sent_as.get(str(part), part) for part in item.get("loc", ()))
        message = item.get("msg", "")
        for name, public in sent_as.items():
            message = message.replace(name, public)
        details.append({**item, "loc": location, "msg": message})
    message, param = describe_validation_errors(details)
    return APIError(400, f"Invalid hyperparameters: {message}", param=param, code="invalid_hyperparameters")
