"""Domain core: identifiers, scopes, errors and the effective-config rule. No I/O."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TRUST_DOMAIN = "trust-domain"
DEPLOYMENT = "trust-domain-deployment"
CLUSTER = "cluster"
SCOPES: tuple[str, ...] = (TRUST_DOMAIN, DEPLOYMENT, CLUSTER)


ID_PREFIXES = {
    "trust_domain": "td-",
    "deployment": "tdd-",
    "cluster": "c-",
    "server": "tds-",
    "token": "tok-",
}

# Versions and revisions are PostgreSQL `integer` columns.
MAX_VERSION = 2**31 - 1

ROLE_ADMIN = "admin"
ROLE_VIEWER = "viewer"
ROLE_SERVER = "server"
USER_ROLES = (ROLE_ADMIN, ROLE_VIEWER)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id(kind: str) -> str:
    return ID_PREFIXES[kind] + secrets.token_hex(6)


MAX_JOIN_TOKEN_TTL = timedelta(days=7)

# A join token's name, which is not a secret: `jt-` and the first 16 hex digits of its SHA-256
# (the control plane stores that hash). Terraform's `spirl_join_token` ids are the same names.
JOIN_TOKEN_ID = re.compile(r"jt-[0-9a-f]{16}")


def join_token_id(token_sha256_hex: str) -> str:
    return "jt-" + token_sha256_hex[:16]


class DomainError(Exception):
    """Base of errors the API turns into a 4xx with `code` and a readable message."""

    code = "bad_request"
    status = 400

    def details(self) -> dict[str, Any]:
        """Extra fields of the error body, beside `error` and `message`."""
        return {}


class NotFound(DomainError):
    code = "not_found"
    status = 404


class HasChildren(DomainError):
    """Refused delete. `holders` names what still holds the object: [{"kind", "id", ...}]."""

    code = "has_children"
    status = 409

    def __init__(self, message: str, holders: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.holders = holders or []

    def details(self) -> dict[str, Any]:
        return {"holders": self.holders} if self.holders else {}


class AlreadyExists(DomainError):
    code = "already_exists"
    status = 409


class VersionConflict(DomainError):
    code = "version_conflict"
    status = 409

    def __init__(self, scope: str, scope_id: str, expected: int, current: int) -> None:
        super().__init__(
            f"{scope} {scope_id} is at version {current}, not the expected version {expected}; "
            "read the current config and retry"
        )
        self.expected_version = expected
        self.current_version = current


class RolloutConflict(DomainError):
    """A rollout action that does not apply to the rollout's phase (e.g. abort a finished one)."""

    code = "rollout_conflict"
    status = 409

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase

    def details(self) -> dict[str, Any]:
        return {"phase": self.phase}


class JoinTokenUsed(DomainError):
    """Revoking a join token a server already registered with: deregister the server instead."""

    code = "join_token_used"
    status = 409


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class Unauthenticated(DomainError):
    code = "unauthenticated"
    status = 401


class Deregistered(Unauthenticated):
    """A server credential whose server was deregistered: it must join again."""

    code = "server_deregistered"

    def __init__(self) -> None:
        super().__init__("this server was deregistered; join again with a new join token")


class BadRequest(DomainError):
    code = "bad_request"
    status = 400


class Unavailable(DomainError):
    """The database cannot be reached: nothing was done, the same request may be retried."""

    code = "unavailable"
    status = 503
    retry_after_seconds = 5


# A SPIFFE trust domain name: lowercase letters, digits, dots, dashes, underscores (SPIFFE ID
# spec, "Trust Domain"); a DNS-length cap.
_TRUST_DOMAIN_NAME = re.compile(r"[a-z0-9._-]{1,255}")
_OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def trust_domain_name_problem(name: object) -> str | None:
    """Why `name` is not a SPIFFE trust domain name, or None. (fullmatch: `$` would let a
    trailing newline through.)"""
    if isinstance(name, str) and _TRUST_DOMAIN_NAME.fullmatch(name):
        return None
    return (
        "trust domain name must be a SPIFFE trust domain: lowercase letters, digits, '.', '-' "
        "or '_' (e.g. example.org)"
    )


def object_name_problem(name: object, what: str) -> str | None:
    """Why `name` cannot name a deployment or cluster (`what`), or None."""
    if isinstance(name, str) and _OBJECT_NAME.fullmatch(name):
        return None
    return (
        f"{what} name must be 1-63 characters of letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise NotFound(f"unknown scope {scope!r}; scopes are: {', '.join(SCOPES)}")
    return scope


@dataclass(frozen=True)
class StoredSection:
    """One section as stored at one scope version."""

    name: str
    schema: str
    document: Mapping[str, Any]
    canonical_yaml: str
    digest: str


@dataclass(frozen=True)
class ScopeConfig:
    """The current (or a historical) config of one scope: an immutable snapshot."""

    scope: str
    scope_id: str
    version: int  # per-scope version; 0 = nothing stored yet
    revision: int  # global, monotonic across all scopes; 0 = nothing stored yet
    sections: Mapping[str, StoredSection] = field(default_factory=dict)
    actor: str | None = None
    created_at: datetime | None = None
    action: str | None = None


@dataclass(frozen=True)
class EffectiveSection:
    section: StoredSection
    scope: str
    scope_id: str
    scope_version: int


@dataclass(frozen=True)
class EffectiveConfig:
    version: int
    sections: Mapping[str, EffectiveSection]


def effective_config(layers: list[ScopeConfig]) -> EffectiveConfig:
    """Merge scope configs given from least to most specific: per section, the most specific wins.

    The version is the largest global revision among the layers, so it grows whenever any
    layer changes and equal versions mean equal inputs.
    """
    sections: dict[str, EffectiveSection] = {}
    for layer in layers:
        for name, section in layer.sections.items():
            sections[name] = EffectiveSection(section, layer.scope, layer.scope_id, layer.version)
    version = effective_version(layer.revision for layer in layers)
    return EffectiveConfig(version=version, sections=dict(sorted(sections.items())))


def effective_version(revisions: Iterable[int]) -> int:
    """A server's effective config version: the largest global revision among its layers."""
    return max(revisions, default=0)
