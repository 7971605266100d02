"""The console's pages about one config scope: current config and history, one version's
YAML, the side-by-side diff of two versions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from controlplane.api.context import call_service
from controlplane.api.inputs import query_int
from controlplane.console.pages import SCOPE_LABELS, deployment_crumbs, page
from controlplane.console.render import render
from controlplane.console.session import User
from controlplane.console.sidebyside import side_by_side
from controlplane.domain import (
    DEPLOYMENT,
    TRUST_DOMAIN,
    check_scope,
)
from controlplane.services import config as config_service
from controlplane.services import objects as object_service
from controlplane.store.unit_of_work import UnitOfWork

HISTORY_PAGE = 50


def scope_crumbs(uow: UnitOfWork, scope: str, scope_id: str) -> list[tuple[str, str | None]]:
    """Breadcrumbs down to the object that owns a config scope."""
    check_scope(scope)
    if scope == TRUST_DOMAIN:
        td = object_service.get_trust_domain(uow, scope_id)
        return [(td["name"], f"/ui/trust-domains/{td['id']}")]
    if scope == DEPLOYMENT:
        tdd = object_service.get_deployment(uow, scope_id)
        return deployment_crumbs(object_service.get_trust_domain(uow, tdd["trust_domain_id"]), tdd)
    c = object_service.get_cluster(uow, scope_id)
    tdd = object_service.get_deployment(uow, c["trust_domain_deployment_id"])
    td = object_service.get_trust_domain(uow, tdd["trust_domain_id"])
    return deployment_crumbs(td, tdd) + [(c["name"], f"/ui/clusters/{c['id']}")]


def config_url(scope: str, scope_id: str, tail: str = "") -> str:
    return f"/ui/config/{scope}/{scope_id}{tail}"


async def scope_page(
    request: Request,
    user: User,
    template: str,
    leaf: str | None,
    read: Callable[[UnitOfWork, str, str], dict[str, Any]],
) -> Response:
    """A page about one config scope (/ui/config/{scope}/{scope_id}...): `read(uow, scope,
    scope_id)` gathers its data; breadcrumbs lead down to the scope's owner and its config page
    (`leaf` names the page below it)."""
    scope, scope_id = check_scope(request.path_params["scope"]), request.path_params["scope_id"]

    def gather_all(uow: UnitOfWork) -> dict[str, Any]:
        return {"crumbs": scope_crumbs(uow, scope, scope_id), **read(uow, scope, scope_id)}

    data = await call_service(request, gather_all)
    base = config_url(scope, scope_id)
    config_crumb = f"{SCOPE_LABELS[scope]} config"
    data["crumbs"] += (
        [(config_crumb, None)] if leaf is None else [(config_crumb, base), (leaf, None)]
    )
    context = {"user": user, "scope": scope, "scope_id": scope_id, "base": base}
    return render(request, template, {**context, **data})


@page
async def config(request: Request, user: User) -> Response:
    """A scope's current config, its history (paged), and the forms to diff or roll back."""
    before = query_int(request.query_params.get("before"), "before", minimum=1)
    written = query_int(request.query_params.get("written"), "written", minimum=1)

    def read(uow: UnitOfWork, scope: str, scope_id: str) -> dict[str, Any]:
        history = config_service.history(uow, scope, scope_id, limit=HISTORY_PAGE, before=before)
        return {
            "current": config_service.get_config(uow, scope, scope_id),
            "history": history,
            "scope_label": SCOPE_LABELS[scope],
            "before": before,
            "written": written,
        }

    return await scope_page(request, user, "config.html", None, read)


@page
async def config_version(request: Request, user: User) -> Response:
    """The YAML of one stored version."""
    version = query_int(request.path_params["version"], "version", minimum=1)

    def read(uow: UnitOfWork, scope: str, scope_id: str) -> dict[str, Any]:
        return {
            "config": config_service.get_config(uow, scope, scope_id, version),
            "current_version": config_service.get_config(uow, scope, scope_id)["version"],
        }

    return await scope_page(request, user, "version.html", f"version {version}", read)


def diff_view(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The sections of a service diff, each with its side-by-side rows."""
    return [
        {**section, "rows": side_by_side(section["old_yaml"], section["new_yaml"])}
        for section in result["sections"]
    ]


@page
async def config_diff(request: Request, user: User) -> Response:
    """Two versions side by side, section by section."""
    q = request.query_params
    to_v = query_int(q.get("to"), "to", required=True)
    assert to_v is not None
    from_v = query_int(q.get("from"), "from")  # none chosen: the version before `to`
    from_v = max(to_v - 1, 0) if from_v is None else from_v

    def read(uow: UnitOfWork, scope: str, scope_id: str) -> dict[str, Any]:
        diff = config_service.diff(uow, scope, scope_id, from_v, to_v)
        return {"from_version": from_v, "to_version": to_v, "sections": diff_view(diff)}

    return await scope_page(request, user, "diff.html", f"diff {from_v} → {to_v}", read)
