"""Server lifecycle and rollouts: server states, deregistration (by hand, by a forced delete, or
after the retention period), server details, and how far a config version has reached.

`seen` arguments map server ids to long-poll contacts this process saw and has not written yet
(see `delivery.contacts.ContactLog`); a state is always computed from the database's contact
time and those, so every replica agrees within one flush interval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane import fleet
from controlplane.domain import (
    CLUSTER,
    DEPLOYMENT,
    TRUST_DOMAIN,
    NotFound,
    ScopeConfig,
    StoredSection,
    check_scope,
    utc_now,
)
from controlplane.services import audit
from controlplane.services import bundles as bundle_service
from controlplane.services import objects as object_service
from controlplane.services.servers import server_dict
from controlplane.store.models import ServerRow
from controlplane.store.unit_of_work import Change, UnitOfWork

log = logging.getLogger(__name__)

RETENTION_ACTOR = "system:retention"
SWEEP_BATCH = 100


def contact_of(row: ServerRow) -> fleet.Contact:
    return fleet.Contact(
        registered_at=row.registered_at,
        last_contact_at=row.last_contact_at,
        last_report_at=row.last_report_at,
        health=row.health,
    )


def server_view(
    row: ServerRow, policy: fleet.FleetPolicy, seen: Mapping[str, datetime], now: datetime
) -> dict[str, Any]:
    """A server as the servers table shows it: its last report, and the state we believe."""
    seen_here = seen.get(row.id)
    contact = contact_of(row)
    view = server_dict(row, seen_here)
    view["state"] = fleet.server_state(contact, now, policy.stale_after, seen_here)
    view["last_contact_seconds_ago"] = round((now - contact.last_seen(seen_here)).total_seconds())
    return view


def list_servers(
    uow: UnitOfWork,
    deployment_id: str,
    policy: fleet.FleetPolicy,
    seen: Mapping[str, datetime],
) -> list[dict[str, Any]]:
    object_service.get_deployment_row(uow, deployment_id)
    now = utc_now()
    return [server_view(row, policy, seen, now) for row in uow.repo.servers(deployment_id)]


def server_info(
    uow: UnitOfWork, server_id: str, policy: fleet.FleetPolicy, seen: Mapping[str, datetime]
) -> dict[str, Any]:
    """One server in full: its whole error, and each key it reported with whether the trust
    bundle publishes it."""
    row = _server_row(uow, server_id)
    view = server_view(row, policy, seen, utc_now())
    tdd = object_service.get_deployment_row(uow, row.deployment_id)
    published = {key.kid for key in uow.repo.bundle_keys(tdd.trust_domain_id)}
    view["trust_domain_id"] = tdd.trust_domain_id
    view["keys"] = [
        {**key, "in_bundle": key.get("kid") in published}
        for key in view["keys"]
        if isinstance(key, dict)
    ]
    return view


def count_by_state(
    uow: UnitOfWork, policy: fleet.FleetPolicy, seen: Mapping[str, datetime]
) -> dict[str, int]:
    now = utc_now()
    counts = dict.fromkeys(fleet.SERVER_STATES, 0)
    for row in uow.repo.all_servers():
        counts[fleet.server_state(contact_of(row), now, policy.stale_after, seen.get(row.id))] += 1
    return counts


# -- deregistration ----------------------------------------------------------------------------


def deregister_server(
    uow: UnitOfWork, server_id: str, actor: str, *, reason: str = "requested", commit: bool = True
) -> dict[str, Any]:
    """Remove a server: its credential stops working at once (every replica hears of it), its
    keys leave the trust bundle unless another server still publishes them, and it is audited."""
    row = uow.repo.lock_server(server_id, skip_locked=False)
    if row is None:
        raise NotFound(f"server {server_id} not found")
    return _deregister(uow, row, actor, reason, commit=commit)


def _deregister(
    uow: UnitOfWork, row: ServerRow, actor: str, reason: str, *, commit: bool
) -> dict[str, Any]:
    now = utc_now()
    tdd = object_service.get_deployment_row(uow, row.deployment_id)
    uow.repo.revoke_server_token(row.id, now)
    withdrawn, kept = _withdraw_keys(uow, tdd.trust_domain_id, row)
    uow.repo.delete(row)
    audit.record(
        uow,
        actor=actor,
        action="server.deregister",
        scope=DEPLOYMENT,
        scope_id=tdd.id,
        details={
            "server_id": row.id,
            "name": row.name,
            "cluster_id": row.cluster_id,
            "reason": reason,
            "last_contact_at": contact_of(row).last_seen().isoformat(),
            "withdrawn_keys": withdrawn,
            "kept_keys": kept,
        },
    )
    uow.record(Change("server", row.id, 0))
    if commit:
        uow.commit()
    log.info(
        "server deregistered",
        extra={"server_id": row.id, "reason": reason, "withdrawn_keys": len(withdrawn)},
    )
    return {
        "id": row.id,
        "name": row.name,
        "trust_domain_deployment_id": tdd.id,
        "cluster_id": row.cluster_id,
        "withdrawn_keys": withdrawn,
        "kept_keys": kept,
    }


def _reported_kids(row: ServerRow) -> set[str]:
    keys = json.loads(row.status_json or "{}").get("keys") or []
    return {k["kid"] for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)}


def _withdraw_keys(uow: UnitOfWork, td_id: str, leaving: ServerRow) -> tuple[list[str], list[str]]:
    """Drop the leaving server's keys from the bundle, except those another server of the trust
    domain still reports (shared keys). Returns (withdrawn kids, kept kids)."""
    bundle_service.lock(uow, td_id)  # first, as every change of the stored keys does
    publishers: dict[str, str] = {}
    for other in uow.repo.servers_in_scope(TRUST_DOMAIN, td_id):
        if other.id != leaving.id:
            for kid in _reported_kids(other):
                publishers.setdefault(kid, other.id)
    own = _reported_kids(leaving)
    withdrawn, kept = [], []
    for key in uow.repo.bundle_keys(td_id):
        if key.server_id != leaving.id and key.kid not in own:
            continue
        if key.kid in publishers:
            key.server_id = publishers[key.kid]
            kept.append(key.kid)
        else:
            uow.repo.delete_bundle_key(key)
            withdrawn.append(key.kid)
    if withdrawn:
        uow.session.flush()
        bundle_service.bump(uow, td_id)
    return sorted(withdrawn), sorted(kept)


def deregister_silent_servers(
    uow_factory: Callable[[], UnitOfWork],
    policy: fleet.FleetPolicy,
    seen: Mapping[str, datetime],
    now: datetime | None = None,
) -> list[str]:
    """Deregister servers silent for longer than the retention period; returns their ids.

    Safe with several replicas at once: each candidate is re-checked under a row lock taken with
    SKIP LOCKED, so two replicas never deregister (or wait on) the same server.
    """
    if policy.retention is None:
        return []
    now = now or utc_now()
    cutoff = now - policy.retention
    with uow_factory() as uow:
        candidates = uow.repo.silent_server_ids(cutoff, SWEEP_BATCH)
    removed = []
    for server_id in candidates:
        with uow_factory() as uow:
            row = uow.repo.lock_server(server_id, skip_locked=True)
            # A contact this replica saw but has not written yet counts (the write is on its way).
            heard = seen.get(server_id)
            if row is None or not fleet.is_past_retention(
                contact_of(row), now, policy.retention, heard
            ):
                continue
            silent_for = now - contact_of(row).last_seen()
            _deregister(
                uow,
                row,
                RETENTION_ACTOR,
                f"unreachable for {int(silent_for.total_seconds())}s, longer than the retention "
                f"period of {int(policy.retention.total_seconds())}s",
                commit=True,
            )
            removed.append(server_id)
    return removed


def record_contacts(uow: UnitOfWork, contacts: list[tuple[str, datetime]]) -> None:
    """Write long-poll contact times (one batched statement; gone servers are skipped)."""
    uow.repo.record_contacts(contacts)
    uow.commit()


# -- deletes that servers hold -------------------------------------------------------------------


def delete_cluster(uow: UnitOfWork, cluster_id: str, actor: str, force: bool = False) -> None:
    """Delete a cluster; with `force`, deregister its servers first (each audited)."""
    removed = []
    if force:
        object_service.get_cluster_row(uow, cluster_id)
        for row in uow.repo.servers_in_scope(CLUSTER, cluster_id):
            reason = f"forced delete of cluster {cluster_id}"
            removed.append(_deregister(uow, row, actor, reason, commit=False)["id"])
    object_service.delete_cluster(uow, cluster_id, actor, _forced(force, removed))


def delete_deployment(uow: UnitOfWork, tdd_id: str, actor: str, force: bool = False) -> None:
    """Delete a deployment; with `force`, deregister its servers first. Clusters still refuse
    it: deleting them is a decision of its own (`delete_cluster`, which may be forced too)."""
    removed = []
    if force and not uow.repo.clusters(object_service.get_deployment_row(uow, tdd_id).id):
        for row in uow.repo.servers(tdd_id):
            reason = f"forced delete of trust domain deployment {tdd_id}"
            removed.append(_deregister(uow, row, actor, reason, commit=False)["id"])
    object_service.delete_deployment(uow, tdd_id, actor, _forced(force, removed))


def _forced(force: bool, removed: list[str]) -> dict[str, Any] | None:
    return {"force": True, "deregistered_servers": removed} if force else None


# -- rollouts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRollout:
    """One version's rollout: the API body (`status`), the revision servers count as applied
    (`sent_revision`) and each targeted server's view with its deployment, for breakdowns."""

    status: dict[str, Any]
    sent_revision: int
    servers: list[tuple[str, fleet.ServerRollout]]


def rollout_status(
    uow: UnitOfWork,
    scope: str,
    scope_id: str,
    version: int | None,
    policy: fleet.FleetPolicy,
    seen: Mapping[str, datetime],
    now: datetime,
) -> VersionRollout:
    """How far one stored version of a scope has reached the servers it targets."""
    check_scope(scope)
    object_service.scope_owner_exists(uow, scope, scope_id)
    head = uow.repo.config_head(scope, scope_id)
    current = head.version if head else 0
    if version is None:
        version = current
    if version == 0:
        raise NotFound(f"{scope} {scope_id} has no config version yet")
    if version > current:
        raise NotFound(f"{scope} {scope_id} has no version {version} (current is {current})")
    config = uow.repo.config_version(scope, scope_id, version)
    if config is None:
        raise NotFound(f"{scope} {scope_id} has no version {version}")
    sent = sent_revision(uow, config)
    servers = [
        (row.deployment_id, rollout_view(row, policy, seen, now))
        for row in uow.repo.servers_in_scope(scope, scope_id)
    ]
    progress = fleet.rollout_progress(sent, (view for _, view in servers))
    status = {
        "scope": scope,
        "id": scope_id,
        "version": version,
        "current_version": current,
        "revision": config.revision,
        "phase": progress.phase,
        "done": progress.phase == fleet.PHASE_DONE,
        "counts": {"targeted": progress.targeted, **progress.counts},
        "servers": [
            {
                "id": view.server_id,
                "name": view.name,
                "cluster_id": view.cluster_id,
                "progress": state,
                "state": view.state,
                "desired_version": view.desired_version,
                "applied_version": view.applied_version,
                "error": view.error,
                "last_contact_at": view.last_contact_at.isoformat(),
                "last_contact_seconds_ago": round((now - view.last_contact_at).total_seconds()),
            }
            for view, state in progress.servers
        ],
        "stale_after_seconds": policy.stale_after.total_seconds(),
    }
    return VersionRollout(status, sent, servers)


def sent_digests(sections: Mapping[str, StoredSection]) -> dict[str, str]:
    """The digests of the sections servers are sent (the control plane's own are not)."""
    from controlplane.documents.registry import control_plane_sections

    own = control_plane_sections()
    return {name: s.digest for name, s in sections.items() if name not in own}


def sent_revision(uow: UnitOfWork, config: ScopeConfig) -> int:
    """The revision that stored what servers are sent of this stored version of a scope: its
    own, or, when the versions up to it changed only sections servers are never sent (a
    `Rollout` policy), that of the earliest version with the same content (0: none, e.g. a scope
    whose only section is its policy). A server that applied it applied this version: a write
    that changes nothing servers receive is done where the content it kept is."""
    content, revision = sent_digests(config.sections), config.revision
    for earlier in range(config.version - 1, -1, -1):
        before = (
            uow.repo.config_version(config.scope, config.scope_id, earlier) if earlier else None
        )
        if (sent_digests(before.sections) if before else {}) != content:
            break
        revision = before.revision if before else 0
    return revision


def rollout_view(
    row: ServerRow, policy: fleet.FleetPolicy, seen: Mapping[str, datetime], now: datetime
) -> fleet.ServerRollout:
    status = json.loads(row.status_json or "{}")
    contact, seen_here = contact_of(row), seen.get(row.id)
    error = status.get("error")
    return fleet.ServerRollout(
        server_id=row.id,
        name=row.name,
        cluster_id=row.cluster_id,
        state=fleet.server_state(contact, now, policy.stale_after, seen_here),
        last_contact_at=contact.last_seen(seen_here),
        desired_version=_version(status.get("desired_version")),
        applied_version=_version(status.get("applied_version")),
        refused_version=_version(status.get("refused_version")),
        error=error if isinstance(error, str) else None,
    )


def _version(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _server_row(uow: UnitOfWork, server_id: str) -> ServerRow:
    row = uow.repo.server(server_id)
    if row is None:
        raise NotFound(f"server {server_id} not found")
    return row
