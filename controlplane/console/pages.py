"""What every console page shares: sign-in check, one unit of work per page, the error page.

A page handler takes (request, user); `@page` sends a visitor without a session to sign in
(or answers 401 to the page's script) and turns a DomainError into an HTML error page with its
status. Pages read through the services layer (`call_service`) like the API does and never call the
HTTP API.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from controlplane.console.render import render
from controlplane.console.session import User, signed_in
from controlplane.domain import CLUSTER, DEPLOYMENT, TRUST_DOMAIN, DomainError

Page = Callable[[Request, User], Awaitable[Response]]

SCOPE_LABELS = {TRUST_DOMAIN: "trust domain", DEPLOYMENT: "deployment", CLUSTER: "cluster"}


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A signed-in page: redirect to sign-in without a session; a DomainError becomes an error page."""

    async def endpoint(request: Request) -> Response:
        found = await signed_in(request)
        if found is None:
            if request.headers.get("x-console-refresh"):
                return Response("sign in again", status_code=401)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                "/ui/login?" + urllib.parse.urlencode({"next": target}), status_code=303
            )
        user, _ = found
        try:
            return await handler(request, user)
        except DomainError as exc:
            return error_page(request, user, exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def error_page(request: Request, user: User | None, exc: DomainError) -> Response:
    return render(
        request,
        "error.html",
        {"user": user, "status": exc.status, "code": exc.code, "message": str(exc)},
        status_code=exc.status,
    )


def deployment_crumbs(
    td: dict[str, Any], tdd: dict[str, Any], last: bool = False
) -> list[tuple[str, str | None]]:
    return [
        (td["name"], f"/ui/trust-domains/{td['id']}"),
        (tdd["name"], None if last else f"/ui/deployments/{tdd['id']}"),
    ]
