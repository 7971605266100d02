"""The control plane HTTP application: thin handlers over the service layer.

Blocking service calls (SQLAlchemy) run in the thread pool; the long-poll route waits on the
in-memory delivery cache on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from controlplane.api import openapi
from controlplane.api.errors import PayloadTooLarge, handle_exception, to_response
from controlplane.api.metrics import Metrics
from controlplane.delivery.cache import DeliveryCache, encode, sync_response
from controlplane.domain import BadRequest, DomainError, Unauthenticated, utc_now
from controlplane.services import audit as audit_service
from controlplane.services import auth as auth_service
from controlplane.services import config as config_service
from controlplane.services import objects as object_service
from controlplane.services import servers as server_service
from controlplane.services.auth import Principal
from controlplane.store.unit_of_work import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("controlplane.api")
T = TypeVar("T")

MAX_REQUEST_BYTES = 1_048_576 + 65_536  # a maximal YAML upload plus its JSON envelope
MAX_WAIT_SECONDS = 60.0
DEFAULT_WAIT_SECONDS = 30.0
YAML_MEDIA_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
TOKEN_CACHE_SECONDS = 30.0


@dataclass
class Settings:
    max_request_bytes: int = MAX_REQUEST_BYTES


@dataclass
class AppState:
    engine: Engine
    uow: UnitOfWorkFactory
    cache: DeliveryCache
    metrics: Metrics
    settings: Settings
    listener: Any = None
    # token hash -> (principal, expiry): long-polls authenticate without a database read.
    token_cache: dict[str, tuple[Principal, float]] = field(default_factory=dict)


def _state(request: Request) -> AppState:
    return request.app.state.spirl  # type: ignore[no-any-return]


async def _service(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    state = _state(request)

    def call() -> T:
        with state.uow() as uow:
            return fn(uow, *args, **kwargs)

    return await run_in_threadpool(call)


def _bearer(request: Request) -> str | None:
    return _bearer_from(request.headers.get("authorization", ""))


def _bearer_from(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(request: Request) -> Principal:
    return await authenticate_token(_state(request), _bearer(request))


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
    state.token_cache[key] = (principal, now + TOKEN_CACHE_SECONDS)
    return principal


async def _user(request: Request, *, admin: bool = False) -> Principal:
    principal = await authenticate(request)
    principal.require_user()
    if admin:
        principal.require_admin()
    return principal


async def read_body(request: Request) -> bytes:
    """The request body, refusing (413) anything over the limit before reading it all."""
    limit = _state(request).settings.max_request_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
    return bytes(body)


async def read_json(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _int_param(value: Any, name: str, *, minimum: int = 0, required: bool = False) -> int | None:
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{name} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{name} must be an integer, not {value!r}") from exc
    if number < minimum:
        raise BadRequest(f"{name} must be at least {minimum}")
    return number


def _query_bool(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise BadRequest(f"{name} must be true or false")


def _bool_param(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


# -- health, metrics, openapi ---------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Liveness: the process serves requests."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the database answers and its schema is current."""
    state = _state(request)

    def check() -> None:
        from controlplane.store.database import schema_status

        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = schema_status(state.engine)
        if current != head:
            raise RuntimeError(f"schema at {current}, needs {head}")

    try:
        await run_in_threadpool(check)
    except Exception as exc:
        return JSONResponse({"status": "not ready", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    await _user(request)  # without a token only on the separate --metrics-listen address
    return PlainTextResponse(
        _state(request).metrics.render(), media_type="text/plain; version=0.0.4"
    )


async def openapi_document(request: Request) -> Response:
    """This API's OpenAPI document."""
    await authenticate(request)
    return JSONResponse(openapi.document(request.app.routes))


# -- objects ----------------------------------------------------------------------------------


async def trust_domains(request: Request) -> Response:
    """List trust domains (GET) or create one (POST {name})."""
    if request.method == "POST":
        principal = await _user(request, admin=True)
        body = await read_json(request)
        result = await _service(
            request, object_service.create_trust_domain, body.get("name"), principal.actor
        )
        return JSONResponse(result, status_code=201)
    await _user(request)
    return JSONResponse({"items": await _service(request, object_service.list_trust_domains)})


async def trust_domain(request: Request) -> Response:
    """Get (GET) or delete (DELETE) a trust domain."""
    td_id = request.path_params["td_id"]
    if request.method == "DELETE":
        principal = await _user(request, admin=True)
        await _service(request, object_service.delete_trust_domain, td_id, principal.actor)
        return Response(status_code=204)
    await _user(request)
    return JSONResponse(await _service(request, object_service.get_trust_domain, td_id))


async def deployments(request: Request) -> Response:
    """List deployments (GET ?trust_domain_id=) or create one (POST {name, trust_domain_id})."""
    if request.method == "POST":
        principal = await _user(request, admin=True)
        body = await read_json(request)
        result = await _service(
            request,
            object_service.create_deployment,
            body.get("name"),
            body.get("trust_domain_id"),
            principal.actor,
        )
        return JSONResponse(result, status_code=201)
    await _user(request)
    items = await _service(
        request, object_service.list_deployments, request.query_params.get("trust_domain_id")
    )
    return JSONResponse({"items": items})


async def deployment(request: Request) -> Response:
    """Get (GET) or delete (DELETE) a trust domain deployment."""
    tdd_id = request.path_params["tdd_id"]
    if request.method == "DELETE":
        principal = await _user(request, admin=True)
        await _service(request, object_service.delete_deployment, tdd_id, principal.actor)
        return Response(status_code=204)
    await _user(request)
    return JSONResponse(await _service(request, object_service.get_deployment, tdd_id))


async def clusters(request: Request) -> Response:
    """List clusters (GET ?trust_domain_deployment_id=) or create one (POST {name, trust_domain_deployment_id})."""
    if request.method == "POST":
        principal = await _user(request, admin=True)
        body = await read_json(request)
        result = await _service(
            request,
            object_service.create_cluster,
            body.get("name"),
            body.get("trust_domain_deployment_id"),
            principal.actor,
        )
        return JSONResponse(result, status_code=201)
    await _user(request)
    items = await _service(
        request,
        object_service.list_clusters,
        request.query_params.get("trust_domain_deployment_id"),
    )
    return JSONResponse({"items": items})


async def cluster(request: Request) -> Response:
    """Get (GET) or delete (DELETE) a cluster."""
    cluster_id = request.path_params["cluster_id"]
    if request.method == "DELETE":
        principal = await _user(request, admin=True)
        await _service(request, object_service.delete_cluster, cluster_id, principal.actor)
        return Response(status_code=204)
    await _user(request)
    return JSONResponse(await _service(request, object_service.get_cluster, cluster_id))


async def join_tokens(request: Request) -> Response:
    """Issue a single-use join token for a deployment (POST {ttl_seconds})."""
    principal = await _user(request, admin=True)
    body = await read_json(request)
    result = await _service(
        request,
        auth_service.create_join_token,
        request.path_params["tdd_id"],
        body.get("ttl_seconds"),
        principal.actor,
    )
    return JSONResponse(result, status_code=201)


async def deployment_servers(request: Request) -> Response:
    """The servers of a deployment with their desired/applied versions, health and last contact."""
    await _user(request)
    items = await _service(
        request,
        server_service.list_servers,
        request.path_params["tdd_id"],
        dict(_state(request).cache.last_contact),
    )
    return JSONResponse({"items": items})


# -- config -----------------------------------------------------------------------------------


async def config(request: Request) -> Response:
    """Get the current config of a scope (GET) or update it (PUT {yaml, prune, expected_version, validate_only})."""
    scope, scope_id = request.path_params["scope"], request.path_params["scope_id"]
    if request.method == "GET":
        await _user(request)
        return JSONResponse(await _service(request, config_service.get_config, scope, scope_id))
    principal = await _user(request, admin=True)
    yaml_text: str | bytes
    if request.headers.get("content-type", "").split(";")[0].strip() in YAML_MEDIA_TYPES:
        # Raw YAML body (curl --data-binary @file); options in the query string.
        yaml_text = await read_body(request)
        q = request.query_params
        prune = _query_bool(q.get("prune"), "prune")
        validate_only = _query_bool(q.get("validate_only"), "validate_only")
        expected = _int_param(q.get("expected_version"), "expected_version")
    else:
        body = await read_json(request)
        text_field = body.get("yaml")
        if not isinstance(text_field, str):
            raise BadRequest("yaml must be a string holding one or more YAML documents")
        yaml_text = text_field
        prune = _bool_param(body.get("prune"), "prune")
        validate_only = _bool_param(body.get("validate_only"), "validate_only")
        expected = _int_param(body.get("expected_version"), "expected_version")
    from controlplane.domain import check_scope

    check_scope(scope)
    uploaded = await run_in_threadpool(config_service.parse_upload, yaml_text, scope)
    result = await _service(
        request,
        config_service.set_config,
        scope,
        scope_id,
        uploaded,
        actor=principal.actor,
        prune=prune,
        expected_version=expected,
        validate_only=validate_only,
    )
    if result.changed:
        _state(request).metrics.inc("spirl_config_writes_total", (("scope", scope),))
    return JSONResponse(result.to_dict())


async def config_section(request: Request) -> Response:
    """Delete one section of a scope's config (DELETE ?expected_version=)."""
    principal = await _user(request, admin=True)
    p = request.path_params
    expected = _int_param(request.query_params.get("expected_version"), "expected_version")
    result = await _service(
        request,
        config_service.delete_section,
        p["scope"],
        p["scope_id"],
        p["section"],
        actor=principal.actor,
        expected_version=expected,
    )
    return JSONResponse(result.to_dict())


async def config_history(request: Request) -> Response:
    """Versions of a scope's config, newest first (?limit=&before=)."""
    await _user(request)
    q = request.query_params
    limit = _int_param(q.get("limit"), "limit", minimum=1) or 20
    before = _int_param(q.get("before"), "before", minimum=1)
    p = request.path_params
    return JSONResponse(
        await _service(
            request, config_service.history, p["scope"], p["scope_id"], limit=limit, before=before
        )
    )


async def config_version(request: Request) -> Response:
    """One stored version of a scope's config."""
    await _user(request)
    p = request.path_params
    version = _int_param(p["version"], "version", minimum=1)
    return JSONResponse(
        await _service(request, config_service.get_config, p["scope"], p["scope_id"], version)
    )


async def config_diff(request: Request) -> Response:
    """Per-section diff of two versions (?from=&to=)."""
    await _user(request)
    q, p = request.query_params, request.path_params
    from_v = _int_param(q.get("from"), "from", required=True)
    to_v = _int_param(q.get("to"), "to", required=True)
    assert from_v is not None and to_v is not None
    return JSONResponse(
        await _service(request, config_service.diff, p["scope"], p["scope_id"], from_v, to_v)
    )


async def config_rollback(request: Request) -> Response:
    """Write an old version as a new version (POST {version, expected_version})."""
    principal = await _user(request, admin=True)
    body = await read_json(request)
    version = _int_param(body.get("version"), "version", minimum=1, required=True)
    expected = _int_param(body.get("expected_version"), "expected_version")
    p = request.path_params
    assert version is not None
    result = await _service(
        request,
        config_service.rollback,
        p["scope"],
        p["scope_id"],
        version,
        actor=principal.actor,
        expected_version=expected,
    )
    return JSONResponse(result.to_dict())


async def effective(request: Request) -> Response:
    """Effective config of a (deployment, cluster) pair, with the scope each section came from."""
    await _user(request)
    q = request.query_params
    tdd_id = q.get("trust_domain_deployment_id")
    if not tdd_id:
        raise BadRequest("trust_domain_deployment_id is required")
    return JSONResponse(
        await _service(request, config_service.get_effective, tdd_id, q.get("cluster_id"))
    )


async def audit_log(request: Request) -> Response:
    """The audit log, newest first (?limit=&before=)."""
    await _user(request)
    q = request.query_params
    limit = _int_param(q.get("limit"), "limit", minimum=1) or 50
    before = _int_param(q.get("before"), "before", minimum=1)
    return JSONResponse(
        {
            "items": await _service(
                request, audit_service.list_events, limit=min(limit, 500), before_id=before
            )
        }
    )


# -- trust domain servers -----------------------------------------------------------------------


async def register(request: Request) -> Response:
    """Register a trust domain server with a join token (Authorization: Bearer <join token>)."""
    body = await read_json(request)
    result = await _service(
        request,
        auth_service.register_server,
        _bearer(request),
        body.get("name"),
        body.get("cluster_id"),
    )
    log.info(
        "server registered",
        extra={
            "server_id": result["server_id"],
            "deployment_id": result["trust_domain_deployment_id"],
        },
    )
    return JSONResponse(result, status_code=201)


async def server_sync(request: Request) -> Response:
    """Long-poll for the server's effective config and trust bundle (?config_version=&bundle_version=&wait=)."""
    body = await long_poll(
        _state(request),
        request.path_params["server_id"],
        _bearer(request),
        request.scope.get("query_string", b""),
    )
    return Response(body, media_type="application/json")


async def long_poll(
    state: AppState, server_id: str, token: str | None, query_string: bytes
) -> bytes:
    """The long-poll's reply: at once when the server's versions are stale, else at a change or `wait`.

    Takes plain values, not a Request: thousands of these wait at once, and each holds only
    what it needs while it waits.
    """
    principal = await authenticate_token(state, token)
    principal.require_server(server_id)
    q = dict(urllib.parse.parse_qsl(query_string.decode("latin-1")))
    have_config = _int_param(q.get("config_version"), "config_version")
    have_bundle = _int_param(q.get("bundle_version"), "bundle_version")
    try:
        wait = float(q.get("wait", DEFAULT_WAIT_SECONDS))
    except ValueError as exc:
        raise BadRequest("wait must be a number of seconds") from exc
    del q, principal
    wait = max(0.0, min(wait, MAX_WAIT_SECONDS))
    placement = await state.cache.placement(server_id)
    state.cache.last_contact[server_id] = utc_now()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        snapshot = await state.cache.snapshot(placement)
        if snapshot.config_version != have_config or snapshot.bundle.version != have_bundle:
            state.cache.deliveries += 1
            state.metrics.inc("spirl_deliveries_total")
            return state.cache.changed_reply(placement, snapshot)
        remaining = deadline - loop.time()
        if remaining <= 0:
            return encode(sync_response(snapshot, state.cache, False))
        del snapshot
        await state.cache.wait_for_change(placement.trust_domain_id, remaining)


async def server_status(request: Request) -> Response:
    """A server reports its desired/attempted/applied versions, health, key manager and keys."""
    server_id = request.path_params["server_id"]
    principal = await authenticate(request)
    principal.require_server(server_id)
    body = await read_json(request)
    await _service(request, server_service.report_status, server_id, body)
    _state(request).cache.last_contact[server_id] = utc_now()
    return Response(status_code=204)


async def trust_bundle(request: Request) -> Response:
    """The trust domain's SPIFFE bundle (JWKS). Public: bundles hold only public keys."""
    td_id = request.path_params["td_id"]
    version, keys = await _service(request, server_service.bundle_keys, td_id)
    return JSONResponse(server_service.bundle_document(version, keys, utc_now()))


# -- application --------------------------------------------------------------------------------

PUBLIC_PATHS = {"/healthz", "/readyz", "/v1/trust-domains/{td_id}/bundle"}

ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/openapi.json", openapi_document, methods=["GET"]),
    Route("/v1/trust-domains", trust_domains, methods=["GET", "POST"]),
    Route("/v1/trust-domains/{td_id}", trust_domain, methods=["GET", "DELETE"]),
    Route("/v1/trust-domains/{td_id}/bundle", trust_bundle, methods=["GET"]),
    Route("/v1/trust-domain-deployments", deployments, methods=["GET", "POST"]),
    Route("/v1/trust-domain-deployments/{tdd_id}", deployment, methods=["GET", "DELETE"]),
    Route("/v1/trust-domain-deployments/{tdd_id}/join-tokens", join_tokens, methods=["POST"]),
    Route("/v1/trust-domain-deployments/{tdd_id}/servers", deployment_servers, methods=["GET"]),
    Route("/v1/clusters", clusters, methods=["GET", "POST"]),
    Route("/v1/clusters/{cluster_id}", cluster, methods=["GET", "DELETE"]),
    Route("/v1/config/{scope}/{scope_id}", config, methods=["GET", "PUT"]),
    Route("/v1/config/{scope}/{scope_id}/sections/{section}", config_section, methods=["DELETE"]),
    Route("/v1/config/{scope}/{scope_id}/history", config_history, methods=["GET"]),
    Route("/v1/config/{scope}/{scope_id}/versions/{version}", config_version, methods=["GET"]),
    Route("/v1/config/{scope}/{scope_id}/diff", config_diff, methods=["GET"]),
    Route("/v1/config/{scope}/{scope_id}/rollback", config_rollback, methods=["POST"]),
    Route("/v1/effective-config", effective, methods=["GET"]),
    Route("/v1/audit", audit_log, methods=["GET"]),
    Route("/v1/servers/register", register, methods=["POST"]),
    Route("/v1/servers/{server_id}/sync", server_sync, methods=["GET"]),
    Route("/v1/servers/{server_id}/status", server_status, methods=["POST"]),
]


class RequestLogMiddleware:
    """Logs every request as one structured line and records its latency by route template."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            self.metrics.observe_latency((("method", scope["method"]), ("route", route)), elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status["code"],
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )


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
                    token = _bearer_from(value.decode("latin-1"))
            body = await long_poll(self._state, match.group(1), token, scope["query_string"])
        except Exception as exc:
            error = to_response(exc)
            status, body = error.status_code, bytes(error.body)
        # Raw ASGI messages: thousands of replies go out at once after a change.
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
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


def _route_template(scope: Any) -> str:
    route = scope.get("route")
    return getattr(route, "path", "unmatched")


def _gauges(state: AppState) -> Callable[[], Any]:
    def collect() -> Any:
        yield (
            "spirl_longpolls_waiting",
            "Long-polls held open now",
            (),
            float(state.cache.waiting),
        )
        yield (
            "spirl_deliveries",
            "Config/bundle deliveries sent by this process",
            (),
            float(state.cache.deliveries),
        )
        from sqlalchemy import func, select

        from controlplane.store.models import ConfigHeadRow, ConfigVersionRow, ServerRow

        with state.uow() as uow:
            s = uow.session
            for scope, count in s.execute(
                select(ConfigVersionRow.scope, func.count()).group_by(ConfigVersionRow.scope)
            ):
                yield (
                    "spirl_config_versions",
                    "Stored config versions per scope type",
                    (("scope", scope),),
                    float(count),
                )
            for scope, count in s.execute(
                select(ConfigHeadRow.scope, func.count()).group_by(ConfigHeadRow.scope)
            ):
                yield (
                    "spirl_configured_scopes",
                    "Scopes with config, per scope type",
                    (("scope", scope),),
                    float(count),
                )
            for health, count in s.execute(
                select(ServerRow.health, func.count()).group_by(ServerRow.health)
            ):
                yield (
                    "spirl_servers",
                    "Registered trust domain servers by health",
                    (("health", health),),
                    float(count),
                )

    return collect


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(fn)


def create_app(
    engine: Engine, settings: Settings | None = None, *, listen_notifications: bool = True
) -> LongPollFastPath:
    metrics_registry = Metrics()
    metrics_registry.describe(
        "spirl_deliveries_total", "counter", "Long-poll replies that carried a new config or bundle"
    )
    metrics_registry.describe(
        "spirl_config_writes_total", "counter", "Config versions written, by scope"
    )
    uow_factory = UnitOfWorkFactory(engine)
    cache = DeliveryCache(uow_factory)
    uow_factory.publish = cache.publish_threadsafe
    state = AppState(
        engine=engine,
        uow=uow_factory,
        cache=cache,
        metrics=metrics_registry,
        settings=settings or Settings(),
    )
    metrics_registry.add_gauge_source(_gauges(state))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        cache.bind_loop(loop)
        if listen_notifications and engine.dialect.name == "postgresql":
            from controlplane.delivery.pg_listener import PostgresListener

            conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            state.listener = PostgresListener(
                conninfo,
                on_changes=cache.publish_threadsafe,
                on_reconnect=lambda: _call_soon(loop, cache.resync_all),
            )
            state.listener.start()
        try:
            yield
        finally:
            if state.listener is not None:
                state.listener.stop()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        DomainError: handle_exception,
        Exception: handle_exception,
    }
    from controlplane.documents import DocumentValidationError, InputRejectedError

    handlers[DocumentValidationError] = handle_exception
    handlers[InputRejectedError] = handle_exception
    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=handlers)  # type: ignore[arg-type]
    app.state.spirl = state
    app.add_middleware(RequestLogMiddleware, metrics=metrics_registry)  # type: ignore[arg-type]
    return LongPollFastPath(app)


__all__ = ["AppState", "Settings", "UnitOfWork", "create_app", "to_response"]
