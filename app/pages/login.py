"""Logging in to the dashboard with an API key; the only page that answers without one."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from app import auth
from app.pages.templating import templates

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # Only a path on this server: "//evil.example" or "https://..." would make an open redirect.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(request: Request, error: str | None, next_path: str, status_code: int = 200) -> Response:
    return templates.TemplateResponse(
        request, "pages/login.html", {"error": error, "next": next_path}, status_code=status_code
    )


def _logged_in(request: Request, principal: auth.Principal, next_path: str) -> Response:
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        auth.session_cookie_value(principal.key_id),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=14 * 24 * 3600,
    )
    return response


@router.get("/login")
def login_page(request: Request, next: str | None = None, key: str | None = None) -> Response:
    """The form; with ?key= (the link printed at first start) it logs in at once."""
    next_path = _safe_next(next)
    if key:
        principal = auth.principal_for_key(key)
        if principal is not None:
            return _logged_in(request, principal, next_path)
        return _login_page(request, "That key is not valid.", next_path, 401)
    return _login_page(request, None, next_path)


@router.post("/login")
def login(request: Request, key: str = Form(...), next: str = Form("/")) -> Response:
    next_path = _safe_next(next)
    if not auth.same_origin(request.headers):
        return _login_page(request, "Cross-site login refused.", next_path, 403)
    principal = auth.principal_for_key(key.strip())
    if principal is None:
        return _login_page(request, "That key is not valid (or was revoked).", next_path, 401)
    return _logged_in(request, principal, next_path)


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE)
    return response
