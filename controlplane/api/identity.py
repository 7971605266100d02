"""The control plane names itself on every response: `Spirl-Api-Version: 1`.

A client that acts on an answer must know the answer came from the control plane: the Terraform
provider drops an object from its state on `404 not_found`, so a 404 from a wrong endpoint
(another HTTP server on that port, a proxy's HTML error page, a wrong path prefix) must never
read as "deleted". Clients check this header (and the JSON error body) before they believe a
response. The value is the API's major version; a client that does not know it refuses to act.
Cost: one header per response, added without touching the body.
"""

from __future__ import annotations

from typing import Any

__all__ = ["API_VERSION", "API_VERSION_HEADER", "RAW_HEADER", "ApiIdentityMiddleware"]

API_VERSION_HEADER = "Spirl-Api-Version"
API_VERSION = "1"
RAW_HEADER = (API_VERSION_HEADER.lower().encode("latin-1"), API_VERSION.encode("latin-1"))


class ApiIdentityMiddleware:
    """ASGI middleware adding the header to every HTTP response that does not carry it yet."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(name.lower() == RAW_HEADER[0] for name, _ in headers):
                    headers.append(RAW_HEADER)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)
