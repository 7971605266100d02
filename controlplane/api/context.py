"""What every handler shares: the application state, authentication, and reading input safely."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from controlplane.api.errors import PayloadTooLarge
from controlplane.api.inputs import BodyTooLarge, decode_json_object, read_capped
from controlplane.api.metrics import Metrics
from controlplane.api.parse_pool import ParsePool
from controlplane.delivery.cache import DeliveryCache
from controlplane.domain import Deregistered, Unauthenticated, utc_now
from controlplane.fleet import FleetPolicy
from controlplane.reported_keys import DEFAULT_MAX_KEY_LIFETIME
from controlplane.services import auth as auth_service
from controlplane.services.auth import Principal
from controlplane.services.rollouts import FleetView
from controlplane.store.unit_of_work import UnitOfWorkFactory

T = TypeVar("T")

MAX_REQUEST_BYTES = 1_048_576 + 65_536  # a maximal YAML upload plus its JSON envelope
YAML_MEDIA_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
TOKEN_CACHE_SECONDS = 30.0


@dataclass
class Settings:
    max_request_bytes: int = MAX_REQUEST_BYTES
    fleet: FleetPolicy = FleetPolicy()
    # Contact batches, retention sweeps, the rollout promoter (api/housekeeping.py) and bundle
    # key expiry (delivery/bundle_expiry.py); off only in tests that count the statements of
    # other work.
    housekeeping: bool = True
    # Seconds between passes of the staged-rollout promoter.
    rollout_interval: float = 1.0
    # Keys a server reports may not live longer (not_after - now, not_after - not_before).
    max_key_lifetime: timedelta = DEFAULT_MAX_KEY_LIFETIME
    # The bundle expiry task wakes at least this often (seconds).
    bundle_expiry_interval: float = 10.0
    # The clock of bake times, rollout status and bundle key expiry (tests move it).
    clock: Callable[[], datetime] = utc_now


@dataclass
class AppState:
    engine: Engine
    uow: UnitOfWorkFactory
    cache: DeliveryCache
    metrics: Metrics
    settings: Settings
    listener: Any = None
    parse_pool: ParsePool = field(default_factory=ParsePool)
    # token hash -> (principal, expiry): long-polls authenticate without a database read.
    token_cache: dict[str, tuple[Principal, float]] = field(default_factory=dict)
    # Why /readyz last failed to reach the database (logged when it changes), or None.
    not_ready_cause: str | None = None


def app_state(request: Request) -> AppState:
    return request.app.state.spirl  # type: ignore[no-any-return]


def fleet_view(state: AppState) -> FleetView:
    """The fleet as this process sees it now (staleness window, unwritten contacts, clock)."""
    return FleetView(state.settings.fleet, state.cache.contacts.snapshot(), state.settings.clock())


async def call_service(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    state = app_state(request)

    def call() -> T:
        with state.uow() as uow:
            return fn(uow, *args, **kwargs)

    return await run_in_threadpool(call)


def bearer(request: Request) -> str | None:
    return bearer_from(request.headers.get("authorization", ""))


def bearer_from(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(request: Request) -> Principal:
    return await authenticate_token(app_state(request), bearer(request))


async def authenticate_token(state: AppState, token: str | None) -> Principal:
    if token is None:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    key = auth_service.hash_token(token)
    cached = state.token_cache.get(key)
    now = time.monotonic()
    if cached and cached[1] > now:
        return cached[0]

    def lookup() -> Principal:
        with state.uow() as uow:
            return auth_service.authenticate(uow, token)

    principal = await state.cache.cold_read(lookup)
    if principal.server_id in state.cache.deregistered:
        raise Deregistered()  # deregistered while we looked it up: never cache it
    state.token_cache[key] = (principal, now + TOKEN_CACHE_SECONDS)
    return principal


async def require_user(request: Request, *, admin: bool = False) -> Principal:
    principal = await authenticate(request)
    principal.require_user()
    if admin:
        principal.require_admin()
    return principal


async def read_body(request: Request) -> bytes:
    """The request body, refusing (413) anything over the limit before reading it all."""
    limit = app_state(request).settings.max_request_bytes
    try:
        return await read_capped(request, limit)
    except BodyTooLarge as exc:
        size = f"of {exc.declared} bytes " if exc.declared is not None else ""
        raise PayloadTooLarge(f"request body {size}is over the {limit}-byte limit") from None


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a strict JSON object (see inputs.py); an empty body is {}.

    A large body is decoded by the parse pool, never on the event loop.
    """
    body = await read_body(request)
    if not body:
        return {}
    return await parse_off_loop(request, decode_json_object, body, size=len(body))


async def parse_off_loop(request: Request, fn: Callable[..., T], *args: Any, size: int) -> T:
    """Run CPU-bound parsing or validation of `size` bytes of input on the app's parse pool."""
    return await app_state(request).parse_pool.run(fn, *args, size=size)
