"""Check response bodies against OpenAI's official schemas (the vendored excerpt beside this file).

The excerpt is OpenAI's spec as published; a few of its schemas still use OpenAPI 3.0's
dialect (`nullable: true`, a boolean `exclusiveMinimum` next to `minimum`), which JSON Schema
reads differently. `_as_json_schema` rewrites exactly those two forms, so the validator
enforces what the spec means, not a stricter or looser reading.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, validators

# JSON Schema counts 3.0 as an integer; a client reading "n_epochs": 3.0 gets a float, so an
# integer here must be written without a fraction.
_STRICT_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
_Validator = validators.extend(Draft202012Validator, type_checker=_STRICT_TYPES)

EXCERPT = Path(__file__).with_name("openai_spec_excerpt.json")


def _as_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_json_schema(value) for key, value in node.items()}
    if node.get("exclusiveMinimum") is True:
        node["exclusiveMinimum"] = node.pop("minimum", 0)
    elif node.get("exclusiveMinimum") is False:
        del node["exclusiveMinimum"]
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


@cache
def spec() -> dict[str, Any]:
    return json.loads(EXCERPT.read_text())


@cache
def _validator(name: str) -> Any:
    document = {"components": _as_json_schema(copy.deepcopy(spec()["components"]))}
    document["$ref"] = f"#/components/schemas/{name}"
    return _Validator(document)


def spec_errors(name: str, body: Any) -> list[str]:
    """Every way `body` breaks OpenAI's schema `name`, as 'path: message' lines (empty: it conforms)."""
    errors = sorted(_validator(name).iter_errors(body), key=lambda error: list(error.absolute_path))
    return [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}" for error in errors]


def assert_conforms(name: str, body: Any) -> None:
    errors = spec_errors(name, body)
    assert not errors, f"{name} breaks OpenAI's spec:\n" + "\n".join(errors) + f"\nbody: {body}"
