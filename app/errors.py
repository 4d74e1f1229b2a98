"""Errors in the OpenAI shape: {"error": {"message", "type", "param", "code"}}.

Existing OpenAI clients turn these into their own exceptions (BadRequestError,
NotFoundError, ...), so scripts written for the OpenAI API handle ours unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from app.openapi_errors import state_validation_errors_as_400

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "server_error",
    504: "server_error",
}


class APIError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(
            status_code, "server_error" if status_code >= 500 else "invalid_request_error"
        )


def not_found(kind: str, identifier: str, param: str = "id") -> APIError:
    return APIError(404, f"No {kind} found with id '{identifier}'.", param=param, code=f"{kind}_not_found")


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _location_to_param(loc: tuple[Any, ...]) -> str:
    # ("body", "method", "supervised", "hyperparameters", "lora_r") -> "lora_r": the field the user typed.
    parts = [str(part) for part in loc if part not in ("body", "query", "path")]
    return parts[-1] if parts else ""


def describe_validation_errors(errors: list[Any], prefix: str = "") -> tuple[str, str | None]:
    """One message naming every bad field, and the first field as `param`."""
    lines = []
    first_param = None
    for error in errors:
        param = _location_to_param(tuple(error.get("loc", ()))) or None
        first_param = first_param or param
        lines.append(f"{prefix}{param}: {error.get('msg')}" if param else f"{prefix}{error.get('msg')}")
    return "; ".join(lines), first_param


def config_validation_error(error: ValidationError) -> APIError:
    message, param = describe_validation_errors(error.errors())
    return APIError(400, f"Invalid hyperparameters: {message}", param=param, code="invalid_hyperparameters")


def _wants_page(request: Request) -> bool:
    """A browser on a dashboard page gets an HTML error page; API clients always get JSON."""
    return not request.url.path.startswith("/v1") and "text/html" in request.headers.get("accept", "")


# Renders the dashboard's error page: app/pages/templating.py's error_page, handed in by the
# app factory (the pages import this module, so it cannot import them).
ErrorPage = Callable[[Request, int, str], Response]


def install_error_handlers(app: FastAPI, error_page: ErrorPage) -> None:
    state_validation_errors_as_400(app)  # /openapi.json promises the 400 that _request_invalid sends

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        if _wants_page(request):
            return error_page(request, exc.status_code, exc.message)
        return JSONResponse(
            error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_errors(list(exc.errors()))
        return JSONResponse(
            error_body(message, "invalid_request_error", param, "invalid_request"), status_code=400
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Logged with its traceback here; the client gets OpenAI's shape and no server details.
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        message = "The server had an error while processing your request; it has been logged."
        if _wants_page(request):
            return error_page(request, 500, message)
        return JSONResponse(error_body(message, "server_error", None, "internal_error"), status_code=500)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if _wants_page(request):
            return error_page(request, exc.status_code, str(exc.detail))
        type_ = _TYPES.get(
            exc.status_code, "server_error" if exc.status_code >= 500 else "invalid_request_error"
        )
        code = "file_too_large" if exc.status_code == 413 else None  # Starlette's body limit
        return JSONResponse(
            error_body(str(exc.detail), type_, None, code), status_code=exc.status_code, headers=exc.headers
        )
