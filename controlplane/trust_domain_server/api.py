"""The server's local HTTP API (Starlette).

Issuance signed by an in-process key manager (the default one: ~60 µs of CPU) runs inline on
the event loop: a hand-off to a worker thread costs more than the work, and the GIL would
serialise it anyway. When the current key's manager signs over the network (webhook, Azure
Key Vault) the issuance runs in Starlette's thread pool, so a slow call blocks one worker,
not the loop. Other handlers are plain functions, which Starlette runs in its thread pool.

Who may call it: trusted local callers only (an agent or an operator), as SPIRE's server API is
reached through the agent. There is no workload attestation: whoever reaches the API gets any
SPIFFE ID of the trust domain (or of the configured path prefixes). By default it listens on a
Unix socket in the data folder (0600: only this user); over TCP (opt-in) every route but
`/healthz` needs the bearer token from the data folder (`api_token`).
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from controlplane.api.inputs import BodyTooLarge, read_capped
from controlplane.documents.durations import parse_duration

from .issuer import IssuanceError, SignerNotLocal, chain_pem
from .server import TrustDomainServer

__all__ = ["create_app"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        raw = await read_capped(request, MAX_BODY)
    except BodyTooLarge as exc:
        raise IssuanceError(str(exc), status=413, code="input_rejected") from None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise IssuanceError(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise IssuanceError("body must be a JSON object")
    return body


# Far above any SVID lifetime (the issuer caps it lower), far below timedelta's range.
MAX_TTL_SECONDS = 10 * 365 * 86400


def _ttl(body: dict[str, Any]) -> timedelta | None:
    ttl = body.get("ttl")
    if ttl is None:
        return None
    if isinstance(ttl, int | float) and not isinstance(ttl, bool):
        # NaN, infinities and 1e20 seconds do not fit a timedelta: a 400, not a server error.
        if not 0 < ttl <= MAX_TTL_SECONDS:
            raise IssuanceError(f"ttl must be a number of seconds from 0 to {MAX_TTL_SECONDS}")
        return timedelta(seconds=ttl)
    try:
        return parse_duration(ttl)
    except ValueError as exc:
        raise IssuanceError(f"ttl {exc}") from exc


class BearerTokenRequired:
    """Refuses every request but `/healthz` without `Authorization: Bearer <token>` (401)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = _error(
                    401, "unauthenticated", "missing or wrong bearer token (see api_token)"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(server: TrustDomainServer, token: str | None = None) -> ASGIApp:
    """The local API; with `token`, every route but `/healthz` needs it (TCP listeners)."""

    def rejected(svid_type: str, exc: IssuanceError) -> JSONResponse:
        # Requests refused before they reach the issuer count as failures too.
        server.metrics.failure(svid_type, exc.code)
        return _error(exc.status, exc.code, exc.reason)

    async def jwt_svid(request: Request) -> Response:
        try:
            body = await _json_body(request)
            ttl = _ttl(body)
        except IssuanceError as exc:
            return rejected("jwt", exc)
        spiffe_id, audience = body.get("spiffe_id", ""), body.get("audience", [])
        try:
            try:
                token = server.issuer.issue_jwt(spiffe_id, audience, ttl, local_only=True)
            except SignerNotLocal:
                token = await run_in_threadpool(server.issuer.issue_jwt, spiffe_id, audience, ttl)
        except IssuanceError as exc:
            return _error(exc.status, exc.code, exc.reason)
        return JSONResponse({"token": token})

    async def x509_svid(request: Request) -> Response:
        try:
            body = await _json_body(request)
            csr = body.get("csr")
            if not isinstance(csr, str):
                raise IssuanceError("csr must be a PEM string")
            ttl = _ttl(body)
        except IssuanceError as exc:
            return rejected("x509", exc)
        spiffe_id = body.get("spiffe_id", "")
        try:
            try:
                chain = server.issuer.issue_x509(spiffe_id, csr, ttl, local_only=True)
            except SignerNotLocal:
                chain = await run_in_threadpool(server.issuer.issue_x509, spiffe_id, csr, ttl)
        except IssuanceError as exc:
            return _error(exc.status, exc.code, exc.reason)
        return JSONResponse(
            {
                "certificates": chain_pem(chain),
                "expires_at": chain[0].not_valid_after_utc.isoformat(),
            }
        )

    def bundle(request: Request) -> Response:
        return JSONResponse(server.bundle_document())

    def status(request: Request) -> Response:
        return JSONResponse(server.local_status())

    def metrics(request: Request) -> Response:
        counts: dict[tuple[str, str], int] = {}
        for rec in server.keyring.records():
            key = (rec.kind.value, rec.state.value)
            counts[key] = counts.get(key, 0) + 1
        return PlainTextResponse(
            server.metrics.render(counts), media_type="text/plain; version=0.0.4"
        )

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/v1/svid/jwt", jwt_svid, methods=["POST"]),
            Route("/v1/svid/x509", x509_svid, methods=["POST"]),
            Route("/v1/bundle", bundle, methods=["GET"]),
            Route("/v1/status", status, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    return BearerTokenRequired(app, token) if token is not None else app
