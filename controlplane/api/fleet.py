"""Routes of the server lifecycle and of rollouts: one server (details, deregistration), the
servers of a deployment, how far a config version has reached its servers, and a deployment's
staged rollout (status, promote, pause, resume, abort)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from controlplane.api.context import app_state, call_service, fleet_view, read_json, require_user
from controlplane.api.inputs import json_text, query_int
from controlplane.services import fleet as fleet_service
from controlplane.services import rollout_views
from controlplane.services import rollouts as rollout_service


async def deployment_servers(request: Request) -> Response:
    """The servers of a deployment: state, desired/applied versions, health, error, last contact."""
    await require_user(request)
    state = app_state(request)
    items = await call_service(
        request,
        fleet_service.list_servers,
        request.path_params["tdd_id"],
        state.settings.fleet,
        state.cache.contacts.snapshot(),
    )
    return JSONResponse({"items": items})


async def server_item(request: Request) -> Response:
    """Get a trust domain server with its keys (GET), or deregister it (DELETE).

    Deregistered, its credential stops working at once and its keys leave the trust bundle
    unless another server publishes them.
    """
    server_id = request.path_params["server_id"]
    state = app_state(request)
    if request.method == "DELETE":
        principal = await require_user(request, admin=True)
        result = await call_service(
            request, fleet_service.deregister_server, server_id, principal.actor
        )
        return JSONResponse(result)
    await require_user(request)
    info = await call_service(
        request,
        fleet_service.server_info,
        server_id,
        state.settings.fleet,
        state.cache.contacts.snapshot(),
    )
    return JSONResponse(info)


async def rollout_status(request: Request) -> Response:
    """How far a config version of a scope has reached its servers (?version=, default current)."""
    await require_user(request)
    state = app_state(request)
    p = request.path_params
    version = query_int(request.query_params.get("version"), "version", minimum=1)
    result = await call_service(
        request, rollout_views.scope_status, p["scope"], p["scope_id"], version, fleet_view(state)
    )
    return JSONResponse(result)


async def deployment_rollout(request: Request) -> Response:
    """A deployment's staged rollout: stage, per-stage progress, bake time left, why it halted."""
    await require_user(request)
    tdd_id = request.path_params["tdd_id"]
    view = fleet_view(app_state(request))
    return JSONResponse(await call_service(request, rollout_views.deployment_view, tdd_id, view))


async def deployment_rollout_action(request: Request) -> Response:
    """Promote, pause, resume or abort a deployment's staged rollout ({reason}; audited)."""
    principal = await require_user(request, admin=True)
    body = await read_json(request)
    reason = json_text(body.get("reason"), "reason", max_length=rollout_service.MAX_REASON)
    p = request.path_params
    state = app_state(request)
    await call_service(
        request,
        rollout_service.act,
        p["tdd_id"],
        p["action"],
        principal.actor,
        fleet_view(state),
        reason=reason,
    )
    return JSONResponse(
        await call_service(request, rollout_views.deployment_view, p["tdd_id"], fleet_view(state))
    )
