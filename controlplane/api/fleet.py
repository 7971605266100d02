"""Routes of the server lifecycle and of rollouts: one server (details, deregistration), the
servers of a deployment, and how far a config version has reached its servers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from controlplane.api.context import app_state, call_service, require_user
from controlplane.api.inputs import query_int
from controlplane.services import fleet as fleet_service


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
        request,
        fleet_service.rollout_status,
        p["scope"],
        p["scope_id"],
        version,
        state.settings.fleet,
        state.cache.contacts.snapshot(),
    )
    return JSONResponse(result)
