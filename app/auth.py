"""API keys and dashboard sessions: one gate every request passes (AuthMiddleware).

- The API takes `Authorization: Bearer <key>` (what the openai client sends as api_key).
  Keys are stored as SHA-256 hashes (api_keys table); LORABOARD_API_KEY is an admin key
  that lives only in the settings. Without it, the first start makes an admin key and
  prints it once with a login link, as Jupyter does.
- The dashboard logs in with a key (/login) and then carries a signed session cookie
  (HttpOnly, SameSite=Strict). Unsafe requests on a session must come from our own
  origin (Origin or Referer matching Host) and carry the CSRF token (pages/forms send it
  as X-CSRF-Token through htmx, or as the csrf_token field).
- Every request's Host must be one the operator allows (Settings.allowed_hosts): a web
  page in the user's own browser can otherwise reach a loopback server by DNS rebinding.
- Nothing answers without a key or a session but the login page and static files, on
  loopback too (a page in the user's own browser reaches loopback); /healthz included:
  health checks send a key.
- Every request with a stored key (or a session) reads that key's row, by the indexed
  hash or id: a key revoked by `loraboard keys revoke` or by another server process
  stops working at the very next request.

Who is asking is kept in a context variable for the services: a user sees only their own
runs, files and adapters, an admin everything (ownership.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlsplit

from anyio import to_thread
from sqlalchemy import Executable, bindparam
from sqlmodel import Session, col, select
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import get_settings
from app.db import get_engine
from app.errors import error_body
from app.models import ApiKey, utcnow

SESSION_COOKIE = "loraboard_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
PUBLIC_PATHS = ("/login",)
PUBLIC_PREFIXES = ("/static/",)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ADMIN_USER = "admin"
ENV_KEY_ID = "key-env"


@dataclass(frozen=True)
class Principal:
    key_id: str
    user: str
    is_admin: bool
    via_session: bool = False

    def can_see(self, owner: str | None) -> bool:
        return self.is_admin or owner == self.user


current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


# --- keys ------------------------------------------------------------------------------


def hash_key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def make_key(session: Session, name: str, user: str, is_admin: bool = False) -> tuple[ApiKey, str]:
    """A new key: its row, and the plaintext (shown once, never stored)."""
    value = f"lb-{secrets.token_urlsafe(32)}"
    record = ApiKey(name=name, user=user, is_admin=is_admin, prefix=value[:10], key_hash=hash_key(value))
    session.add(record)
    session.commit()
    session.refresh(record)
    return record, value


def list_keys(session: Session, user: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(col(ApiKey.created_at).desc())
    if user is not None:
        query = query.where(ApiKey.user == user)
    return list(session.exec(query).all())


def revoke_key(session: Session, key_id: str, user: str | None = None) -> bool:
    record = session.get(ApiKey, key_id)
    if record is None or (user is not None and record.user != user) or record.revoked_at is not None:
        return False
    record.revoked_at = utcnow()
    session.add(record)
    session.commit()
    return True


def first_start_key() -> str | None:
    """Without LORABOARD_API_KEY and without any admin key yet: make one (the caller prints it once)."""
    if get_settings().api_key is not None:
        return None
    with Session(get_engine()) as session:
        exists = session.exec(
            select(ApiKey).where(col(ApiKey.is_admin).is_(True), col(ApiKey.revoked_at).is_(None))
        ).first()
        if exists is not None:
            return None
        return make_key(session, "first start", ADMIN_USER, is_admin=True)[1]


def announce_first_start_key() -> None:
    """Make the first-start key if there is none, and print it once, like Jupyter's token: only
    its hash is kept. `loraboard serve` calls it before starting its processes, so that
    several (server_workers) never each make and print one."""
    key = first_start_key()
    if key is None:
        return
    settings = get_settings()
    url = f"http://{settings.host}:{settings.port}/login?key={key}"
    print(
        f"\n  An admin API key was made for this first start (it is not shown again):\n    {key}\n"
        f"  Log in: {url}\n",
        flush=True,
    )


# --- who is asking -------------------------------------------------------------------------

# Read for nearly every request, so kept cheap: four columns, no ORM session, one probe of
# a unique index, and statements built once (building one per request costs four times as
# much as running it).
_KEY_COLUMNS = select(ApiKey.id, ApiKey.user, ApiKey.is_admin, ApiKey.revoked_at)
_KEY_BY_HASH = _KEY_COLUMNS.where(col(ApiKey.key_hash) == bindparam("value"))
_KEY_BY_ID = _KEY_COLUMNS.where(col(ApiKey.id) == bindparam("value"))


def principal_for_key(value: str) -> Principal | None:
    if not value:
        return None
    admin_key = get_settings().api_key
    if admin_key is not None and hmac.compare_digest(value.encode(), admin_key.get_secret_value().encode()):
        return Principal(ENV_KEY_ID, ADMIN_USER, True)
    return _stored_principal(_KEY_BY_HASH, hash_key(value))


def principal_for_key_id(key_id: str) -> Principal | None:
    if key_id == ENV_KEY_ID:
        return Principal(ENV_KEY_ID, ADMIN_USER, True) if get_settings().api_key is not None else None
    return _stored_principal(_KEY_BY_ID, key_id)


def _stored_principal(query: Executable, value: str) -> Principal | None:
    """The key's row, read on every request: a revocation applies to the next one."""
    with get_engine().connect() as connection:
        row = connection.execute(query, {"value": value}).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.id, row.user, row.is_admin)


# --- sessions and CSRF ------------------------------------------------------------------


@lru_cache(maxsize=1)
def _secret() -> bytes:
    settings = get_settings()
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    return kept_secret(settings.data_dir.resolve() / "session-secret")


def kept_secret(path: Path) -> bytes:
    """The secret in path, made on first use. Server processes start together (server_workers)
    and each must sign with the same one: the file appears complete or not at all (a hard link
    to a finished temporary file), and whichever process links first wins."""
    if not path.exists():
        # NamedTemporaryFile makes the file 0600: readable by the server's user alone.
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}-", delete=False) as new:
            new.write(secrets.token_hex(32))
        try:
            os.link(new.name, path)
        except FileExistsError:
            pass  # another process was first: its secret is the one
        finally:
            os.unlink(new.name)
    return path.read_text().strip().encode()


def _mac(message: str) -> str:
    return hmac.new(_secret(), message.encode(), hashlib.sha256).hexdigest()


def session_cookie_value(key_id: str) -> str:
    return f"{key_id}.{_mac('session:' + key_id)}"


def key_id_from_cookie(value: str) -> str | None:
    key_id, _, mac = value.rpartition(".")
    if key_id and hmac.compare_digest(mac, _mac("session:" + key_id)):
        return key_id
    return None


def csrf_token(principal: Principal | None) -> str:
    return _mac("csrf:" + principal.key_id)[:40] if principal else ""


def csrf_token_valid(principal: Principal, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(str(token), csrf_token(principal))


def host_allowed(host: str | None) -> bool:
    allowed = get_settings().allowed_hosts
    if "*" in allowed:
        return True
    if not host:
        return False
    name = urlsplit(f"//{host}").hostname or ""
    return name in {urlsplit(f"//{entry}").hostname for entry in allowed}


def same_origin(headers: Headers) -> bool:
    """Origin (or, without it, Referer) names this very host: the request comes from our pages."""
    source = headers.get("origin") or headers.get("referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc == headers.get("host")


# --- the gate ------------------------------------------------------------------------------


def _needs_database(headers: Headers, cookies: dict[str, str], cookie_allowed: bool) -> bool:
    """Whether _identify reads api_keys: not for no credentials, a forged cookie or the settings' key."""
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        value = authorization[7:].strip()
        admin_key = get_settings().api_key
        is_admin_key = admin_key is not None and hmac.compare_digest(
            value.encode(), admin_key.get_secret_value().encode()
        )
        return bool(value) and not is_admin_key
    cookie = cookies.get(SESSION_COOKIE)
    key_id = key_id_from_cookie(cookie) if cookie and cookie_allowed else None
    return key_id is not None and key_id != ENV_KEY_ID


def _identify(headers: Headers, cookies: dict[str, str], cookie_allowed: bool) -> Principal | None:
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return principal_for_key(authorization[7:].strip())
    cookie = cookies.get(SESSION_COOKIE)
    if cookie and cookie_allowed:
        key_id = key_id_from_cookie(cookie)
        principal = principal_for_key_id(key_id) if key_id else None
        if principal is not None:
            return Principal(principal.key_id, principal.user, principal.is_admin, via_session=True)
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        if not host_allowed(headers.get("host")):
            await _json(send, 400, "This host name is not allowed (LORABOARD_ALLOWED_HOSTS).", "invalid_host")
            return
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        cookies = _cookies(headers)
        api = path.startswith("/v1")
        # A session also opens the API's reads (the dashboard's download links); API writes
        # need the key itself: they carry no CSRF token.
        cookie_allowed = not api or scope["method"] in SAFE_METHODS
        if _needs_database(headers, cookies, cookie_allowed):
            # A database read must not block the event loop (PostgreSQL is a network round trip).
            principal = await to_thread.run_sync(_identify, headers, cookies, cookie_allowed)
        else:
            principal = _identify(headers, cookies, cookie_allowed)
        if principal is None:
            if not api and scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
                await _redirect(send, f"/login?next={quote(path)}")
            else:
                await _json(
                    send,
                    401,
                    "Missing or invalid API key: send Authorization: Bearer <key>, or log in at /login.",
                    "invalid_api_key",
                )
            return
        if principal.via_session and scope["method"] not in SAFE_METHODS and not same_origin(headers):
            await _json(send, 403, "Cross-site request refused (Origin does not match Host).", "csrf_failed")
            return
        scope.setdefault("state", {})["principal"] = principal
        token = current_principal.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            current_principal.reset(token)


def _cookies(headers: Headers) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found[name] = value
    return found


async def _json(send: Send, status: int, message: str, code: str) -> None:
    kind = "authentication_error" if status == 401 else "invalid_request_error"
    if status == 403:
        kind = "permission_error"
    body = json.dumps(error_body(message, kind, None, code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303, "headers": [(b"location", location.encode())]})
    await send({"type": "http.response.body", "body": b""})
