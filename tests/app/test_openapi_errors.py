"""/openapi.json (what /docs shows) states the answers the API really gives to bad input.

The error handlers answer a request FastAPI cannot validate with OpenAI's 400
(app/errors.py), never with FastAPI's 422: the document must say the same.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.openai_spec import assert_conforms

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def v1_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    operations = [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(operations) > 10  # files, jobs, chat and models are all there
    return operations


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_no_operation_states_fastapis_422(document: dict[str, Any]) -> None:
    for method, path, operation in v1_operations(document):
        assert "422" not in operation["responses"], f"{method} {path}"
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_operation_that_takes_input_states_the_openai_400(document: dict[str, Any]) -> None:
    for method, path, operation in v1_operations(document):
        if not operation.get("parameters") and "requestBody" not in operation:
            continue
        answer = operation["responses"].get("400")
        assert answer is not None, f"{method} {path}"
        schema = resolve(document, answer["content"]["application/json"]["schema"])
        error = resolve(document, schema["properties"]["error"])
        assert set(error["required"]) == {"message", "type", "param", "code"}, f"{method} {path}"


def test_bad_input_gets_the_documented_400(client: TestClient) -> None:
    for response in (
        client.post("/v1/fine_tuning/jobs", json={"training_file": "demo-antonyms"}),  # no model
        client.get("/v1/fine_tuning/jobs", params={"limit": "many"}),
    ):
        assert response.status_code == 400, response.text
        assert_conforms("ErrorResponse", response.json())


def test_a_route_without_declared_errors_gets_the_400_too() -> None:
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse

    from app.errors import install_error_handlers
    from app.openapi_errors import state_validation_errors_as_400

    def error_page(_request: Request, status_code: int, message: str) -> PlainTextResponse:
        return PlainTextResponse(message, status_code=status_code)  # no browser asks here

    bare = FastAPI()
    install_error_handlers(bare, error_page)
    state_validation_errors_as_400(bare)

    @bare.get("/v1/things")
    def things(limit: int) -> dict[str, int]:
        return {"limit": limit}

    document = TestClient(bare).get("/openapi.json").json()
    answers = document["paths"]["/v1/things"]["get"]["responses"]
    assert "422" not in answers
    error_response = resolve(document, answers["400"]["content"]["application/json"]["schema"])
    assert set(resolve(document, error_response["properties"]["error"])["properties"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert TestClient(bare).get("/v1/things", params={"limit": "x"}).status_code == 400
