"""Console sign-in: an existing admin or viewer token in a cookie, and the CSRF token of actions.

The token itself is the session: it lives in an HttpOnly, SameSite=Strict cookie scoped to
/ui (so the page's script cannot read it and other sites cannot send it), is checked like a
bearer token on every request (the API's 30-second credential cache, so a revoked token stops
working as it does for the API), and is never written into a page or a log. Sign-out clears it.

Actions (POST) also need a CSRF token: an HMAC of the fixed string "spirl console csrf" keyed
with the session token. It is stateless (any replica checks it), differs per token, and
reveals nothing of the token. The sign-in form has its own double-submit token (a random value
in a short-lived cookie and in the form), so another site cannot sign a browser in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from controlplane.api.context import app_state, authenticate_token, read_body
from controlplane.domain import BadRequest, DomainError, Forbidden
from controlplane.services.auth import Principal

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "User",
    "check_csrf",
    "clear_session",
    "csrf_token",
    "new_login_nonce",
    "read_form",
    "safe_next",
    "set_login_nonce",
    "set_session",
    "sign_in_principal",
    "signed_in",
]

SESSION_COOKIE = "spirl_console"
LOGIN_COOKIE = "spirl_console_login"
COOKIE_PATH = "/ui"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 16 * 1024
_CSRF_MESSAGE = b"spirl console csrf"


@dataclass(frozen=True)
class User:
    """Who is signed in, as templates see it (never the token)."""

    principal: Principal
    csrf: str

    @property
    def name(self) -> str:
        return self.principal.name

    @property
    def role(self) -> str:
        return self.principal.role

    @property
    def is_admin(self) -> bool:
        return self.principal.role == "admin"


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), _CSRF_MESSAGE, hashlib.sha256).hexdigest()


async def signed_in(request: Request) -> tuple[User, str] | None:
    """(user, token) from the session cookie, or None when absent, unknown, revoked or not a user."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        principal = await authenticate_token(app_state(request), token)
        principal.require_user()
    except DomainError:
        return None
    return User(principal, csrf_token(token)), token


async def sign_in_principal(request: Request, token: str) -> Principal:
    """Check a token typed into the sign-in form: only admin and viewer tokens may sign in."""
    principal = await authenticate_token(app_state(request), token)
    if principal.role not in ("admin", "viewer"):
        raise Forbidden("only admin and viewer tokens can sign in to the console")
    return principal


def check_csrf(token: str, form: dict[str, str]) -> None:
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(token)):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again")


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the console's only forms), first value per name."""
    body = await read_body(request)
    if not body:
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest("the console accepts only application/x-www-form-urlencoded forms")
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest(f"form over {MAX_FORM_BYTES} bytes")
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("unreadable form") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


def set_login_nonce(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: only a console path of this site (no open redirect)."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"
