"""The long-poll route: how trust domain servers receive their config and trust bundle.

Thousands of these requests wait at once, so this path is kept lean: a fast path in front of the
framework, plain values (no request objects) held while waiting, one encoded reply per fan-out.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from controlplane.api.context import (
    AppState,
    app_state,
    authenticate_token,
    bearer,
    bearer_from,
)
from controlplane.api.errors import to_response
from controlplane.api.identity import RAW_HEADER
from controlplane.api.inputs import query_int, query_number
from controlplane.api.metrics import Metrics
from controlplane.domain import Deregistered, utc_now
from controlplane.fleet import LONG_POLL_MAX_WAIT

log = logging.getLogger("controlplane.api")

MAX_WAIT_SECONDS = LONG_POLL_MAX_WAIT
DEFAULT_WAIT_SECONDS = 30.0


async def server_sync(request: Request) -> Response:
    """Long-poll for the server's effective config and trust bundle (?config_version=&bundle_version=&wait=)."""
    body = await long_poll(
        app_state(request),
        request.path_params["server_id"],
        bearer(request),
        request.scope.get("query_string", b""),
    )
    return Response(body, media_type="application/json")


async def long_poll(
    state: AppState, server_id: str, token: str | None, query_string: bytes
) -> bytes:
    """The long-poll's reply: at once when the server's versions are stale, else at a change or `wait`.

    Takes plain values, not a Request: thousands of these wait at once, and each holds only
    what it needs while it waits. A deregistration ends the wait with a 401 at once.
    """
    principal = await authenticate_token(state, token)
    principal.require_server(server_id)
    q = dict(urllib.parse.parse_qsl(query_string.decode("latin-1")))
    have_config = query_int(q.get("config_version"), "config_version")
    have_bundle = query_int(q.get("bundle_version"), "bundle_version")
    wait = min(query_number(q.get("wait"), "wait", default=DEFAULT_WAIT_SECONDS), MAX_WAIT_SECONDS)
    del q, principal
    if server_id in state.cache.deregistered:
        raise Deregistered()
    placement = await state.cache.placement(server_id)
    state.cache.contacts.seen(server_id, utc_now())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    caught_up = False
    while True:
        mark = state.cache.signals_sent(placement.trust_domain_id)
        snapshot = await state.cache.snapshot(placement)
        behind_config = have_config is not None and have_config > snapshot.config_version
        behind_bundle = have_bundle is not None and have_bundle > snapshot.bundle.version
        if (behind_config or behind_bundle) and not caught_up:
            # The server holds a newer config or bundle than this replica would send: another
            # replica may have served it (a write or a promotion whose notification is still on
            # its way), so re-read once before sending an older one. Staged rollouts do send
            # older config versions on purpose (after an abort, a rollback or a superseding
            # write): after the re-read the older one is sent.
            caught_up = True
            del snapshot
            if behind_config:
                await state.cache.catch_up(placement)
            if behind_bundle:
                await state.cache.catch_up_bundle(placement.trust_domain_id)
            continue
        if snapshot.config_version != have_config or snapshot.bundle.version != have_bundle:
            state.cache.deliveries += 1
            state.metrics.inc("spirl_deliveries_total")
            return snapshot.changed_reply
        remaining = deadline - loop.time()
        if remaining <= 0:
            return snapshot.unchanged_reply()
        del snapshot
        await state.cache.wait_for_change(placement.trust_domain_id, remaining, mark)
        if server_id in state.cache.deregistered:
            raise Deregistered()


SYNC_PATH = re.compile(r"^/v1/servers/(tds-[0-9a-f]+)/sync$")
SYNC_ROUTE = "/v1/servers/{server_id}/sync"


class LongPollFastPath:
    """Serves the long-poll route without the middleware and router stack.

    Thousands of these requests wait at once; skipping four layers of wrapper coroutines per
    waiting request roughly halves the memory each one holds. Same handler, same errors,
    same metrics and logs as every other route.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state
        self._state: AppState = app.state.spirl
        self._metrics: Metrics = app.state.spirl.metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        match = (
            SYNC_PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 200
        try:
            token = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    token = bearer_from(value.decode("latin-1"))
            body = await long_poll(self._state, match.group(1), token, scope["query_string"])
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                RAW_HEADER,
            ]
        except Exception as exc:
            error = to_response(exc)
            status, body, headers = error.status_code, bytes(error.body), error.raw_headers
        # Raw ASGI messages: thousands of replies go out at once after a change.
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - start
        self._metrics.observe_latency((("method", "GET"), ("route", SYNC_ROUTE)), elapsed)
        if status >= 400:
            log.info(
                "request",
                extra={
                    "method": "GET",
                    "path": scope["path"],
                    "route": SYNC_ROUTE,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
