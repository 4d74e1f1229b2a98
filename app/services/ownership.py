"""Who may see what: a user sees their own runs, files and adapters; an admin, and the
workers (which act for no one), see everything.

The principal comes from the request (app/auth.py puts it in a context variable), so
every service call made while answering a request is filtered the same way, whether
the API or a page called it.
"""

from __future__ import annotations

from typing import Any

from app.auth import Principal, current_principal


def viewer() -> Principal | None:
    return current_principal.get()


def new_owner() -> str | None:
    """The owner of something made now: the asking user (None outside a request: admin only)."""
    principal = viewer()
    return principal.user if principal else None


def visible(owner: str | None) -> bool:
    principal = viewer()
    return principal is None or principal.can_see(owner)


def only_visible(query: Any, owner_column: Any) -> Any:
    principal = viewer()
    if principal is not None and not principal.is_admin:
        return query.where(owner_column == principal.user)
    return query
