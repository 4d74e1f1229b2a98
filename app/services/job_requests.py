"""An OpenAI fine-tuning request -> a RunConfig.

OpenAI's three hyperparameters map onto the classic names (n_epochs ->
num_train_epochs, batch_size -> per_device_train_batch_size,
learning_rate_multiplier -> a multiple of the classic recipe's 2e-4, whatever the preset); every other
RunConfig field may be sent by its own name in the same hyperparameters object.
Fields not sent take the preset's value: the classic recipe, or the CPU demo preset
when the model is the built-in demo model (the classic recipe would crawl on a CPU).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import APIError, config_validation_error
from app.run_config import MODEL_PRESETS, PRESETS, RunConfig

CLASSIC_LEARNING_RATE: float = RunConfig.model_fields["learning_rate"].default
OPENAI_NAMES = {"n_epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size"}
# Fields of the request itself, not hyperparameters: sending them inside
# hyperparameters would be ambiguous.
REQUEST_FIELDS = {"model_name", "dataset", "validation_dataset", "seed"}


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="allow")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod | None = None


class JobCreate(BaseModel):
    """POST /v1/fine_tuning/jobs, as OpenAI defines it."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, description="Base model: hub id, local directory, or demo-tiny-llama.")
    training_file: str = Field(
        min_length=1, description="An uploaded file id, a hub dataset id or a local path."
    )
    validation_file: str | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0)
    metadata: dict[str, str] | None = None
    hyperparameters: dict[str, Any] | None = Field(
        default=None, description="Deprecated by OpenAI; use method."
    )
    method: Method | None = None
    integrations: list[Any] | None = None


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
        if not isinstance(multiplier, int | float) or isinstance(multiplier, bool) or multiplier <= 0:
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
