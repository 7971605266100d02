"""Repository: the only code that turns rows into domain objects and back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from controlplane.domain import CLUSTER, DEPLOYMENT, ScopeConfig, StoredSection
from controlplane.store.models import (
    AuditEventRow,
    BundleKeyRow,
    ClusterRow,
    ConfigHeadRow,
    ConfigSectionRow,
    ConfigVersionRow,
    DeploymentRow,
    JoinTokenRow,
    RolloutRow,
    ServerRow,
    TokenRow,
    TrustDomainRow,
)

# pg_advisory_xact_lock key for config writes (any constant unique to this use in the database).
CONFIG_WRITE_LOCK_KEY = 0x5350_4952_4C01  # "SPIRL" 1


class VersionInfo(NamedTuple):
    """A config version without its sections."""

    scope: str
    scope_id: str
    version: int
    actor: str
    action: str
    created_at: datetime


class Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # -- objects ---------------------------------------------------------------------------

    def add(self, row: Any) -> None:
        self.session.add(row)

    def flush(self) -> None:
        self.session.flush()

    def trust_domain(self, td_id: str) -> TrustDomainRow | None:
        return self.session.get(TrustDomainRow, td_id)

    def trust_domain_by_name(self, name: str) -> TrustDomainRow | None:
        return self.session.scalar(select(TrustDomainRow).where(TrustDomainRow.name == name))

    def trust_domains(self) -> Sequence[TrustDomainRow]:
        return self.session.scalars(select(TrustDomainRow).order_by(TrustDomainRow.name)).all()

    def deployment(self, tdd_id: str) -> DeploymentRow | None:
        return self.session.get(DeploymentRow, tdd_id)

    def deployments(self, trust_domain_id: str | None = None) -> Sequence[DeploymentRow]:
        q = select(DeploymentRow).order_by(DeploymentRow.name)
        if trust_domain_id:
            q = q.where(DeploymentRow.trust_domain_id == trust_domain_id)
        return self.session.scalars(q).all()

    def cluster(self, cluster_id: str) -> ClusterRow | None:
        return self.session.get(ClusterRow, cluster_id)

    def clusters(self, deployment_id: str | None = None) -> Sequence[ClusterRow]:
        q = select(ClusterRow).order_by(ClusterRow.name)
        if deployment_id:
            q = q.where(ClusterRow.deployment_id == deployment_id)
        return self.session.scalars(q).all()

    def delete(self, row: Any) -> None:
        self.session.delete(row)

    # -- config ----------------------------------------------------------------------------

    def config_head(self, scope: str, scope_id: str) -> ConfigHeadRow | None:
        return self.session.get(ConfigHeadRow, (scope, scope_id))

    def current_config(self, scope: str, scope_id: str) -> ScopeConfig:
        head = self.config_head(scope, scope_id)
        if head is None:
            return ScopeConfig(scope=scope, scope_id=scope_id, version=0, revision=0)
        return self._load_version(self.session.get_one(ConfigVersionRow, head.revision))

    def current_configs(self, keys: Sequence[tuple[str, str]]) -> list[ScopeConfig]:
        """Current config of several scopes in two queries (used to rebuild effective config)."""
        if not keys:
            return []
        by_key = self.config_heads(keys)
        versions = self.configs_at(list(by_key.values()))
        result = []
        for scope, scope_id in keys:
            revision = by_key.get((scope, scope_id))
            if revision is None:
                result.append(ScopeConfig(scope=scope, scope_id=scope_id, version=0, revision=0))
            else:
                result.append(versions[revision])
        return result

    def config_heads(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """{(scope, scope_id): revision of its current version} for the scopes that have config."""
        wanted = set(keys)
        if not wanted:
            return {}
        return {
            (h.scope, h.scope_id): h.revision
            for h in self.session.scalars(
                select(ConfigHeadRow).where(ConfigHeadRow.scope_id.in_({k[1] for k in keys}))
            )
            if (h.scope, h.scope_id) in wanted
        }

    def config_version(self, scope: str, scope_id: str, version: int) -> ScopeConfig | None:
        row = self.session.scalar(
            select(ConfigVersionRow).where(
                ConfigVersionRow.scope == scope,
                ConfigVersionRow.scope_id == scope_id,
                ConfigVersionRow.version == version,
            )
        )
        return None if row is None else self._load_version(row)

    def config_history(
        self, scope: str, scope_id: str, *, limit: int, before: int | None
    ) -> list[tuple[ConfigVersionRow, list[str]]]:
        q = (
            select(ConfigVersionRow)
            .where(ConfigVersionRow.scope == scope, ConfigVersionRow.scope_id == scope_id)
            .order_by(ConfigVersionRow.version.desc())
            .limit(limit)
        )
        if before is not None:
            q = q.where(ConfigVersionRow.version < before)
        rows = self.session.scalars(q).all()
        names: dict[int, list[str]] = {r.revision: [] for r in rows}
        if rows:
            for rev, name in self.session.execute(
                select(ConfigSectionRow.revision, ConfigSectionRow.section)
                .where(ConfigSectionRow.revision.in_(names))
                .order_by(ConfigSectionRow.section)
            ):
                names[rev].append(name)
        return [(r, names[r.revision]) for r in rows]

    def insert_config_version(
        self,
        *,
        scope: str,
        scope_id: str,
        version: int,
        expected_head_version: int,
        actor: str,
        action: str,
        at: datetime,
        sections: Sequence[StoredSection],
    ) -> ConfigVersionRow | None:
        """Write a version and move the head, or return None when another writer got there first."""
        self._serialise_config_writes()
        row = ConfigVersionRow(
            scope=scope,
            scope_id=scope_id,
            version=version,
            actor=actor,
            action=action,
            created_at=at,
        )
        self.session.add(row)
        self.session.flush()  # assigns the global revision
        for s in sections:
            self.session.add(
                ConfigSectionRow(
                    revision=row.revision,
                    section=s.name,
                    schema=s.schema,
                    document_json=json.dumps(s.document, sort_keys=True, separators=(",", ":")),
                    canonical_yaml=s.canonical_yaml,
                    digest=s.digest,
                )
            )
        if expected_head_version == 0:
            self.session.add(
                ConfigHeadRow(
                    scope=scope, scope_id=scope_id, version=version, revision=row.revision
                )
            )
            self.session.flush()
        else:
            moved = self.session.execute(
                update(ConfigHeadRow)
                .where(
                    ConfigHeadRow.scope == scope,
                    ConfigHeadRow.scope_id == scope_id,
                    ConfigHeadRow.version == expected_head_version,
                )
                .values(version=version, revision=row.revision)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                return None
        return row

    def _serialise_config_writes(self) -> None:
        """On PostgreSQL, hold one lock from taking a revision number until commit.

        A server's effective version is the largest revision among its layers, so revisions
        must become visible in the order they are numbered: if revision 11 (a cluster) committed
        before revision 10 (its deployment), the server would already be at 11 when 10 arrives
        and would never be sent the deployment's change. A sequence alone gives no such order
        across concurrent transactions; this transaction-scoped advisory lock does (SQLite has
        one writer at a time anyway). Config writes are rare; the lock costs one round trip.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": CONFIG_WRITE_LOCK_KEY}
            )

    def delete_config(self, scope: str, scope_id: str) -> None:
        """Remove every version of a scope (its owner is being deleted)."""
        revisions = select(ConfigVersionRow.revision).where(
            ConfigVersionRow.scope == scope, ConfigVersionRow.scope_id == scope_id
        )
        self.session.execute(
            delete(ConfigHeadRow).where(
                ConfigHeadRow.scope == scope, ConfigHeadRow.scope_id == scope_id
            )
        )
        self.session.execute(
            delete(ConfigSectionRow).where(ConfigSectionRow.revision.in_(revisions))
        )
        self.session.execute(
            delete(ConfigVersionRow).where(
                ConfigVersionRow.scope == scope, ConfigVersionRow.scope_id == scope_id
            )
        )

    def versions_at(self, revisions: Sequence[int]) -> dict[int, tuple[str, str, int]]:
        """{revision: (scope, scope_id, per-scope version)} without sections."""
        if not revisions:
            return {}
        v = ConfigVersionRow
        rows = self.session.execute(
            select(v.revision, v.scope, v.scope_id, v.version).where(v.revision.in_(revisions))
        )
        return {r.revision: (r.scope, r.scope_id, r.version) for r in rows}

    def configs_at(self, revisions: Sequence[int]) -> dict[int, ScopeConfig]:
        """Stored config versions by global revision, with their sections (two queries)."""
        if not revisions:
            return {}
        rows = self.session.scalars(
            select(ConfigVersionRow).where(ConfigVersionRow.revision.in_(revisions))
        ).all()
        sections: dict[int, dict[str, StoredSection]] = {r.revision: {} for r in rows}
        for s in self.session.scalars(
            select(ConfigSectionRow).where(ConfigSectionRow.revision.in_(revisions))
        ):
            sections[s.revision][s.section] = _stored_section(s)
        return {r.revision: _scope_config(r, sections[r.revision]) for r in rows}

    def _load_version(self, row: ConfigVersionRow) -> ScopeConfig:
        sections = {
            s.section: _stored_section(s)
            for s in self.session.scalars(
                select(ConfigSectionRow).where(ConfigSectionRow.revision == row.revision)
            )
        }
        return _scope_config(row, sections)

    # -- tokens, servers, bundle, audit ------------------------------------------------------

    def token_by_hash(self, token_hash: str) -> TokenRow | None:
        return self.session.scalar(select(TokenRow).where(TokenRow.token_hash == token_hash))

    def token(self, token_id: str) -> TokenRow | None:
        return self.session.get(TokenRow, token_id)

    def user_tokens(self) -> Sequence[TokenRow]:
        return self.session.scalars(
            select(TokenRow).where(TokenRow.server_id.is_(None)).order_by(TokenRow.created_at)
        ).all()

    def join_token_by_hash(self, token_hash: str) -> JoinTokenRow | None:
        return self.session.get(JoinTokenRow, token_hash)

    def claim_join_token(self, token_hash: str, now: datetime) -> bool:
        """Mark an unused, unexpired join token used, in one statement: of two registrations
        racing with one token (PostgreSQL runs them at once), exactly one gets True."""
        result = self.session.execute(
            update(JoinTokenRow)
            .where(
                JoinTokenRow.token_hash == token_hash,
                JoinTokenRow.used_at.is_(None),
                JoinTokenRow.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def server(self, server_id: str) -> ServerRow | None:
        return self.session.get(ServerRow, server_id)

    def server_exists(self, server_id: str) -> bool:
        """Asked of the database, not the session: a row loaded earlier may have been deleted
        (deregistered) by another transaction since."""
        return (
            self.session.scalar(select(ServerRow.id).where(ServerRow.id == server_id)) is not None
        )

    def store_server_report(
        self, server_id: str, health: str, status_json: str, contact: datetime
    ) -> bool:
        """Write a server's last report in place; False when the row is gone (a concurrent
        deregistration committed first), instead of the ORM's stale-row error."""
        result = self.session.execute(
            update(ServerRow)
            .where(ServerRow.id == server_id)
            .values(
                health=health,
                status_json=status_json,
                last_contact_at=contact,
                last_report_at=contact,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def servers(self, deployment_id: str) -> Sequence[ServerRow]:
        return self.session.scalars(
            select(ServerRow)
            .where(ServerRow.deployment_id == deployment_id)
            .order_by(ServerRow.name, ServerRow.id)
        ).all()

    def servers_in_scope(self, scope: str, scope_id: str) -> Sequence[ServerRow]:
        """Servers whose effective config includes this scope's config."""
        q = select(ServerRow).order_by(ServerRow.name, ServerRow.id)
        if scope == CLUSTER:
            q = q.where(ServerRow.cluster_id == scope_id)
        elif scope == DEPLOYMENT:
            q = q.where(ServerRow.deployment_id == scope_id)
        else:
            q = q.join(DeploymentRow, DeploymentRow.id == ServerRow.deployment_id).where(
                DeploymentRow.trust_domain_id == scope_id
            )
        return self.session.scalars(q).all()

    def all_servers(self) -> Sequence[ServerRow]:
        return self.session.scalars(select(ServerRow)).all()

    def lock_server(self, server_id: str, *, skip_locked: bool) -> ServerRow | None:
        """The server row, locked until commit (PostgreSQL FOR UPDATE; SQLite serialises
        writers anyway). None when it is gone, or with `skip_locked` when another transaction
        holds it."""
        return self.session.scalar(
            select(ServerRow)
            .where(ServerRow.id == server_id)
            .with_for_update(skip_locked=skip_locked)
            .execution_options(populate_existing=True)
        )

    def silent_server_ids(self, before: datetime, limit: int) -> list[str]:
        """Servers with no contact recorded since `before` (registration counts as contact)."""
        return list(
            self.session.scalars(
                select(ServerRow.id)
                .where(func.coalesce(ServerRow.last_contact_at, ServerRow.registered_at) < before)
                .order_by(ServerRow.id)
                .limit(limit)
            )
        )

    def record_contacts(self, contacts: Sequence[tuple[str, datetime]]) -> None:
        """Move `last_contact_at` forward for many servers in one statement (executemany)."""
        if not contacts:
            return
        table = cast(Table, ServerRow.__table__)
        self.session.execute(
            update(table)
            .where(
                table.c.id == bindparam("b_id"),
                or_(table.c.last_contact_at.is_(None), table.c.last_contact_at < bindparam("b_at")),
            )
            .values(last_contact_at=bindparam("b_at")),
            [{"b_id": server_id, "b_at": at} for server_id, at in contacts],
        )

    def revoke_server_token(self, server_id: str, at: datetime) -> None:
        self.session.execute(
            update(TokenRow)
            .where(TokenRow.server_id == server_id, TokenRow.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    def bump_bundle_version(self, trust_domain_id: str) -> int:
        """Increment a trust domain's bundle version in the database (no lost update between
        concurrent writers) and return the new value."""
        self.session.execute(
            update(TrustDomainRow)
            .where(TrustDomainRow.id == trust_domain_id)
            .values(bundle_version=TrustDomainRow.bundle_version + 1)
        )
        version = self.session.scalar(
            select(TrustDomainRow.bundle_version).where(TrustDomainRow.id == trust_domain_id)
        )
        return int(version or 0)

    def count_servers(self, deployment_id: str) -> int:
        return (
            self.session.scalar(
                select(func.count())
                .select_from(ServerRow)
                .where(ServerRow.deployment_id == deployment_id)
            )
            or 0
        )

    def bundle_keys(self, trust_domain_id: str) -> Sequence[BundleKeyRow]:
        return self.session.scalars(
            select(BundleKeyRow)
            .where(BundleKeyRow.trust_domain_id == trust_domain_id)
            .order_by(BundleKeyRow.use, BundleKeyRow.kid)
        ).all()

    def delete_bundle_key(self, row: BundleKeyRow) -> None:
        self.session.delete(row)

    def lock_trust_domain(self, td_id: str) -> TrustDomainRow | None:
        """The trust domain row, locked until commit (FOR UPDATE on PostgreSQL; SQLite write
        transactions are already exclusive), with fresh values even if loaded before."""
        return self.session.scalar(
            select(TrustDomainRow)
            .where(TrustDomainRow.id == td_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    def bundle_snapshot(
        self, td_id: str
    ) -> tuple[int, list[tuple[str, str, datetime | None, datetime]]] | None:
        """(bundle version, [(kid, jwk_json, not_before, not_after)]) in one statement, so the
        version and the keys come from the same committed state; None if no such trust domain."""
        rows = self.session.execute(
            select(
                TrustDomainRow.bundle_version,
                BundleKeyRow.kid,
                BundleKeyRow.jwk_json,
                BundleKeyRow.not_before,
                BundleKeyRow.not_after,
            )
            .select_from(TrustDomainRow)
            .outerjoin(BundleKeyRow, BundleKeyRow.trust_domain_id == TrustDomainRow.id)
            .where(TrustDomainRow.id == td_id)
            .order_by(BundleKeyRow.kid)
        ).all()
        if not rows:
            return None
        keys = [(r[1], r[2], r[3], r[4]) for r in rows if r[1] is not None]
        return int(rows[0][0]), keys

    def delete_expired_bundle_keys(self, td_id: str, now: datetime) -> int:
        result = self.session.execute(
            delete(BundleKeyRow).where(
                BundleKeyRow.trust_domain_id == td_id, BundleKeyRow.not_after <= now
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def trust_domains_with_expired_keys(self, now: datetime) -> list[str]:
        return list(
            self.session.scalars(
                select(BundleKeyRow.trust_domain_id).where(BundleKeyRow.not_after <= now).distinct()
            )
        )

    def next_bundle_key_expiry(self) -> datetime | None:
        return self.session.scalar(select(func.min(BundleKeyRow.not_after)))

    def audit_events(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        scope: str | None = None,
        scope_id: str | None = None,
        actor: str | None = None,
    ) -> Sequence[AuditEventRow]:
        """Newest first; `scope`/`scope_id` match exactly, `actor` is a substring."""
        q = select(AuditEventRow).order_by(AuditEventRow.id.desc()).limit(limit)
        if before_id is not None:
            q = q.where(AuditEventRow.id < before_id)
        if scope:
            q = q.where(AuditEventRow.scope == scope)
        if scope_id:
            q = q.where(AuditEventRow.scope_id == scope_id)
        if actor:
            q = q.where(AuditEventRow.actor.contains(actor, autoescape=True))
        return self.session.scalars(q).all()

    def config_versions_since(
        self, keys: Sequence[tuple[str, str]], since: datetime, *, limit: int
    ) -> list[VersionInfo]:
        """Versions of the given scopes written at or after `since`, newest first (no sections)."""
        if not keys:
            return []
        wanted = set(keys)
        v = ConfigVersionRow
        rows = self.session.execute(
            select(v.scope, v.scope_id, v.version, v.actor, v.action, v.created_at)
            .where(v.scope_id.in_({k[1] for k in keys}), v.created_at >= since)
            .order_by(v.revision.desc())
            .limit(limit)
        )
        return [VersionInfo(*r) for r in rows if (r.scope, r.scope_id) in wanted]

    # -- staged rollouts -------------------------------------------------------------------------

    def rollout(self, deployment_id: str) -> RolloutRow | None:
        return self.session.get(RolloutRow, deployment_id)

    def rollouts(self) -> Sequence[RolloutRow]:
        return self.session.scalars(select(RolloutRow).order_by(RolloutRow.deployment_id)).all()

    def lock_rollout(self, deployment_id: str, *, skip_locked: bool = False) -> RolloutRow | None:
        """A deployment's rollout row, locked until commit (PostgreSQL FOR UPDATE; SQLite
        serialises writers anyway). None when there is none, or with `skip_locked` when another
        transaction holds it."""
        return self.session.scalar(
            select(RolloutRow)
            .where(RolloutRow.deployment_id == deployment_id)
            .with_for_update(skip_locked=skip_locked)
            .execution_options(populate_existing=True)
        )

    def lock_rollouts_of_trust_domain(self, trust_domain_id: str) -> Sequence[RolloutRow]:
        """The rollout rows of a trust domain's deployments, locked in id order (so that two
        writers never wait on each other's rows in opposite orders)."""
        return self.session.scalars(
            select(RolloutRow)
            .join(DeploymentRow, DeploymentRow.id == RolloutRow.deployment_id)
            .where(DeploymentRow.trust_domain_id == trust_domain_id)
            .order_by(RolloutRow.deployment_id)
            .with_for_update(of=RolloutRow)
            .execution_options(populate_existing=True)
        ).all()

    def rollout_ids(self, statuses: Sequence[str]) -> list[str]:
        return list(
            self.session.scalars(
                select(RolloutRow.deployment_id)
                .where(RolloutRow.status.in_(statuses))
                .order_by(RolloutRow.deployment_id)
            )
        )

    def delete_rollout(self, deployment_id: str) -> None:
        self.session.execute(delete(RolloutRow).where(RolloutRow.deployment_id == deployment_id))

    def join_tokens(self, deployment_id: str, limit: int) -> Sequence[JoinTokenRow]:
        return self.session.scalars(
            select(JoinTokenRow)
            .where(JoinTokenRow.deployment_id == deployment_id)
            .order_by(JoinTokenRow.created_at.desc(), JoinTokenRow.token_hash)
            .limit(limit)
        ).all()

    def join_token_by_hash_prefix(self, deployment_id: str, prefix: str) -> JoinTokenRow | None:
        return self.session.scalars(
            select(JoinTokenRow).where(
                JoinTokenRow.deployment_id == deployment_id,
                JoinTokenRow.token_hash.startswith(prefix, autoescape=True),
            )
        ).first()

    def delete_unused_join_token(self, token_hash: str) -> bool:
        """Delete a join token no server registered with, in one statement: against a
        registration racing with it (claim_join_token), exactly one of the two wins."""
        result = self.session.execute(
            delete(JoinTokenRow)
            .where(JoinTokenRow.token_hash == token_hash, JoinTokenRow.used_at.is_(None))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def delete_join_tokens_expired_before(self, cutoff: datetime) -> int:
        result = self.session.execute(
            delete(JoinTokenRow)
            .where(JoinTokenRow.expires_at < cutoff)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def delete_join_tokens(self, deployment_id: str) -> None:
        self.session.execute(
            delete(JoinTokenRow).where(JoinTokenRow.deployment_id == deployment_id)
        )

    def revoke_deployment_tokens(self, deployment_id: str, at: datetime) -> None:
        self.session.execute(
            update(TokenRow).where(TokenRow.deployment_id == deployment_id).values(revoked_at=at)
        )


def _stored_section(row: ConfigSectionRow) -> StoredSection:
    return StoredSection(
        name=row.section,
        schema=row.schema,
        document=json.loads(row.document_json),
        canonical_yaml=row.canonical_yaml,
        digest=row.digest,
    )


def _scope_config(row: ConfigVersionRow, sections: dict[str, StoredSection]) -> ScopeConfig:
    return ScopeConfig(
        scope=row.scope,
        scope_id=row.scope_id,
        version=row.version,
        revision=row.revision,
        sections=dict(sorted(sections.items())),
        actor=row.actor,
        created_at=row.created_at,
        action=row.action,
    )
