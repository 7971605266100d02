"""Trust domains, deployments and clusters: create, list, get, delete."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.exc import IntegrityError

from controlplane.domain import (
    CLUSTER,
    DEPLOYMENT,
    TRUST_DOMAIN,
    AlreadyExists,
    BadRequest,
    HasChildren,
    NotFound,
    new_id,
    object_name_problem,
    trust_domain_name_problem,
    utc_now,
)
from controlplane.services import audit
from controlplane.store.models import ClusterRow, DeploymentRow, ServerRow, TrustDomainRow
from controlplane.store.unit_of_work import Change, UnitOfWork


def _check_name(name: object, what: str) -> str:
    problem = object_name_problem(name, what)
    if problem:
        raise BadRequest(problem)
    assert isinstance(name, str)
    return name


def trust_domain_dict(row: TrustDomainRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": row.created_at.isoformat()}


def deployment_dict(row: DeploymentRow, td_name: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "trust_domain_id": row.trust_domain_id,
        "trust_domain_name": td_name,
        "created_at": row.created_at.isoformat(),
    }


def cluster_dict(row: ClusterRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "trust_domain_deployment_id": row.deployment_id,
        "created_at": row.created_at.isoformat(),
    }


def get_trust_domain_row(uow: UnitOfWork, td_id: str) -> TrustDomainRow:
    row = uow.repo.trust_domain(td_id)
    if row is None:
        raise NotFound(f"trust domain {td_id} not found")
    return row


def get_deployment_row(uow: UnitOfWork, tdd_id: str) -> DeploymentRow:
    row = uow.repo.deployment(tdd_id)
    if row is None:
        raise NotFound(f"trust domain deployment {tdd_id} not found")
    return row


def deployment_scopes(uow: UnitOfWork, deployment_id: str) -> list[tuple[str, str]]:
    """Every config scope a deployment's servers read: its trust domain, itself, its clusters."""
    tdd = get_deployment_row(uow, deployment_id)
    scopes = [(TRUST_DOMAIN, tdd.trust_domain_id), (DEPLOYMENT, tdd.id)]
    return scopes + [(CLUSTER, c.id) for c in uow.repo.clusters(tdd.id)]


def get_cluster_row(uow: UnitOfWork, cluster_id: str) -> ClusterRow:
    row = uow.repo.cluster(cluster_id)
    if row is None:
        raise NotFound(f"cluster {cluster_id} not found")
    return row


def create_trust_domain(uow: UnitOfWork, name: object, actor: str) -> dict[str, Any]:
    problem = trust_domain_name_problem(name)
    if problem:
        raise BadRequest(problem)
    assert isinstance(name, str)
    if uow.repo.trust_domain_by_name(name):
        raise AlreadyExists(f"trust domain {name!r} already exists")
    row = TrustDomainRow(
        id=new_id("trust_domain"), name=name, created_at=utc_now(), bundle_version=0
    )
    uow.repo.add(row)
    audit.record(
        uow,
        actor=actor,
        action="trust_domain.create",
        scope=TRUST_DOMAIN,
        scope_id=row.id,
        details={"name": name},
    )
    _commit(uow, f"trust domain {name!r} already exists")
    return trust_domain_dict(row)


def list_trust_domains(uow: UnitOfWork) -> list[dict[str, Any]]:
    return [trust_domain_dict(r) for r in uow.repo.trust_domains()]


def get_trust_domain(uow: UnitOfWork, td_id: str) -> dict[str, Any]:
    row = get_trust_domain_row(uow, td_id)
    result = trust_domain_dict(row)
    result["deployments"] = [d.id for d in uow.repo.deployments(td_id)]
    return result


def delete_trust_domain(uow: UnitOfWork, td_id: str, actor: str) -> None:
    row = get_trust_domain_row(uow, td_id)
    children = uow.repo.deployments(td_id)
    if children:
        holders = [{"kind": "deployment", "id": c.id, "name": c.name} for c in children]
        raise HasChildren(
            f"trust domain {td_id} still has {len(children)} deployment(s) "
            f"({_named(holders)}); delete them first",
            holders,
        )
    uow.repo.delete_config(TRUST_DOMAIN, td_id)
    for key in uow.repo.bundle_keys(td_id):
        uow.repo.delete_bundle_key(key)
    uow.repo.delete(row)
    audit.record(uow, actor=actor, action="trust_domain.delete", scope=TRUST_DOMAIN, scope_id=td_id)
    uow.record(Change("topology", td_id, 0))
    uow.commit()


def create_deployment(
    uow: UnitOfWork, name: object, trust_domain_id: object, actor: str
) -> dict[str, Any]:
    name = _check_name(name, "deployment")
    if not isinstance(trust_domain_id, str):
        raise BadRequest("trust_domain_id is required")
    td = get_trust_domain_row(uow, trust_domain_id)
    row = DeploymentRow(
        id=new_id("deployment"), name=name, trust_domain_id=td.id, created_at=utc_now()
    )
    uow.repo.add(row)
    audit.record(
        uow,
        actor=actor,
        action="deployment.create",
        scope=DEPLOYMENT,
        scope_id=row.id,
        details={"name": name, "trust_domain_id": td.id},
    )
    _commit(uow, f"trust domain {td.id} already has a deployment named {name!r}")
    return deployment_dict(row, td.name)


def list_deployments(uow: UnitOfWork, trust_domain_id: str | None = None) -> list[dict[str, Any]]:
    names = {td.id: td.name for td in uow.repo.trust_domains()}
    return [
        deployment_dict(r, names.get(r.trust_domain_id, ""))
        for r in uow.repo.deployments(trust_domain_id)
    ]


def get_deployment(uow: UnitOfWork, tdd_id: str) -> dict[str, Any]:
    row = get_deployment_row(uow, tdd_id)
    result = deployment_dict(row, get_trust_domain_row(uow, row.trust_domain_id).name)
    result["clusters"] = [c.id for c in uow.repo.clusters(tdd_id)]
    result["servers"] = uow.repo.count_servers(tdd_id)
    return result


def delete_deployment(
    uow: UnitOfWork, tdd_id: str, actor: str, details: dict[str, Any] | None = None
) -> None:
    row = get_deployment_row(uow, tdd_id)
    clusters = [{"kind": "cluster", "id": c.id, "name": c.name} for c in uow.repo.clusters(tdd_id)]
    servers = _server_holders(uow.repo.servers(tdd_id))
    if clusters:
        raise HasChildren(
            f"trust domain deployment {tdd_id} still has {len(clusters)} cluster(s) "
            f"({_named(clusters)}); delete them first (a forced cluster delete also "
            "deregisters the cluster's servers)",
            clusters + servers,
        )
    if servers:
        raise HasChildren(
            f"trust domain deployment {tdd_id} still has {len(servers)} registered server(s) "
            f"({_named(servers)}); {DEREGISTER_HINT}",
            servers,
        )
    uow.repo.delete_config(DEPLOYMENT, tdd_id)
    uow.repo.delete_rollout(tdd_id)
    uow.repo.delete_join_tokens(tdd_id)
    uow.repo.revoke_deployment_tokens(tdd_id, utc_now())
    uow.repo.delete(row)
    audit.record(
        uow,
        actor=actor,
        action="deployment.delete",
        scope=DEPLOYMENT,
        scope_id=tdd_id,
        details=details,
    )
    uow.record(Change("topology", tdd_id, 0))
    uow.commit()


def create_cluster(
    uow: UnitOfWork, name: object, deployment_id: object, actor: str
) -> dict[str, Any]:
    name = _check_name(name, "cluster")
    if not isinstance(deployment_id, str):
        raise BadRequest("trust_domain_deployment_id is required")
    tdd = get_deployment_row(uow, deployment_id)
    row = ClusterRow(id=new_id("cluster"), name=name, deployment_id=tdd.id, created_at=utc_now())
    uow.repo.add(row)
    audit.record(
        uow,
        actor=actor,
        action="cluster.create",
        scope=CLUSTER,
        scope_id=row.id,
        details={"name": name, "trust_domain_deployment_id": tdd.id},
    )
    _commit(uow, f"deployment {tdd.id} already has a cluster named {name!r}")
    return cluster_dict(row)


def list_clusters(uow: UnitOfWork, deployment_id: str | None = None) -> list[dict[str, Any]]:
    return [cluster_dict(r) for r in uow.repo.clusters(deployment_id)]


def get_cluster(uow: UnitOfWork, cluster_id: str) -> dict[str, Any]:
    return cluster_dict(get_cluster_row(uow, cluster_id))


def delete_cluster(
    uow: UnitOfWork, cluster_id: str, actor: str, details: dict[str, Any] | None = None
) -> None:
    row = get_cluster_row(uow, cluster_id)
    servers = _server_holders(uow.repo.servers_in_scope(CLUSTER, cluster_id))
    if servers:
        raise HasChildren(
            f"cluster {cluster_id} still has {len(servers)} registered server(s) "
            f"({_named(servers)}); {DEREGISTER_HINT}",
            servers,
        )
    uow.repo.delete_config(CLUSTER, cluster_id)
    uow.repo.delete(row)
    audit.record(
        uow,
        actor=actor,
        action="cluster.delete",
        scope=CLUSTER,
        scope_id=cluster_id,
        details=details,
    )
    uow.record(Change("topology", cluster_id, 0))
    uow.commit()


DEREGISTER_HINT = (
    "deregister them first (DELETE /v1/servers/{id}), or delete with force=true to deregister "
    "them as part of the delete; unreachable servers are also deregistered automatically after "
    "the retention period"
)


def _server_holders(rows: Iterable[ServerRow]) -> list[dict[str, Any]]:
    return [
        {
            "kind": "server",
            "id": s.id,
            "name": s.name,
            "cluster_id": s.cluster_id,
            "last_contact_at": (s.last_contact_at or s.registered_at).isoformat(),
        }
        for s in rows
    ]


def _named(holders: list[dict[str, Any]], limit: int = 5) -> str:
    shown = ", ".join(f"{h['id']} {h['name']}" for h in holders[:limit])
    return shown + (f" and {len(holders) - limit} more" if len(holders) > limit else "")


def scope_owner_exists(uow: UnitOfWork, scope: str, scope_id: str) -> None:
    """Raise NotFound unless the object a config scope belongs to exists."""
    if scope == TRUST_DOMAIN:
        get_trust_domain_row(uow, scope_id)
    elif scope == DEPLOYMENT:
        get_deployment_row(uow, scope_id)
    else:
        get_cluster_row(uow, scope_id)


def scope_trust_domain_name(uow: UnitOfWork, scope: str, scope_id: str) -> str:
    """The name of the trust domain a config scope belongs to (NotFound when its object is gone)."""
    if scope == TRUST_DOMAIN:
        return get_trust_domain_row(uow, scope_id).name
    if scope == DEPLOYMENT:
        deployment = get_deployment_row(uow, scope_id)
    else:
        deployment = get_deployment_row(uow, get_cluster_row(uow, scope_id).deployment_id)
    return get_trust_domain_row(uow, deployment.trust_domain_id).name


def _commit(uow: UnitOfWork, duplicate_message: str) -> None:
    try:
        uow.commit()
    except IntegrityError as exc:
        uow.rollback()
        raise AlreadyExists(duplicate_message) from exc
