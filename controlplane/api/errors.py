"""One error shape for every failure: {"error": code, "message": readable line, ...}."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from controlplane.api.identity import API_VERSION, API_VERSION_HEADER
from controlplane.domain import DomainError, Unavailable, VersionConflict

log = logging.getLogger(__name__)


class PayloadTooLarge(DomainError):
    code = "input_rejected"
    status = 413


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    # The identity header here too: a 500 leaves through Starlette's outermost layer, past
    # ApiIdentityMiddleware.
    return JSONResponse(
        {"error": code, "message": message, **extra},
        status_code=status,
        headers={API_VERSION_HEADER: API_VERSION},
    )


def to_response(exc: Exception) -> JSONResponse:
    """Map a known exception to its response; anything else is a logged 500 with no detail."""
    from controlplane.documents import DocumentValidationError, InputRejectedError

    if isinstance(exc, VersionConflict):
        return error_response(
            exc.status,
            exc.code,
            str(exc),
            expected_version=exc.expected_version,
            current_version=exc.current_version,
        )
    if isinstance(exc, Unavailable):
        response = error_response(exc.status, exc.code, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
        return response
    if isinstance(exc, DomainError):
        return error_response(exc.status, exc.code, str(exc), **exc.details())
    if isinstance(exc, DocumentValidationError):
        issues = [
            {"section": i.section, "pointer": i.pointer, "reason": i.reason, "document": i.document}
            for i in exc.issues
        ]
        return error_response(
            422,
            "validation_failed",
            f"{len(issues)} validation error(s); nothing was stored",
            errors=issues,
        )
    if isinstance(exc, InputRejectedError):
        status = 413 if getattr(exc, "too_large", False) else 400
        return error_response(status, "input_rejected", f"input rejected: {exc.reason}")
    if isinstance(exc, ClientDisconnect):
        # The client left, or the server cut a body that came too slowly (--body-timeout):
        # nobody reads this answer, and it is not a server error.
        log.info("client disconnected before its request body arrived")
        return error_response(400, "client_disconnected", "the request body did not arrive")
    log.exception("unhandled error")
    return error_response(500, "internal", "internal error; see the control plane log")


async def handle_exception(request: Request, exc: Exception) -> JSONResponse:
    return to_response(exc)
