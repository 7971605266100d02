"""What the console lets a person do: sign in and out, and the admin actions (POST + CSRF).

Every admin action is one `@action` handler: it runs only for a signed-in admin whose form
carries the session's CSRF token, calls one service like the API's handler for the same
change does (same audit entry, same optimistic concurrency), and answers with a redirect to
the page that shows the result. Viewers see no action buttons, and are refused (403) if they
post anyway.

Staged rollouts: "promote" and "abort" (the API's POST .../rollout/{action}) have their buttons
in the deployment page's rollout block (templates/deployment.html, `rollout-actions`).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from controlplane.api.context import app_state, call_service, fleet_view
from controlplane.api.inputs import query_int
from controlplane.console.config_views import config_url, diff_view, scope_page
from controlplane.console.pages import error_page, page
from controlplane.console.render import render
from controlplane.console.session import (
    LOGIN_COOKIE,
    User,
    check_csrf,
    clear_session,
    new_login_nonce,
    read_form,
    safe_next,
    set_login_nonce,
    set_session,
    sign_in_principal,
    signed_in,
)
from controlplane.domain import DomainError, Forbidden, check_scope
from controlplane.services import config as config_service
from controlplane.services import rollouts as rollout_service
from controlplane.store.unit_of_work import UnitOfWork

log = logging.getLogger("controlplane.console")

Action = Callable[[Request, User, dict[str, str]], Awaitable[Response]]


# -- sign-in and sign-out -----------------------------------------------------------------------


async def login(request: Request) -> Response:
    """The sign-in form (GET) and the sign-in itself (POST token)."""
    if request.method == "GET":
        nonce = new_login_nonce()
        response = _login_form(request, nonce, next_url=request.query_params.get("next"))
        set_login_nonce(response, request, nonce)
        return response
    try:
        form = await read_form(request)
    except DomainError as exc:
        return error_page(request, None, exc)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or form.get("login_nonce") != nonce:
        # No cookie from our own form: another site posted this form, or cookies are off.
        return _login_form(
            request, new_login_nonce(), form.get("next"), "the sign-in form expired; try again", 403
        )
    token = form.get("token", "").strip()
    try:
        principal = await sign_in_principal(request, token)
    except DomainError as exc:
        fresh = new_login_nonce()
        response = _login_form(request, fresh, form.get("next"), str(exc), exc.status)
        set_login_nonce(response, request, fresh)
        return response
    log.info("console sign-in", extra={"actor": principal.actor})
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    set_session(response, request, token)
    return response


def _login_form(
    request: Request, nonce: str, next_url: str | None, message: str = "", status: int = 200
) -> Response:
    return render(
        request,
        "login.html",
        {"nonce": nonce, "next": safe_next(next_url), "message": message},
        status_code=status,
    )


async def logout(request: Request) -> Response:
    """Sign out (POST with the CSRF token): the session cookie is cleared."""
    found = await signed_in(request)
    if found is not None:
        user, token = found
        try:
            check_csrf(token, await read_form(request))
        except DomainError as exc:
            return error_page(request, user, exc)
        log.info("console sign-out", extra={"actor": user.principal.actor})
    response = RedirectResponse("/ui/login", status_code=303)
    clear_session(response)
    return response


# -- admin actions ------------------------------------------------------------------------------


def action(handler: Action) -> Callable[[Request], Awaitable[Response]]:
    """POST handler for an admin action: session, CSRF token, then admin role, in that order."""

    async def endpoint(request: Request) -> Response:
        found = await signed_in(request)
        if found is None:
            return error_page(request, None, Forbidden("sign in to the console first"))
        user, token = found
        try:
            form = await read_form(request)
            check_csrf(token, form)
            user.principal.require_admin()
            return await handler(request, user, form)
        except DomainError as exc:
            return error_page(request, user, exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


@page
async def rollback_confirm(request: Request, user: User) -> Response:
    """What a rollback would change (current → chosen version), with the button to do it."""
    user.principal.require_admin()
    version = query_int(request.query_params.get("version"), "version", minimum=1, required=True)
    assert version is not None

    def read(uow: UnitOfWork, scope: str, scope_id: str) -> dict[str, Any]:
        current = config_service.get_config(uow, scope, scope_id)["version"]
        diff = config_service.diff(uow, scope, scope_id, current, version)
        return {"version": version, "current_version": current, "sections": diff_view(diff)}

    return await scope_page(request, user, "rollback.html", f"roll back to {version}", read)


@action
async def rollback(request: Request, user: User, form: dict[str, str]) -> Response:
    """Write an old version as a new one (the API's POST .../rollback)."""
    scope, scope_id = check_scope(request.path_params["scope"]), request.path_params["scope_id"]
    version = query_int(form.get("version"), "version", minimum=1, required=True)
    expected = query_int(form.get("expected_version"), "expected_version")
    assert version is not None
    result = await call_service(
        request,
        config_service.rollback,
        scope,
        scope_id,
        version,
        actor=user.principal.actor,
        expected_version=expected,
        fleet=fleet_view(app_state(request)),
    )
    query = urllib.parse.urlencode({"written": result.version})
    return RedirectResponse(f"{config_url(scope, scope_id)}?{query}", status_code=303)


def _rollout_action(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request, user: User, form: dict[str, str]) -> Response:
        tdd_id = request.path_params["tdd_id"]
        await call_service(
            request,
            rollout_service.act,
            tdd_id,
            name,
            user.principal.actor,
            fleet_view(app_state(request)),
            reason="from the web console",
        )
        return RedirectResponse(f"/ui/deployments/{tdd_id}#rollout", status_code=303)

    handler.__name__ = f"rollout_{name}"
    handler.__doc__ = (
        f"{name.capitalize()} a deployment's staged rollout (the API's POST .../rollout/{name})."
    )
    return action(handler)


rollout_promote = _rollout_action("promote")
rollout_abort = _rollout_action("abort")

ACTION_ROUTES = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/config/{scope}/{scope_id}/rollback", rollback_confirm, methods=["GET"]),
    Route("/config/{scope}/{scope_id}/rollback", rollback, methods=["POST"]),
    Route("/deployments/{tdd_id}/rollout/promote", rollout_promote, methods=["POST"]),
    Route("/deployments/{tdd_id}/rollout/abort", rollout_abort, methods=["POST"]),
]
