"""The control plane HTTP application: thin handlers over the service layer.

Blocking service calls (SQLAlchemy) run in the thread pool; the long-poll route waits on the
in-memory delivery cache on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from controlplane import console
from controlplane.api import openapi
from controlplane.api.context import (
    YAML_MEDIA_TYPES,
    AppState,
    Settings,
    app_state,
    authenticate,
    bearer,
    call_service,
    fleet_view,
    parse_off_loop,
    read_body,
    read_json,
    require_user,
)
from controlplane.api.errors import handle_exception
from controlplane.api.fleet import (
    deployment_rollout,
    deployment_rollout_action,
    deployment_servers,
    rollout_status,
    server_item,
)
from controlplane.api.housekeeping import Housekeeping
from controlplane.api.identity import ApiIdentityMiddleware
from controlplane.api.inputs import (
    AUDIT_LIMIT_MAX,
    HISTORY_LIMIT_MAX,
    JOIN_TOKEN_LIMIT_MAX,
    json_bool,
    json_int,
    query_bool,
    query_int,
)
from controlplane.api.longpoll import LongPollFastPath, server_sync
from controlplane.api.metrics import Metrics
from controlplane.delivery.cache import DeliveryCache
from controlplane.domain import BadRequest, DomainError, Unauthenticated, check_scope
from controlplane.services import audit as audit_service
from controlplane.services import auth as auth_service
from controlplane.services import bundles as bundle_service
from controlplane.services import config as config_service
from controlplane.services import fleet as fleet_service
from controlplane.services import objects as object_service
from controlplane.services import servers as server_service
from controlplane.services.rollout_views import rollout_gauges
from controlplane.store.unit_of_work import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("controlplane.api")
# -- health, metrics, openapi ---------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Liveness: the process serves requests."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the database answers and its schema is current."""
    state = app_state(request)

    def check() -> str | None:
        from controlplane.store.database import schema_status

        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = schema_status(state.engine)
        return f"schema at {current}, needs {head}" if current != head else None

    try:
        reason = await run_in_threadpool(check)
    except Exception as exc:
        # Unauthenticated: the answer names the kind of failure only (a driver's message can
        # hold the database's host, port and user); the log has the whole of it, once per
        # change of cause rather than once per probe.
        if str(exc) != state.not_ready_cause:
            log.warning("not ready: %s", exc)
        state.not_ready_cause = str(exc)
        reason = "the database cannot be reached"
    else:
        state.not_ready_cause = None
    if reason is not None:
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    await require_user(request)  # without a token only on the separate --metrics-listen address
    return PlainTextResponse(
        app_state(request).metrics.render(), media_type="text/plain; version=0.0.4"
    )


async def openapi_document(request: Request) -> Response:
    """This API's OpenAPI document."""
    await authenticate(request)
    return JSONResponse(openapi.document(request.app.routes))


# -- objects ----------------------------------------------------------------------------------


def _object_item(
    param: str,
    what: str,
    get: Callable[[UnitOfWork, str], dict[str, Any]],
    delete: Callable[[UnitOfWork, str, str, bool], None],
) -> Callable[[Request], Awaitable[Response]]:
    """GET (viewer) or DELETE (admin, ?force=true) of one trust domain, deployment or cluster."""

    async def handler(request: Request) -> Response:
        object_id = request.path_params[param]
        if request.method == "DELETE":
            principal = await require_user(request, admin=True)
            force = query_bool(request.query_params.get("force"), "force")
            await call_service(request, delete, object_id, principal.actor, force)
            return Response(status_code=204)
        await require_user(request)
        return JSONResponse(await call_service(request, get, object_id))

    handler.__name__ = what.replace(" ", "_")
    handler.__doc__ = f"Get (GET) or delete (DELETE) a {what}."
    return handler


def _delete_trust_domain(uow: UnitOfWork, td_id: str, actor: str, force: bool) -> None:
    if force:
        raise BadRequest(
            "force applies to deployments and clusters (it deregisters their servers); "
            "delete a trust domain's deployments first"
        )
    object_service.delete_trust_domain(uow, td_id, actor)


trust_domain = _object_item(
    "td_id", "trust domain", object_service.get_trust_domain, _delete_trust_domain
)
deployment = _object_item(
    "tdd_id",
    "trust domain deployment",
    object_service.get_deployment,
    fleet_service.delete_deployment,
)
cluster = _object_item(
    "cluster_id", "cluster", object_service.get_cluster, fleet_service.delete_cluster
)


async def trust_domains(request: Request) -> Response:
    """List trust domains (GET) or create one (POST {name})."""
    if request.method == "POST":
        principal = await require_user(request, admin=True)
        body = await read_json(request)
        result = await call_service(
            request, object_service.create_trust_domain, body.get("name"), principal.actor
        )
        return JSONResponse(result, status_code=201)
    await require_user(request)
    return JSONResponse({"items": await call_service(request, object_service.list_trust_domains)})


async def deployments(request: Request) -> Response:
    """List deployments (GET ?trust_domain_id=) or create one (POST {name, trust_domain_id})."""
    if request.method == "POST":
        principal = await require_user(request, admin=True)
        body = await read_json(request)
        result = await call_service(
            request,
            object_service.create_deployment,
            body.get("name"),
            body.get("trust_domain_id"),
            principal.actor,
        )
        return JSONResponse(result, status_code=201)
    await require_user(request)
    items = await call_service(
        request, object_service.list_deployments, request.query_params.get("trust_domain_id")
    )
    return JSONResponse({"items": items})


async def clusters(request: Request) -> Response:
    """List clusters (GET ?trust_domain_deployment_id=) or create one (POST {name, trust_domain_deployment_id})."""
    if request.method == "POST":
        principal = await require_user(request, admin=True)
        body = await read_json(request)
        result = await call_service(
            request,
            object_service.create_cluster,
            body.get("name"),
            body.get("trust_domain_deployment_id"),
            principal.actor,
        )
        return JSONResponse(result, status_code=201)
    await require_user(request)
    items = await call_service(
        request,
        object_service.list_clusters,
        request.query_params.get("trust_domain_deployment_id"),
    )
    return JSONResponse({"items": items})


async def join_tokens(request: Request) -> Response:
    """List a deployment's join tokens (GET) or issue a single-use one (POST {ttl_seconds})."""
    if request.method == "GET":
        await require_user(request)
        q = request.query_params
        limit = query_int(q.get("limit"), "limit", minimum=1, maximum=JOIN_TOKEN_LIMIT_MAX) or 50
        items = await call_service(
            request, auth_service.list_join_tokens, request.path_params["tdd_id"], limit
        )
        return JSONResponse({"items": items})
    principal = await require_user(request, admin=True)
    body = await read_json(request)
    result = await call_service(
        request,
        auth_service.create_join_token,
        request.path_params["tdd_id"],
        json_int(body.get("ttl_seconds"), "ttl_seconds", minimum=1),
        principal.actor,
    )
    return JSONResponse(result, status_code=201)


async def join_token(request: Request) -> Response:
    """Revoke a join token no server registered with yet (DELETE)."""
    principal = await require_user(request, admin=True)
    await call_service(
        request,
        auth_service.revoke_join_token,
        request.path_params["tdd_id"],
        request.path_params["token_id"],
        principal.actor,
    )
    return Response(status_code=204)


# -- config -----------------------------------------------------------------------------------


async def config(request: Request) -> Response:
    """Get the current config of a scope (GET) or update it (PUT {yaml, prune, expected_version, validate_only})."""
    scope, scope_id = request.path_params["scope"], request.path_params["scope_id"]
    if request.method == "GET":
        await require_user(request)
        return JSONResponse(await call_service(request, config_service.get_config, scope, scope_id))
    principal = await require_user(request, admin=True)
    yaml_text: str | bytes
    if request.headers.get("content-type", "").split(";")[0].strip() in YAML_MEDIA_TYPES:
        # Raw YAML body (curl --data-binary @file); options in the query string.
        yaml_text = await read_body(request)
        q = request.query_params
        prune = query_bool(q.get("prune"), "prune")
        validate_only = query_bool(q.get("validate_only"), "validate_only")
        expected = query_int(q.get("expected_version"), "expected_version")
    else:
        body = await read_json(request)
        text_field = body.get("yaml")
        if not isinstance(text_field, str):
            raise BadRequest("yaml must be a string holding one or more YAML documents")
        yaml_text = text_field
        prune = json_bool(body.get("prune"), "prune")
        validate_only = json_bool(body.get("validate_only"), "validate_only")
        expected = json_int(body.get("expected_version"), "expected_version")
    check_scope(scope)
    uploaded = await parse_off_loop(
        request, config_service.parse_upload, yaml_text, scope, size=len(yaml_text)
    )
    result = await call_service(
        request,
        config_service.set_config,
        scope,
        scope_id,
        uploaded,
        actor=principal.actor,
        prune=prune,
        expected_version=expected,
        validate_only=validate_only,
        fleet=fleet_view(app_state(request)),
    )
    if result.changed:
        app_state(request).metrics.inc("spirl_config_writes_total", (("scope", scope),))
    return JSONResponse(result.to_dict())


async def config_section(request: Request) -> Response:
    """Delete one section of a scope's config (DELETE ?expected_version=)."""
    principal = await require_user(request, admin=True)
    p = request.path_params
    expected = query_int(request.query_params.get("expected_version"), "expected_version")
    result = await call_service(
        request,
        config_service.delete_section,
        p["scope"],
        p["scope_id"],
        p["section"],
        actor=principal.actor,
        expected_version=expected,
        fleet=fleet_view(app_state(request)),
    )
    return JSONResponse(result.to_dict())


async def config_history(request: Request) -> Response:
    """Versions of a scope's config, newest first (?limit=&before=)."""
    await require_user(request)
    q = request.query_params
    limit = query_int(q.get("limit"), "limit", minimum=1, maximum=HISTORY_LIMIT_MAX) or 20
    before = query_int(q.get("before"), "before", minimum=1)
    p = request.path_params
    return JSONResponse(
        await call_service(
            request, config_service.history, p["scope"], p["scope_id"], limit=limit, before=before
        )
    )


async def config_version(request: Request) -> Response:
    """One stored version of a scope's config."""
    await require_user(request)
    p = request.path_params
    version = query_int(p["version"], "version", minimum=1, required=True)
    return JSONResponse(
        await call_service(request, config_service.get_config, p["scope"], p["scope_id"], version)
    )


async def config_diff(request: Request) -> Response:
    """Per-section diff of two versions (?from=&to=)."""
    await require_user(request)
    q, p = request.query_params, request.path_params
    from_v = query_int(q.get("from"), "from", required=True)
    to_v = query_int(q.get("to"), "to", required=True)
    assert from_v is not None and to_v is not None
    return JSONResponse(
        await call_service(request, config_service.diff, p["scope"], p["scope_id"], from_v, to_v)
    )


async def config_rollback(request: Request) -> Response:
    """Write an old version as a new version (POST {version, expected_version})."""
    principal = await require_user(request, admin=True)
    body = await read_json(request)
    version = json_int(body.get("version"), "version", minimum=1, required=True)
    expected = json_int(body.get("expected_version"), "expected_version")
    p = request.path_params
    assert version is not None
    result = await call_service(
        request,
        config_service.rollback,
        p["scope"],
        p["scope_id"],
        version,
        actor=principal.actor,
        expected_version=expected,
        fleet=fleet_view(app_state(request)),
    )
    return JSONResponse(result.to_dict())


async def effective(request: Request) -> Response:
    """Effective config of a (deployment, cluster) pair, with the scope each section came from."""
    await require_user(request)
    q = request.query_params
    tdd_id = q.get("trust_domain_deployment_id")
    if not tdd_id:
        raise BadRequest("trust_domain_deployment_id is required")
    return JSONResponse(
        await call_service(request, config_service.get_effective, tdd_id, q.get("cluster_id"))
    )


async def audit_log(request: Request) -> Response:
    """The audit log, newest first (?limit=&before=)."""
    await require_user(request)
    q = request.query_params
    limit = query_int(q.get("limit"), "limit", minimum=1, maximum=AUDIT_LIMIT_MAX) or 50
    before = query_int(q.get("before"), "before", minimum=1)
    return JSONResponse(
        {
            "items": await call_service(
                request, audit_service.list_events, limit=limit, before_id=before
            )
        }
    )


# -- trust domain servers -----------------------------------------------------------------------


async def register(request: Request) -> Response:
    """Register a trust domain server with a join token (Authorization: Bearer <join token>)."""
    if not bearer(request):  # before reading a body nobody has been authenticated for
        raise Unauthenticated("registering needs a join token (Authorization: Bearer <join token>)")
    body = await read_json(request)
    result = await call_service(
        request,
        auth_service.register_server,
        bearer(request),
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


async def server_status(request: Request) -> Response:
    """A server reports its desired/attempted/applied versions, health, key manager and keys."""
    server_id = request.path_params["server_id"]
    principal = await authenticate(request)
    principal.require_server(server_id)
    body = await read_json(request)
    settings = app_state(request).settings
    await call_service(
        request,
        server_service.report_status,
        server_id,
        body,
        now=settings.clock(),
        max_key_lifetime=settings.max_key_lifetime,
    )
    return Response(status_code=204)


async def trust_bundle(request: Request) -> Response:
    """The trust domain's SPIFFE bundle: a SPIFFE bundle endpoint (Trust Domain and Bundle spec
    §5; https_web profile when served with TLS). Public: bundles hold only public keys. Read
    from the database on every request, so a client moving between replicas never sees the
    sequence go backwards."""
    bundle = await call_service(request, bundle_service.read_bundle, request.path_params["td_id"])
    return JSONResponse(bundle.document)


# -- application --------------------------------------------------------------------------------

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
    Route(
        "/v1/trust-domain-deployments/{tdd_id}/join-tokens", join_tokens, methods=["GET", "POST"]
    ),
    Route(
        "/v1/trust-domain-deployments/{tdd_id}/join-tokens/{token_id}",
        join_token,
        methods=["DELETE"],
    ),
    Route("/v1/trust-domain-deployments/{tdd_id}/servers", deployment_servers, methods=["GET"]),
    Route("/v1/trust-domain-deployments/{tdd_id}/rollout", deployment_rollout, methods=["GET"]),
    Route(
        "/v1/trust-domain-deployments/{tdd_id}/rollout/{action}",
        deployment_rollout_action,
        methods=["POST"],
    ),
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
    Route("/v1/servers/{server_id}", server_item, methods=["GET", "DELETE"]),
    Route("/v1/rollouts/{scope}/{scope_id}", rollout_status, methods=["GET"]),
    console.mount(),  # the web console at /ui/ (controlplane/console)
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

        from controlplane.store.models import ConfigHeadRow, ConfigVersionRow

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
            yield from rollout_gauges(uow)
            by_state = fleet_service.count_by_state(
                uow, state.settings.fleet, state.cache.contacts.snapshot()
            )
            for server_state, count in by_state.items():
                yield (
                    "spirl_servers",
                    "Registered trust domain servers by state (HEALTHY and UNHEALTHY as their "
                    "last report said, UNKNOWN without a recent report, UNREACHABLE when silent)",
                    (("state", server_state),),
                    float(count),
                )

    return collect


def _forget_credentials(state: AppState, server_id: str) -> None:
    """A deregistered server's cached credential must not outlive it (see context.TOKEN_CACHE_SECONDS)."""
    for key, (principal, _expiry) in list(state.token_cache.items()):
        if principal.server_id == server_id:
            del state.token_cache[key]


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
    metrics_registry.describe(
        "spirl_rollout_halts_total",
        "counter",
        "Staged rollouts this process halted or rolled back (a refusal or an UNHEALTHY server)",
    )
    metrics_registry.describe(
        "spirl_rollout_promotions_total",
        "counter",
        "Staged rollouts this process moved to their next stage or completed",
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
    cache.on_deregistered(lambda server_id: _forget_credentials(state, server_id))
    housekeeping = Housekeeping(state)

    def after_reconnect() -> None:
        # Deregistrations announced while the listener was down are not known here: drop every
        # cached credential so the next call of each server is checked against the database.
        state.token_cache.clear()
        cache.resync_all()

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
                on_reconnect=lambda: _call_soon(loop, after_reconnect),
            )
            state.listener.start()
        if state.settings.housekeeping:
            housekeeping.start()
        try:
            yield
        finally:
            await state.parse_pool.aclose()
            if state.settings.housekeeping:
                await housekeeping.stop()
            if state.listener is not None:
                state.listener.stop()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        DomainError: handle_exception,
        Exception: handle_exception,
    }
    from controlplane.documents import DocumentValidationError, InputRejectedError

    handlers[DocumentValidationError] = handle_exception
    handlers[InputRejectedError] = handle_exception
    # A body cut by --body-timeout (or a client gone): handled here, not as a server error.
    handlers[ClientDisconnect] = handle_exception
    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=handlers)  # type: ignore[arg-type]
    app.state.spirl = state
    app.state.housekeeping = housekeeping
    app.add_middleware(RequestLogMiddleware, metrics=metrics_registry)  # type: ignore[arg-type]
    app.add_middleware(ApiIdentityMiddleware)  # type: ignore[arg-type]
    return LongPollFastPath(app)


__all__ = ["AppState", "Settings", "create_app"]
