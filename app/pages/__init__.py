"""HTML routers, one module per screen; none of them appears in the OpenAPI schema.

new_run comes before runs: /runs/new must match before /runs/{run_id}.
"""

from fastapi import APIRouter, Depends, Request

from app import auth
from app.errors import APIError
from app.pages import compare, datasets, keys, new_run, playground, runs


async def require_csrf_token(request: Request) -> None:
    """Unsafe requests on a dashboard session carry the page's token (header from htmx, or form field)."""
    principal = getattr(request.state, "principal", None)
    if principal is None or not principal.via_session or request.method in auth.SAFE_METHODS:
        return
    token = request.headers.get(auth.CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        token = str((await request.form()).get(auth.CSRF_FIELD) or "") or None
    if not auth.csrf_token_valid(principal, token):
        raise APIError(
            403, "Missing or wrong CSRF token: reload the page.", code="csrf_failed", type="permission_error"
        )


router = APIRouter(include_in_schema=False, dependencies=[Depends(require_csrf_token)])
for module in (new_run, runs, datasets, compare, playground, keys):
    router.include_router(module.router)
