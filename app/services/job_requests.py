"""An OpenAI fine-tuning request -> a RunConfig.

OpenAI's three hyperparameters map onto the classic names (n_epochs ->
num_train_epochs, batch_size -> per_device_train_batch_size,
learning_rate_multiplier -> a multiple of the classic recipe's 2e-4, whatever the preset); every other
RunConfig field may be sent by its own name in the same hyperparameters object.
Fields not sent take the preset's value: the classic recipe, or the CPU demo preset
when the model is the built-in demo model (the classic recipe would crawl on a CPU).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import APIError, config_validation_error
from app.run_config import MODEL_PRESETS, PRESETS, RunConfig

CLASSIC_LEARNING_RATE: float = RunConfig.model_fields["learning_rate"].default
OPENAI_NAMES = {"n_epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size"}
# Fields of the request itself, not hyperparameters: sending them inside
# hyperparameters would be ambiguous.
REQUEST_FIELDS = {"model_name", "dataset", "validation_dataset", "seed"}
# OpenAI's own limits on metadata and suffix: the suffix becomes part of a model id
# (ft:<base>:<suffix>:<job id>), so it must not carry separators, control or bidi characters.
METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
SUFFIX_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="allow")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["supervised"] = "supervised"
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
    integrations: list[Any] | None = None

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


def _storable(text: str) -> bool:
    # PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def run_config_from_request(request: JobCreate) -> RunConfig:
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
    multiplier = hyperparameters.pop("learning_rate_multiplier", "auto")
    for openai_name, name in OPENAI_NAMES.items():
        value = hyperparameters.pop(openai_name, "auto")
        if value != "auto":
            if name in hyperparameters:
                raise APIError(400, f"Send either {openai_name} or {name}, not both", param=openai_name)
            hyperparameters[name] = value
    values.update(hyperparameters)
    if multiplier != "auto":
        if "learning_rate" in hyperparameters:
            raise APIError(
                400,
                "Send either learning_rate_multiplier or learning_rate, not both",
                param="learning_rate_multiplier",
            )
        if (
            not isinstance(multiplier, int | float)
            or isinstance(multiplier, bool)
            or not math.isfinite(multiplier)
            or multiplier <= 0
        ):
            raise APIError(
                400,
                "learning_rate_multiplier must be a positive number or 'auto'",
                param="learning_rate_multiplier",
            )
        values["learning_rate"] = CLASSIC_LEARNING_RATE * multiplier

    values.update(
        model_name=request.model, dataset=request.training_file, validation_dataset=request.validation_file
    )
    if request.seed is not None:
        values["seed"] = request.seed
    try:
        return RunConfig(**values)
    except ValidationError as error:
        raise config_validation_error(error) from error
