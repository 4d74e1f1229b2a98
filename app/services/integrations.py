"""OpenAI's job integrations: `wandb` only, and only where it can really log.

A job that asks for W&B logging on a server that cannot do it is refused at creation
(400), never run without it: the user would find out only after the run.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from app.config import get_settings
from app.errors import APIError

WANDB_FIELDS = {
    "project": "wandb_project",
    "entity": "wandb_entity",
    "name": "wandb_run_name",
    "tags": "wandb_tags",
}


def wandb_unavailable_reason() -> str | None:
    if importlib.util.find_spec("wandb") is None:
        return "the wandb package is not installed on this server (pip install wandb)"
    settings = get_settings()
    if settings.wandb_mode == "online" and not settings.wandb_api_key:
        return "no W&B key is configured (LORABOARD_WANDB_API_KEY, or LORABOARD_WANDB_MODE=offline)"
    return None


def config_values(integrations: list[dict[str, Any]] | None) -> dict[str, Any]:
    """integrations -> the run config's wandb_* values; a 400 for anything that cannot be honoured."""
    values: dict[str, Any] = {}
    for item in integrations or []:
        kind = item.get("type")
        if kind != "wandb":
            raise APIError(
                400,
                f"Integration type {kind!r} is not supported; Loraboard offers 'wandb'.",
                param="integrations",
                code="unsupported_integration",
            )
        reason = wandb_unavailable_reason()
        if reason:
            raise APIError(
                400,
                f"integrations: wandb is not available here: {reason}.",
                param="integrations",
                code="unsupported_integration",
            )
        options = item.get("wandb") or {}
        if not isinstance(options, dict) or not options.get("project"):
            raise APIError(400, "integrations: wandb needs wandb.project", param="integrations")
        values.update({WANDB_FIELDS[key]: value for key, value in options.items() if key in WANDB_FIELDS})
    return values


def job_integrations(config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The run config's wandb_* values back in OpenAI's shape."""
    if not config.get("wandb_project"):
        return None
    wandb = {key: config.get(field) for key, field in WANDB_FIELDS.items()}
    return [{"type": "wandb", "wandb": {key: value for key, value in wandb.items() if value is not None}}]
