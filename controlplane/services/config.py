"""Config use cases: set (validate, prune, optimistic concurrency, dry run), read, history, diff, rollback."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from controlplane.domain import (
    CLUSTER,
    DEPLOYMENT,
    TRUST_DOMAIN,
    BadRequest,
    NotFound,
    ScopeConfig,
    StoredSection,
    Unavailable,
    VersionConflict,
    check_scope,
    effective_config,
    effective_version,
    utc_now,
)
from controlplane.services import audit
from controlplane.services import rollouts as rollout_service
from controlplane.services.objects import (
    deployment_scopes,
    get_cluster_row,
    get_deployment_row,
    scope_owner_exists,
    scope_trust_domain_name,
)
from controlplane.services.rollouts import FleetView
from controlplane.store.unit_of_work import Change, UnitOfWork


@dataclass(frozen=True)
class WriteResult:
    version: int
    previous_version: int
    changed: bool
    validate_only: bool
    sections: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous_version": self.previous_version,
            "changed": self.changed,
            "validate_only": self.validate_only,
            "sections": self.sections,
        }


def parse_upload(yaml_text: str | bytes, scope: str) -> list[StoredSection]:
    """Validate an upload (pure: raises the documents layer's errors, touches no database)."""
    from controlplane.documents import parse_sections

    return [
        StoredSection(
            name=s.name,
            schema=s.schema,
            document=s.document,
            canonical_yaml=s.canonical_yaml,
            digest=s.digest,
        )
        for s in parse_sections(yaml_text, scope=scope)
    ]


def check_for_trust_domain(uploaded: list[StoredSection], trust_domain: str) -> None:
    """The checks parse_upload deferred because they depend on the scope's trust domain (the
    shared-keys key names and regex). Issue `document` indexes count the uploaded sections."""
    from controlplane.documents import DocumentValidationError, validate_document

    issues = [
        issue
        for index, section in enumerate(uploaded)
        for issue in validate_document(dict(section.document), index, trust_domain=trust_domain)
    ]
    if issues:
        raise DocumentValidationError(issues)


def set_config(
    uow: UnitOfWork,
    scope: str,
    scope_id: str,
    uploaded: list[StoredSection],
    *,
    actor: str,
    prune: bool = False,
    expected_version: int | None = None,
    validate_only: bool = False,
    fleet: FleetView | None = None,
) -> WriteResult:
    def change(current: ScopeConfig) -> dict[str, StoredSection]:
        check_for_trust_domain(uploaded, scope_trust_domain_name(uow, scope, scope_id))
        new_sections = {} if prune else dict(current.sections)
        new_sections.update({s.name: s for s in uploaded})
        return new_sections

    return _write(
        uow,
        scope,
        scope_id,
        change,
        expected_version=expected_version,
        actor=actor,
        action="set",
        validate_only=validate_only,
        details={"prune": prune, "sections": sorted(s.name for s in uploaded)},
        fleet=fleet,
    )


def delete_section(
    uow: UnitOfWork,
    scope: str,
    scope_id: str,
    section: str,
    *,
    actor: str,
    expected_version: int | None = None,
    fleet: FleetView | None = None,
) -> WriteResult:
    def change(current: ScopeConfig) -> dict[str, StoredSection]:
        if section not in current.sections:
            have = ", ".join(current.sections) or "none"
            raise NotFound(f"{scope} {scope_id} has no section {section!r} (sections: {have})")
        return {k: v for k, v in current.sections.items() if k != section}

    return _write(
        uow,
        scope,
        scope_id,
        change,
        expected_version=expected_version,
        actor=actor,
        action="delete-section",
        details={"section": section},
        fleet=fleet,
    )


def rollback(
    uow: UnitOfWork,
    scope: str,
    scope_id: str,
    to_version: int,
    *,
    actor: str,
    expected_version: int | None = None,
    fleet: FleetView | None = None,
) -> WriteResult:
    def change(current: ScopeConfig) -> dict[str, StoredSection]:
        target = uow.repo.config_version(scope, scope_id, to_version)
        if target is None:
            raise NotFound(
                f"{scope} {scope_id} has no version {to_version} (current is {current.version})"
            )
        return dict(target.sections)

    return _write(
        uow,
        scope,
        scope_id,
        change,
        expected_version=expected_version,
        actor=actor,
        action="rollback",
        details={"to_version": to_version},
        fleet=fleet,
    )


def get_config(
    uow: UnitOfWork, scope: str, scope_id: str, version: int | None = None
) -> dict[str, Any]:
    check_scope(scope)
    scope_owner_exists(uow, scope, scope_id)
    if version is None:
        config = uow.repo.current_config(scope, scope_id)
    else:
        found = uow.repo.config_version(scope, scope_id, version)
        if found is None:
            raise NotFound(f"{scope} {scope_id} has no version {version}")
        config = found
    return config_dict(config)


def history(
    uow: UnitOfWork, scope: str, scope_id: str, *, limit: int = 20, before: int | None = None
) -> dict[str, Any]:
    check_scope(scope)
    scope_owner_exists(uow, scope, scope_id)
    if not 1 <= limit <= 200:
        raise BadRequest("limit must be between 1 and 200")
    rows = uow.repo.config_history(scope, scope_id, limit=limit, before=before)
    items = [
        {
            "version": r.version,
            "actor": r.actor,
            "created_at": r.created_at.isoformat(),
            "action": r.action,
            "sections": names,
        }
        for r, names in rows
    ]
    oldest = rows[-1][0].version if rows else 0
    next_before = oldest if len(rows) == limit and oldest > 1 else None
    return {"items": items, "next_before": next_before}


def diff(
    uow: UnitOfWork, scope: str, scope_id: str, from_version: int, to_version: int
) -> dict[str, Any]:
    from controlplane.documents import diff_sections

    check_scope(scope)
    scope_owner_exists(uow, scope, scope_id)

    def load(version: int) -> Mapping[str, StoredSection]:
        if version == 0:
            return {}
        found = uow.repo.config_version(scope, scope_id, version)
        if found is None:
            raise NotFound(f"{scope} {scope_id} has no version {version}")
        return found.sections

    changes = diff_sections(load(from_version), load(to_version))
    return {
        "from": from_version,
        "to": to_version,
        "sections": [
            {
                "section": d.section,
                "change": d.change,
                "old_yaml": d.old_yaml,
                "new_yaml": d.new_yaml,
            }
            for d in changes
        ],
    }


def layers_for(
    uow: UnitOfWork, deployment_id: str, cluster_id: str | None
) -> list[tuple[str, str]]:
    """The scopes whose config applies to servers of (deployment, cluster), least specific first."""
    tdd = get_deployment_row(uow, deployment_id)
    keys = [(TRUST_DOMAIN, tdd.trust_domain_id), (DEPLOYMENT, tdd.id)]
    if cluster_id:
        cluster = get_cluster_row(uow, cluster_id)
        if cluster.deployment_id != tdd.id:
            raise BadRequest(f"cluster {cluster_id} does not belong to deployment {deployment_id}")
        keys.append((CLUSTER, cluster.id))
    return keys


def deployment_changes(
    uow: UnitOfWork, deployment_id: str, since: datetime, *, limit: int = 1000
) -> list[dict[str, Any]]:
    """Config versions written since `since` at any scope the deployment's servers read (its
    trust domain, itself, its clusters), newest first."""
    keys = deployment_scopes(uow, deployment_id)
    return [
        {
            "scope": r.scope,
            "scope_id": r.scope_id,
            "version": r.version,
            "actor": r.actor,
            "action": r.action,
            "created_at": r.created_at.isoformat(),
        }
        for r in uow.repo.config_versions_since(keys, since, limit=limit)
    ]


def effective_versions(
    uow: UnitOfWork, deployment_id: str, cluster_ids: Iterable[str | None]
) -> dict[str | None, int]:
    """{cluster id (None: no cluster): the effective version its servers should run}, from the
    scopes' head rows alone (no section is loaded)."""
    placements = {c: layers_for(uow, deployment_id, c) for c in set(cluster_ids)}
    heads = uow.repo.config_heads([key for layers in placements.values() for key in layers])
    return {
        c: effective_version(heads.get(key, 0) for key in layers)
        for c, layers in placements.items()
    }


def get_effective(uow: UnitOfWork, deployment_id: str, cluster_id: str | None) -> dict[str, Any]:
    layers = uow.repo.current_configs(layers_for(uow, deployment_id, cluster_id))
    return effective_dict(layers)


def effective_dict(layers: list[ScopeConfig]) -> dict[str, Any]:
    """The effective config as servers receive it: sections only the control plane reads
    (`Rollout`) are left out."""
    from controlplane.documents.registry import control_plane_sections

    effective = effective_config(layers)
    own = control_plane_sections()
    return {
        "version": effective.version,
        "sections": {
            name: {
                "scope": e.scope,
                "scope_id": e.scope_id,
                "scope_version": e.scope_version,
                "schema": e.section.schema,
                "yaml": e.section.canonical_yaml,
                "document": e.section.document,
            }
            for name, e in effective.sections.items()
            if name not in own
        },
    }


def config_dict(config: ScopeConfig) -> dict[str, Any]:
    return {
        "scope": config.scope,
        "id": config.scope_id,
        "version": config.version,
        "updated_at": config.created_at.isoformat() if config.created_at else None,
        "actor": config.actor,
        "sections": {
            name: {"schema": s.schema, "yaml": s.canonical_yaml, "document": s.document}
            for name, s in config.sections.items()
        },
    }


def _check_expected(current: ScopeConfig, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != current.version:
        raise VersionConflict(current.scope, current.scope_id, expected_version, current.version)


# A blind write (no expected_version) that loses the compare-and-set to another writer is
# built again on the version that won. Every round has a winner, so N concurrent writers need
# at most N rounds; the cap only stops a pathological storm (answered 503, retry later).
MAX_WRITE_ROUNDS = 64


def _write(
    uow: UnitOfWork,
    scope: str,
    scope_id: str,
    change: Callable[[ScopeConfig], Mapping[str, StoredSection]],
    *,
    expected_version: int | None,
    actor: str,
    action: str,
    details: dict[str, Any],
    validate_only: bool = False,
    fleet: FleetView | None = None,
) -> WriteResult:
    """Write `change(current)` as the scope's next version, with optimistic concurrency.

    With `expected_version`, any other version (at read time or at the compare-and-set) is a
    409 naming the version the client sent. Without it, the write never fails because of
    another writer: a lost compare-and-set is retried on the new current version. A write that
    reaches a deployment with a `Rollout` policy starts a staged rollout there (rollouts.py).
    """
    check_scope(scope)
    scope_owner_exists(uow, scope, scope_id)
    for _ in range(MAX_WRITE_ROUNDS):
        current = uow.repo.current_config(scope, scope_id)
        _check_expected(current, expected_version)
        new_sections = change(current)
        names = sorted(new_sections)
        unchanged = {k: s.digest for k, s in new_sections.items()} == {
            k: s.digest for k, s in current.sections.items()
        }
        rollout_service.check_policy(uow, scope, scope_id, current.sections, new_sections)
        if validate_only or unchanged:
            return WriteResult(current.version, current.version, False, validate_only, names)
        new_version = current.version + 1
        try:
            row = uow.repo.insert_config_version(
                scope=scope,
                scope_id=scope_id,
                version=new_version,
                expected_head_version=current.version,
                actor=actor,
                action=action,
                at=utc_now(),
                sections=[new_sections[k] for k in names],
            )
        except IntegrityError:
            row = None
        if row is None:  # another writer moved the head between our read and our write
            uow.rollback()
            if expected_version is not None:
                latest = uow.repo.current_config(scope, scope_id)
                raise VersionConflict(scope, scope_id, expected_version, latest.version)
            continue
        audit.record(
            uow,
            actor=actor,
            action=f"config.{action}",
            scope=scope,
            scope_id=scope_id,
            old_version=current.version,
            new_version=new_version,
            details=details,
        )
        uow.record(Change("config", f"{scope}/{scope_id}", row.revision))
        rollout_service.on_config_write(uow, scope, scope_id, current, new_sections, actor, fleet)
        uow.commit()
        return WriteResult(new_version, current.version, True, False, names)
    raise Unavailable(
        f"{scope} {scope_id} is being written by many clients at once; nothing was changed, "
        "retry later"
    )
