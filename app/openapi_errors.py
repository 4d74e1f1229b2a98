"""The OpenAPI document (/openapi.json, /docs) states the 400 that bad input really gets.

FastAPI documents a 422 with its own HTTPValidationError body for every operation that
takes input. app/errors.py answers those requests with OpenAI's 400 instead
({"error": {"message", "type", "param", "code"}}), which OpenAI's clients turn into
BadRequestError: the document must promise that 400, or generated clients and readers
of /docs expect a body that never comes.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from app.api.schemas import ErrorResponse

SCHEMA_REF = "#/components/schemas/"
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
BAD_REQUEST = {
    "description": "Invalid request: `param` names the field",
    "content": {"application/json": {"schema": {"$ref": f"{SCHEMA_REF}ErrorResponse"}}},
}


def state_validation_errors_as_400(app: FastAPI) -> None:
    """Make app.openapi() (what /openapi.json serves) document a 400, not FastAPI's 422."""
    build_document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_400_for_422(build_document())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_400_for_422(document: dict[str, Any]) -> dict[str, Any]:
    replaced = False
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
            if responses.pop("422", None) is not None:
                responses.setdefault("400", BAD_REQUEST)
                replaced = True
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if replaced and "ErrorResponse" not in schemas:
        error_schema = ErrorResponse.model_json_schema(ref_template=SCHEMA_REF + "{model}")
        schemas.update(error_schema.pop("$defs", {}))
        schemas["ErrorResponse"] = error_schema
    for name in FASTAPI_VALIDATION_SCHEMAS:  # in order: once the first is gone, nothing uses the second
        if name in schemas and f'"{SCHEMA_REF}{name}"' not in json.dumps(document):
            del schemas[name]
    return document
