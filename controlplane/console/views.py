"""The console's read-only pages about objects: trust domains, deployments and their servers,
the key timeline, clusters, the trust bundle, the audit log. Config pages: `config_views.py`;
actions: `actions.py`.
"""

from __future__ import annotations

import statistics
import urllib.parse
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from controlplane.api.context import app_state, call_service, fleet_view
from controlplane.api.inputs import query_int
from controlplane.bundles import entry_identity
from controlplane.console import timeline
from controlplane.console.pages import SCOPE_LABELS, deployment_crumbs, page
from controlplane.console.render import fragment, render
from controlplane.console.session import User
from controlplane.domain import (
    SCOPES,
    TRUST_DOMAIN,
    BadRequest,
    NotFound,
    utc_now,
)
from controlplane.fleet import key_manager_type
from controlplane.services import audit as audit_service
from controlplane.services import bundles as bundle_service
from controlplane.services import config as config_service
from controlplane.services import fleet as fleet_service
from controlplane.services import objects as object_service
from controlplane.services import rollout_views
from controlplane.store.unit_of_work import UnitOfWork

AUDIT_PAGE = 50
SERVERS_REFRESH_MS = 2000
TIMELINE_REFRESH_MS = 5000
MAX_MARKERS = 100  # the newest config changes drawn on the timeline
# Below this the servers' clocks count as the control plane's (report latency, rounding).
CLOCK_OFFSET_SHOWN_SECONDS = 2.0


def deployment_servers_of(uow: UnitOfWork, request: Request, tdd_id: str) -> list[dict[str, Any]]:
    """The servers of a deployment as the API's servers list returns them (the one place the
    console reads them: the servers table, the key timeline and the key details)."""
    state = app_state(request)
    return fleet_service.list_servers(
        uow, tdd_id, state.settings.fleet, state.cache.contacts.snapshot()
    )


# -- trust domains, deployments, clusters ------------------------------------------------------


@page
async def home(request: Request, user: User) -> Response:
    """Trust domains → deployments → clusters."""

    def read(uow: UnitOfWork) -> list[dict[str, Any]]:
        clusters = object_service.list_clusters(uow)
        deployments = object_service.list_deployments(uow)
        tree = []
        for td in object_service.list_trust_domains(uow):
            tds = [dict(d) for d in deployments if d["trust_domain_id"] == td["id"]]
            for d in tds:
                d["clusters"] = [c for c in clusters if c["trust_domain_deployment_id"] == d["id"]]
            tree.append({**td, "deployments": tds})
        return tree

    return render(request, "home.html", {"user": user, "tree": await call_service(request, read)})


@page
async def trust_domain(request: Request, user: User) -> Response:
    """One trust domain: its deployments and clusters, its config, its bundle."""
    td_id = request.path_params["td_id"]

    def read(uow: UnitOfWork) -> dict[str, Any]:
        td = object_service.get_trust_domain(uow, td_id)
        clusters = object_service.list_clusters(uow)
        deployments = [dict(d) for d in object_service.list_deployments(uow, td_id)]
        for d in deployments:
            d["clusters"] = [c for c in clusters if c["trust_domain_deployment_id"] == d["id"]]
        config = config_service.get_config(uow, TRUST_DOMAIN, td_id)
        return {"td": td, "deployments": deployments, "config": config}

    data = await call_service(request, read)
    crumbs = [(data["td"]["name"], None)]
    return render(request, "trust_domain.html", {"user": user, "crumbs": crumbs, **data})


@page
async def bundle(request: Request, user: User) -> Response:
    """The trust domain's merged trust bundle, as served at /v1/trust-domains/{id}/bundle."""
    td_id = request.path_params["td_id"]

    def read(uow: UnitOfWork) -> dict[str, Any]:
        td = object_service.get_trust_domain(uow, td_id)
        return {"td": td, "bundle": bundle_service.read_bundle(uow, td_id)}

    data = await call_service(request, read)
    document = data["bundle"].document
    expiry = {entry_identity(k.entry): k.not_after for k in data["bundle"].keys}
    rows = [
        {
            "kid": jwk.get("kid"),  # X.509 CA entries carry none (X509-SVID §6.1)
            "use": jwk.get("use"),
            "kty": jwk.get("kty"),
            "crv": jwk.get("crv", ""),
            "not_after": expiry.get(entry_identity(jwk)),
        }
        for jwk in document["keys"]
    ]
    td = data["td"]
    crumbs = [(td["name"], f"/ui/trust-domains/{td['id']}"), ("trust bundle", None)]
    return render(
        request,
        "bundle.html",
        {
            "user": user,
            "crumbs": crumbs,
            "td": td,
            "rows": rows,
            "sequence": document["spiffe_sequence"],
        },
    )


def _deployment_context(uow: UnitOfWork, request: Request, tdd_id: str) -> dict[str, Any]:
    tdd = object_service.get_deployment(uow, tdd_id)
    td = object_service.get_trust_domain(uow, tdd["trust_domain_id"])
    clusters = object_service.list_clusters(uow, tdd_id)
    servers = deployment_servers_of(uow, request, tdd_id)
    # The effective version each placement should run: what "applied" is measured against.
    targets = config_service.effective_versions(
        uow, tdd_id, {s["cluster_id"] for s in servers} or {None}
    )
    # Under a staged rollout each server has its own: the target config or the stable one.
    staged = rollout_views.server_targets(uow, tdd_id, tdd["trust_domain_id"], servers)
    return {
        "tdd": tdd,
        "td": td,
        "clusters": clusters,
        "servers": servers,
        "targets": targets,
        "server_targets": staged or {},
    }


def _servers_view(data: dict[str, Any]) -> dict[str, Any]:
    """What the servers table shows, shared by the page and its live fragment."""
    names = {c["id"]: c["name"] for c in data["clusters"]}
    rows = []
    for server in data["servers"]:
        target = data["server_targets"].get(server["id"], data["targets"].get(server["cluster_id"]))
        rows.append(
            {
                **server,
                "cluster_name": names.get(server["cluster_id"], server["cluster_id"] or "-"),
                "target_version": target,
                "up_to_date": target is not None and server.get("applied_version") == target,
                "key_manager_type": key_manager_type(server.get("key_manager")),
            }
        )
    placements = sorted(
        (names.get(c_id, c_id) if c_id else "no cluster", version)
        for c_id, version in data["targets"].items()
    )
    applied = sum(1 for r in rows if r["up_to_date"])
    states: dict[str, int] = {}
    for r in rows:
        states[str(r["state"])] = states.get(str(r["state"]), 0) + 1
    return {
        "rows": rows,
        "applied": applied,
        "states": sorted(states.items()),
        "placements": placements,
        "now": utc_now(),
    }


@page
async def deployment(request: Request, user: User) -> Response:
    """A deployment: its clusters, its servers (live), its staged rollout (with the promote and
    abort buttons for admins)."""
    tdd_id = request.path_params["tdd_id"]
    view = fleet_view(app_state(request))

    def read(uow: UnitOfWork) -> dict[str, Any]:
        return {
            **_deployment_context(uow, request, tdd_id),
            "rollout": rollout_views.deployment_view(uow, tdd_id, view),
        }

    data = await call_service(request, read)
    crumbs = deployment_crumbs(data["td"], data["tdd"], last=True)
    return render(
        request,
        "deployment.html",
        {
            "user": user,
            "crumbs": crumbs,
            **data,
            **_servers_view(data),
            "refresh_ms": SERVERS_REFRESH_MS,
        },
    )


@page
async def deployment_servers(request: Request, user: User) -> Response:
    """The servers table's rows alone: what the page's script fetches to update it live."""
    tdd_id = request.path_params["tdd_id"]
    cluster_id = request.query_params.get("cluster")
    data = await call_service(request, lambda uow: _deployment_context(uow, request, tdd_id))
    if cluster_id:
        data["servers"] = [s for s in data["servers"] if s["cluster_id"] == cluster_id]
    return HTMLResponse(fragment("_servers.html", {**data, **_servers_view(data)}))


def _timeline_data(uow: UnitOfWork, request: Request, tdd_id: str) -> dict[str, Any]:
    tdd = object_service.get_deployment(uow, tdd_id)
    td = object_service.get_trust_domain(uow, tdd["trust_domain_id"])
    servers = deployment_servers_of(uow, request, tdd_id)
    keyed = timeline.servers_from_reports(servers)
    offsets = [
        s["clock_offset_seconds"] for s in servers if s.get("clock_offset_seconds") is not None
    ]
    offset = statistics.median(offsets) if offsets else 0.0
    created = [k.created for s in keyed for k in s.keys if k.created is not None]
    now = utc_now()
    since = min(created + [now]) - timedelta(minutes=5)
    changes = config_service.deployment_changes(uow, tdd_id, since, limit=MAX_MARKERS)
    return {
        "tdd": tdd,
        "td": td,
        "servers": keyed,
        "changes": changes,
        "offset": offset,
        "now": now,
    }


def _timeline_svg(data: dict[str, Any]) -> str:
    # Keys carry the servers' own times; when their clocks differ from ours (e.g. the demo's
    # time-lapse) "now" is drawn in their time, so bars and the now line agree.
    offset = data["offset"] if abs(data["offset"]) >= CLOCK_OFFSET_SHOWN_SECONDS else 0.0
    markers = [
        timeline.ConfigMarker(
            datetime.fromisoformat(c["created_at"]),
            f"{SCOPE_LABELS[c['scope']]} {c['scope_id']} version {c['version']} "
            f"({c['action']}) by {c['actor']}",
        )
        for c in data["changes"]
    ]
    return timeline.build_timeline(
        data["servers"], markers, data["now"] + timedelta(seconds=offset)
    )


@page
async def deployment_timeline(request: Request, user: User) -> Response:
    """The key timeline of a deployment's servers."""
    tdd_id = request.path_params["tdd_id"]
    data = await call_service(request, lambda uow: _timeline_data(uow, request, tdd_id))
    crumbs = deployment_crumbs(data["td"], data["tdd"]) + [("key timeline", None)]
    return render(
        request,
        "timeline.html",
        {
            "user": user,
            "crumbs": crumbs,
            "tdd": data["tdd"],
            "svg": _timeline_svg(data),
            "offset": data["offset"],
            "offset_shown": abs(data["offset"]) >= CLOCK_OFFSET_SHOWN_SECONDS,
            "refresh_ms": TIMELINE_REFRESH_MS,
            "managers": timeline.KEY_MANAGER_CLASSES,
            "states": timeline.KEY_STATES,
        },
    )


@page
async def deployment_timeline_svg(request: Request, user: User) -> Response:
    """The timeline's SVG alone (refreshed live by the page's script)."""
    tdd_id = request.path_params["tdd_id"]
    data = await call_service(request, lambda uow: _timeline_data(uow, request, tdd_id))
    return HTMLResponse(_timeline_svg(data))


@page
async def deployment_key(request: Request, user: User) -> Response:
    """One key of the timeline in full (what a click on its bar shows)."""
    tdd_id, kid = request.path_params["tdd_id"], request.path_params["kid"]

    def read(uow: UnitOfWork) -> list[dict[str, Any]]:
        return deployment_servers_of(uow, request, tdd_id)

    for server in timeline.servers_from_reports(await call_service(request, read)):
        for key in server.keys:
            if key.kid == kid:
                lines = timeline.key_details(server, key)
                return HTMLResponse(fragment("_key.html", {"lines": lines}))
    raise NotFound(f"no server of deployment {tdd_id} reports a key {kid!r}")


@page
async def cluster(request: Request, user: User) -> Response:
    """A cluster: its servers and the effective config they receive, section by section."""
    cluster_id = request.path_params["cluster_id"]

    def read(uow: UnitOfWork) -> dict[str, Any]:
        c = object_service.get_cluster(uow, cluster_id)
        data = _deployment_context(uow, request, c["trust_domain_deployment_id"])
        data["servers"] = [s for s in data["servers"] if s["cluster_id"] == cluster_id]
        data["cluster"] = c
        data["effective"] = config_service.get_effective(
            uow, c["trust_domain_deployment_id"], cluster_id
        )
        return data

    data = await call_service(request, read)
    crumbs = deployment_crumbs(data["td"], data["tdd"]) + [(data["cluster"]["name"], None)]
    return render(
        request,
        "cluster.html",
        {
            "user": user,
            "crumbs": crumbs,
            **data,
            **_servers_view(data),
            "scope_labels": SCOPE_LABELS,
            "refresh_ms": SERVERS_REFRESH_MS,
        },
    )


# -- audit --------------------------------------------------------------------------------------


@page
async def audit(request: Request, user: User) -> Response:
    """The audit log, newest first, filtered by scope (and scope id) and actor."""
    q = request.query_params
    scope = q.get("scope") or None
    if scope is not None and scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}")
    scope_id = (q.get("scope_id") or "").strip() or None
    actor = (q.get("actor") or "").strip() or None
    before = query_int(q.get("before"), "before", minimum=1)

    def read(uow: UnitOfWork) -> list[dict[str, Any]]:
        return audit_service.list_events(
            uow, limit=AUDIT_PAGE, before_id=before, scope=scope, scope_id=scope_id, actor=actor
        )

    events = await call_service(request, read)
    filters = {"scope": scope or "", "scope_id": scope_id or "", "actor": actor or ""}
    older = None
    if len(events) == AUDIT_PAGE:
        older = "/ui/audit?" + urllib.parse.urlencode(
            {**{k: v for k, v in filters.items() if v}, "before": events[-1]["id"]}
        )
    return render(
        request,
        "audit.html",
        {
            "user": user,
            "crumbs": [("audit log", None)],
            "events": events,
            "filters": filters,
            "scopes": SCOPES,
            "older": older,
        },
    )
