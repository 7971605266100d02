"""SQLAlchemy 2 table mappings. The schema itself is created and changed only by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names so migrations are portable between SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TrustDomainRow(Base):
    __tablename__ = "trust_domains"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The bundle's spiffe_sequence: bumped in the transaction that changes its keys (the row is
    # locked first, so concurrent writers on PostgreSQL replicas never reuse a number).
    bundle_version: Mapped[int] = mapped_column(Integer, default=0)


class DeploymentRow(Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("trust_domain_id", "name", name="uq_deployments_td_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    trust_domain_id: Mapped[str] = mapped_column(ForeignKey("trust_domains.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ClusterRow(Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("deployment_id", "name", name="uq_clusters_tdd_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConfigVersionRow(Base):
    """An immutable snapshot of all sections of one scope. `revision` is global and monotonic."""

    __tablename__ = "config_versions"
    __table_args__ = (
        UniqueConstraint("scope", "scope_id", "version", name="uq_config_versions_scope_version"),
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(32))
    scope_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConfigSectionRow(Base):
    __tablename__ = "config_sections"
    revision: Mapped[int] = mapped_column(ForeignKey("config_versions.revision"), primary_key=True)
    section: Mapped[str] = mapped_column(String(64), primary_key=True)
    schema: Mapped[str] = mapped_column(String(16))
    document_json: Mapped[str] = mapped_column(Text)
    canonical_yaml: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(80))


class ConfigHeadRow(Base):
    """Points each scope at its current version; updated with a compare-and-set on `version`."""

    __tablename__ = "config_heads"
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(ForeignKey("config_versions.revision"))


class TokenRow(Base):
    """Bearer tokens, stored as SHA-256 of the token (tokens are 256-bit random, so a fast hash is enough)."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    server_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class JoinTokenRow(Base):
    __tablename__ = "join_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ServerRow(Base):
    __tablename__ = "servers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    cluster_id: Mapped[str | None] = mapped_column(
        ForeignKey("clusters.id"), nullable=True, index=True
    )
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Any contact (status report or long-poll); long-poll contacts are written in batches.
    last_contact_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The last status report: `health` is believed only while this is recent.
    last_report_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    health: Mapped[str] = mapped_column(String(16), default="UNKNOWN")
    status_json: Mapped[str] = mapped_column(Text, default="{}")


class BundleKeyRow(Base):
    """A public key some server of the trust domain reported, as its bundle entry (`jwk_json`);
    the bundle is exactly these rows. `kid` is the server's key id, also for X.509 CA keys
    whose entry carries none."""

    __tablename__ = "bundle_keys"
    __table_args__ = (Index("ix_bundle_keys_not_after", "not_after"),)
    trust_domain_id: Mapped[str] = mapped_column(ForeignKey("trust_domains.id"), primary_key=True)
    kid: Mapped[str] = mapped_column(String(255), primary_key=True)
    use: Mapped[str] = mapped_column(String(16))
    jwk_json: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    not_after: Mapped[datetime] = mapped_column(UtcDateTime())
    server_id: Mapped[str] = mapped_column(String(32))


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str | None] = mapped_column(String(32), nullable=True)
    scope_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    old_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    new_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    details_json: Mapped[str] = mapped_column(Text, default="{}")
