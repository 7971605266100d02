"""Tokens: admin/viewer bearer tokens, join tokens, and server credentials. Stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain import (
    JOIN_TOKEN_ID,
    MAX_JOIN_TOKEN_TTL,
    ROLE_ADMIN,
    ROLE_SERVER,
    USER_ROLES,
    BadRequest,
    Deregistered,
    Forbidden,
    JoinTokenUsed,
    NotFound,
    Unauthenticated,
    join_token_id,
    new_id,
    utc_now,
)
from controlplane.services import audit
from controlplane.services.objects import get_cluster_row, get_deployment_row, get_trust_domain_row
from controlplane.store.models import JoinTokenRow, ServerRow, TokenRow
from controlplane.store.unit_of_work import UnitOfWork

# An expired join token stays listed (state `expired`) this long, then it is deleted.
JOIN_TOKEN_KEPT_EXPIRED = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Principal:
    role: str  # admin | viewer | server
    name: str
    token_id: str
    deployment_id: str | None = None
    server_id: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"

    def require_admin(self) -> None:
        if self.role != ROLE_ADMIN:
            raise Forbidden(f"this needs an admin token; yours has role {self.role}")

    def require_user(self) -> None:
        if self.role not in USER_ROLES:
            raise Forbidden("server credentials may only use the server routes")

    def require_server(self, server_id: str) -> None:
        if self.role != ROLE_SERVER or self.server_id != server_id:
            raise Forbidden(f"this credential may not act as server {server_id}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def create_token(
    uow: UnitOfWork, role: str, name: str, actor: str = "cli"
) -> tuple[str, dict[str, Any]]:
    if role not in USER_ROLES:
        raise BadRequest(f"role must be one of: {', '.join(USER_ROLES)}")
    token = _new_secret("spirl_")
    row = TokenRow(
        id=new_id("token"),
        token_hash=hash_token(token),
        role=role,
        name=name,
        created_at=utc_now(),
    )
    uow.repo.add(row)
    audit.record(
        uow,
        actor=actor,
        action="token.create",
        details={"token_id": row.id, "role": role, "name": name},
    )
    uow.commit()
    return token, {"id": row.id, "role": role, "name": name}


def list_tokens(uow: UnitOfWork) -> list[dict[str, Any]]:
    """Admin and viewer tokens (never their secrets; server credentials are listed with servers)."""
    return [
        {
            "id": row.id,
            "role": row.role,
            "name": row.name,
            "created_at": row.created_at.isoformat(),
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        }
        for row in uow.repo.user_tokens()
    ]


def revoke_token(uow: UnitOfWork, token_id: str, actor: str = "cli") -> dict[str, Any]:
    row = uow.repo.token(token_id)
    if row is None:
        raise NotFound(f"token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utc_now()
        audit.record(uow, actor=actor, action="token.revoke", details={"token_id": token_id})
        uow.commit()
    return {"id": row.id, "revoked_at": row.revoked_at.isoformat()}


def authenticate(uow: UnitOfWork, token: str | None) -> Principal:
    if not token:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    row = uow.repo.token_by_hash(hash_token(token))
    if row is not None and row.revoked_at is not None and row.server_id is not None:
        raise Deregistered()  # server credentials are revoked only by deregistration
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("unknown or revoked token")
    return Principal(
        role=row.role,
        name=row.name,
        token_id=row.id,
        deployment_id=row.deployment_id,
        server_id=row.server_id,
    )


def create_join_token(
    uow: UnitOfWork, deployment_id: str, ttl_seconds: object, actor: str
) -> dict[str, Any]:
    tdd = get_deployment_row(uow, deployment_id)
    if ttl_seconds is None:
        ttl_seconds = 3600
    if not isinstance(ttl_seconds, int) or isinstance(ttl_seconds, bool) or ttl_seconds <= 0:
        raise BadRequest("ttl_seconds must be a positive integer")
    if ttl_seconds > MAX_JOIN_TOKEN_TTL.total_seconds():  # before timedelta: it overflows
        raise BadRequest(f"ttl_seconds may be at most {int(MAX_JOIN_TOKEN_TTL.total_seconds())}")
    ttl = timedelta(seconds=ttl_seconds)
    token = _new_secret("spirljt_")
    now = utc_now()
    uow.repo.add(
        JoinTokenRow(
            token_hash=hash_token(token),
            deployment_id=tdd.id,
            created_by=actor,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    audit.record(
        uow,
        actor=actor,
        action="join_token.create",
        scope="trust-domain-deployment",
        scope_id=tdd.id,
        details={"expires_at": (now + ttl).isoformat()},
    )
    uow.commit()
    return {
        "id": join_token_id(hash_token(token)),
        "token": token,
        "expires_at": (now + ttl).isoformat(),
        "trust_domain_deployment_id": tdd.id,
    }


def _join_token_dict(row: JoinTokenRow, now: datetime) -> dict[str, Any]:
    if row.used_at is not None:
        state = "used"
    elif row.expires_at <= now:
        state = "expired"
    else:
        state = "valid"
    return {
        "id": join_token_id(row.token_hash),
        "trust_domain_deployment_id": row.deployment_id,
        "state": state,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        "used_at": row.used_at.isoformat() if row.used_at else None,
    }


def list_join_tokens(uow: UnitOfWork, deployment_id: str, limit: int) -> list[dict[str, Any]]:
    """The `limit` newest join tokens of a deployment (never the tokens themselves)."""
    tdd = get_deployment_row(uow, deployment_id)
    now = utc_now()
    return [_join_token_dict(row, now) for row in uow.repo.join_tokens(tdd.id, limit)]


def purge_join_tokens(uow_factory: Callable[[], UnitOfWork], now: datetime | None = None) -> int:
    """Delete the join tokens expired for longer than JOIN_TOKEN_KEPT_EXPIRED (used or not; the
    audit log keeps who made them and the servers' registrations); returns how many. Safe with
    several replicas at once: a delete of rows another replica deleted deletes nothing."""
    cutoff = (now or utc_now()) - JOIN_TOKEN_KEPT_EXPIRED
    with uow_factory() as uow:
        deleted = uow.repo.delete_join_tokens_expired_before(cutoff)
        uow.commit()
    return deleted


def revoke_join_token(uow: UnitOfWork, deployment_id: str, token_id: str, actor: str) -> None:
    """Revoke a join token no server registered with yet: it is deleted, the audit log keeps
    who revoked it. A used one is refused (JoinTokenUsed): deregister its server instead."""
    tdd = get_deployment_row(uow, deployment_id)
    if not JOIN_TOKEN_ID.fullmatch(token_id):
        raise BadRequest(
            "a join token id is jt- and 16 hex digits (spirlctl trust-domain deployment join-tokens)"
        )
    row = uow.repo.join_token_by_hash_prefix(tdd.id, token_id.removeprefix("jt-"))
    if row is None:
        raise NotFound(f"join token {token_id} not found in deployment {tdd.id}")
    if not uow.repo.delete_unused_join_token(row.token_hash):
        if uow.repo.join_token_by_hash(row.token_hash) is None:  # revoked meanwhile
            raise NotFound(f"join token {token_id} not found in deployment {tdd.id}")
        raise JoinTokenUsed(
            f"join token {token_id} was already used to register a server; deregister that "
            "server instead (spirlctl trust-domain deployment server delete)"
        )
    audit.record(
        uow,
        actor=actor,
        action="join_token.revoke",
        scope="trust-domain-deployment",
        scope_id=tdd.id,
        details={"join_token_id": token_id},
    )
    uow.commit()


def register_server(
    uow: UnitOfWork, join_token: str | None, name: object, cluster_id: object
) -> dict[str, Any]:
    if not join_token:
        raise Unauthenticated("registering needs a join token (Authorization: Bearer <join token>)")
    row = uow.repo.join_token_by_hash(hash_token(join_token))
    now = utc_now()
    if row is None:
        raise Unauthenticated("unknown join token")
    if row.used_at is not None:
        raise Unauthenticated("join token already used; create a new one")
    if row.expires_at <= now:
        raise Unauthenticated("join token expired; create a new one")
    if name is None:
        name = "server"
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise BadRequest("name must be a string of 1-255 characters")
    tdd = get_deployment_row(uow, row.deployment_id)
    td = get_trust_domain_row(uow, tdd.trust_domain_id)
    if cluster_id is not None:
        if not isinstance(cluster_id, str):
            raise BadRequest("cluster_id must be a string")
        cluster = get_cluster_row(uow, cluster_id)
        if cluster.deployment_id != tdd.id:
            raise BadRequest(f"cluster {cluster_id} does not belong to deployment {tdd.id}")
    if not uow.repo.claim_join_token(row.token_hash, now):
        raise Unauthenticated("join token already used; create a new one")
    server_id = new_id("server")
    credential = _new_secret("spirlsc_")
    uow.repo.add(
        ServerRow(
            id=server_id,
            name=name,
            deployment_id=tdd.id,
            cluster_id=cluster_id,
            registered_at=now,
            health="UNKNOWN",
            status_json="{}",
        )
    )
    uow.repo.add(
        TokenRow(
            id="tok-" + server_id[4:],
            token_hash=hash_token(credential),
            role=ROLE_SERVER,
            name=server_id,
            deployment_id=tdd.id,
            server_id=server_id,
            created_at=now,
        )
    )
    audit.record(
        uow,
        actor=f"server:{server_id}",
        action="server.register",
        scope="trust-domain-deployment",
        scope_id=tdd.id,
        details={"server_id": server_id, "name": name, "cluster_id": cluster_id},
    )
    uow.commit()
    return {
        "server_id": server_id,
        "credential": credential,
        "trust_domain_deployment_id": tdd.id,
        "trust_domain_id": td.id,
        "trust_domain": td.name,
        "cluster_id": cluster_id,
    }
