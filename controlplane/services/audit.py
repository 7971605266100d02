"""The audit log: every mutation, with actor and versions, never a secret."""

from __future__ import annotations

import json
import logging
from typing import Any

from controlplane.domain import check_scope, utc_now
from controlplane.store.models import AuditEventRow
from controlplane.store.unit_of_work import UnitOfWork

log = logging.getLogger("controlplane.audit")


def record(
    uow: UnitOfWork,
    *,
    actor: str,
    action: str,
    scope: str | None = None,
    scope_id: str | None = None,
    old_version: int | None = None,
    new_version: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    uow.repo.add(
        AuditEventRow(
            at=utc_now(),
            actor=actor,
            action=action,
            scope=scope,
            scope_id=scope_id,
            old_version=old_version,
            new_version=new_version,
            details_json=json.dumps(details or {}, sort_keys=True),
        )
    )
    log.info(
        "audit %s",
        action,
        extra={
            "actor": actor,
            "action": action,
            "scope": scope,
            "scope_id": scope_id,
            "old_version": old_version,
            "new_version": new_version,
        },
    )


def list_events(
    uow: UnitOfWork,
    *,
    limit: int = 50,
    before_id: int | None = None,
    scope: str | None = None,
    scope_id: str | None = None,
    actor: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first. Filters: `scope` (a scope name) and `scope_id` exactly, `actor` as a substring."""
    if scope:
        check_scope(scope)
    events = uow.repo.audit_events(
        limit=limit, before_id=before_id, scope=scope, scope_id=scope_id, actor=actor
    )
    return [
        {
            "id": e.id,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "scope": e.scope,
            "scope_id": e.scope_id,
            "old_version": e.old_version,
            "new_version": e.new_version,
            "details": json.loads(e.details_json),
        }
        for e in events
    ]
