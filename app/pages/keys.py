"""API keys: list, create and revoke. An admin manages everyone's keys; a user only their own."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from sqlmodel import Session
from starlette.responses import Response

from app import auth
from app.db import SessionDep
from app.errors import APIError
from app.pages.templating import render

router = APIRouter(include_in_schema=False)


def _principal(request: Request) -> auth.Principal:
    principal: auth.Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # the middleware lets no request through without one
        raise APIError(401, "Log in first", code="invalid_api_key")
    return principal


def _page(
    request: Request,
    session: Session,
    created: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    principal = _principal(request)
    keys = auth.list_keys(session, None if principal.is_admin else principal.user)
    context = {"keys": keys, "created": created, "error": error, "principal": principal, "section": "keys"}
    return render(request, "pages/keys.html", "pages/keys.html", context, status_code=status)


@router.get("/keys")
def keys_page(request: Request, session: SessionDep) -> Response:
    return _page(request, session)


@router.post("/keys")
def create_key(
    request: Request,
    session: SessionDep,
    name: str = Form(..., min_length=1, max_length=100),
    user: str = Form(""),
    admin: bool = Form(False),
) -> Response:
    principal = _principal(request)
    owner = (user.strip() or principal.user) if principal.is_admin else principal.user
    if not owner.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(owner) > 64:
        return _page(request, session, error="A user name is letters, digits, '-', '_' or '.'", status=400)
    _record, value = auth.make_key(session, name.strip(), owner, is_admin=principal.is_admin and admin)
    return _page(request, session, created=value)


@router.post("/keys/{key_id}/revoke")
def revoke(key_id: str, request: Request, session: SessionDep) -> Response:
    principal = _principal(request)
    if not auth.revoke_key(session, key_id, None if principal.is_admin else principal.user):
        raise APIError(404, f"No active key '{key_id}'", code="key_not_found")
    return _page(request, session)
