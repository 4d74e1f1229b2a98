"""Request bodies of the upload routes, limited before and while they are read.

Starlette spools a multipart body to disk before the endpoint runs, so without this a
2 GB upload was received whole before its 413. A Content-Length over the limit is
answered at once without reading; a body without one (chunked) is stopped as soon as
it grows past the limit. Either answer has OpenAI's error shape.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body

UPLOAD_PATHS = ("/v1/files", "/datasets")


def too_large_message(limit: int) -> str:
    return f"Request body larger than the upload limit ({limit >> 20} MB)"


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _refuse(send, self.limit)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # An HTTPException raised while FastAPI reads the body reaches the app's
                    # error handlers (app/errors.py): OpenAI's shape, code file_too_large.
                    raise HTTPException(413, too_large_message(self.limit))
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        error_body(too_large_message(limit), "invalid_request_error", "file", "file_too_large")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
