"""The new-run form: RunConfig's fields as form widgets, and form data back to a validated RunConfig.

The widgets are derived from the schema (bool -> checkbox, Literal -> select, numbers ->
number inputs), so a field added to RunConfig appears in the form with its help text.
Validation is RunConfig's own, the same the API runs; its errors are keyed by field.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from starlette.datastructures import FormData

from core.run_config import (
    GROUPS,
    RunConfig,
    field_docs,
    transformers_optimizer_names,
    transformers_scheduler_names,
)

FORM_ONLY_FIELDS = ("suffix", "dataset_custom")
NUMBER_STEPS = {
    "learning_rate": "any",
    "weight_decay": "any",
    "lora_dropout": "any",
    "warmup_ratio": "any",
    "eval_fraction": "any",
    "num_train_epochs": "any",
    "max_grad_norm": "any",
    "lora_alpha": "any",
}


@dataclass
class FormField:
    name: str
    description: str
    help: str
    kind: str  # checkbox | select | number | text
    value: str = ""
    checked: bool = False
    options: list[str] = field(default_factory=list)
    step: str = "1"
    minimum: str | None = None
    maximum: str | None = None
    placeholder: str = ""
    error: str | None = None


@dataclass
class FormGroup:
    key: str
    title: str
    fields: list[FormField]


@dataclass
class ParsedForm:
    config: RunConfig | None
    values: dict[str, Any]
    errors: dict[str, str]
    suffix: str | None = None


def _base_types(annotation: Any) -> list[Any]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _optional(name: str) -> bool:
    annotation = RunConfig.model_fields[name].annotation
    return type(None) in typing.get_args(annotation)


def _widget(name: str) -> dict[str, Any]:
    """kind, options and bounds of a field's input, read from its annotation and constraints."""
    info = RunConfig.model_fields[name]
    base = _base_types(info.annotation)
    if name == "optim":
        return {"kind": "select", "options": sorted(transformers_optimizer_names())}
    if name == "lr_scheduler_type":
        return {"kind": "select", "options": sorted(transformers_scheduler_names())}
    if base == [bool]:
        return {"kind": "checkbox"}
    if len(base) == 1 and typing.get_origin(base[0]) is Literal:
        return {"kind": "select", "options": [str(option) for option in typing.get_args(base[0])]}
    if len(base) == 1 and base[0] in (int, float):
        bounds: dict[str, Any] = {
            "kind": "number",
            "step": NUMBER_STEPS.get(name, "1" if base[0] is int else "any"),
        }
        for constraint in info.metadata:
            for attr, key in (("ge", "minimum"), ("gt", "minimum"), ("le", "maximum"), ("lt", "maximum")):
                if getattr(constraint, attr, None) is not None:
                    bounds[key] = str(getattr(constraint, attr))
        return bounds
    return {"kind": "text"}


def display_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return repr(value) if abs(value) < 1e-3 and value != 0 else f"{value:g}"
    return str(value)


def build_groups(values: dict[str, Any], errors: dict[str, str] | None = None) -> list[FormGroup]:
    """The form's sections in GROUPS order, each field with its value, help and error."""
    errors = errors or {}
    docs = field_docs()
    groups = {key: FormGroup(key, title, []) for key, title in GROUPS.items()}
    placeholders = {
        "target_modules": "q_proj, v_proj  or  all-linear",
        "max_seq_length": "1024 (library default)",
        "new_model": "derived from the run",
        "device_map": '{"": 0}  or  auto',
        "validation_dataset": "none",
        "save_total_limit": "keep all",
        "eval_steps": "= logging_steps",
    }
    for name, doc in docs.items():
        value = values.get(name)
        form_field = FormField(
            name=name,
            description=doc["description"],
            help=doc["help"],
            **_widget(name),
            value=display_value(value),
            checked=bool(value),
            error=errors.get(name),
            placeholder=placeholders.get(name, ""),
        )
        groups[doc["group"]].fields.append(form_field)
    return list(groups.values())


def form_values(form: FormData) -> dict[str, Any]:
    """Raw form data -> the values RunConfig validates (checkboxes, empties, JSON device maps)."""
    values: dict[str, Any] = {}
    for name in RunConfig.model_fields:
        widget = _widget(name)
        if widget["kind"] == "checkbox":
            # A hidden "false" precedes each checkbox so an unchecked box still sends its field.
            values[name] = "true" in form.getlist(name)
            continue
        if name not in form:
            continue
        raw = str(form.get(name, "")).strip()
        if raw == "" and (_optional(name) or name == "target_modules"):
            values[name] = None
        elif name == "device_map" and raw.startswith("{"):
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError:
                values[name] = raw  # RunConfig accepts a string; the worker reports a bad map
        else:
            values[name] = raw
    custom = str(form.get("dataset_custom", "")).strip()
    if custom:
        values["dataset"] = custom
    return values


def parse_form(form: FormData) -> ParsedForm:
    values = form_values(form)
    suffix = str(form.get("suffix", "")).strip() or None
    errors: dict[str, str] = {}
    if suffix and len(suffix) > 64:
        errors["suffix"] = "at most 64 characters"
    try:
        config = RunConfig(**values)
    except ValidationError as error:
        return ParsedForm(None, values, {**errors, **validation_errors(error)}, suffix)
    return ParsedForm(None if errors else config, values, errors, suffix)


def validation_errors(error: ValidationError) -> dict[str, str]:
    """pydantic errors -> {field: message}; errors about the whole config go under '__all__'."""
    found: dict[str, str] = {}
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        name = location[0] if location and location[0] in RunConfig.model_fields else "__all__"
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        found[name] = f"{found[name]}; {message}" if name in found else message
    return found


def config_values(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    return config.model_dump(mode="json") if isinstance(config, RunConfig) else dict(config)


def lenient_config(values: dict[str, Any]) -> tuple[RunConfig | None, dict[str, str]]:
    """A config for the live estimates: the valid fields as typed, the invalid ones at their defaults."""
    try:
        return RunConfig(**values), {}
    except ValidationError as error:
        errors = validation_errors(error)
    kept = {name: value for name, value in values.items() if name not in errors}
    try:
        return RunConfig(**kept), errors
    except ValidationError:
        return None, errors
