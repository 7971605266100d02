"""Principals (app registrations) of the fake Entra ID and Key Vault RBAC.

A principal is a client id with optional client secret, optional federated
subjects (Workload Identity) and a list of Key Vault data-plane roles. Secrets
are kept as SHA-256 digests only; nothing here ever returns or logs one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ACTION_CREATE",
    "ACTION_DELETE",
    "ACTION_DELETED_READ",
    "ACTION_PURGE",
    "ACTION_READ",
    "ACTION_RECOVER",
    "ACTION_SIGN",
    "ACTION_UPDATE",
    "ACTION_VERIFY",
    "ROLE_ADMINISTRATOR",
    "ROLE_CRYPTO_OFFICER",
    "ROLE_CRYPTO_USER",
    "Principal",
    "PrincipalStore",
    "canonical_role",
    "role_allows",
]

ACTION_READ = "Microsoft.KeyVault/vaults/keys/read"
ACTION_CREATE = "Microsoft.KeyVault/vaults/keys/create/action"
ACTION_UPDATE = "Microsoft.KeyVault/vaults/keys/update/action"
ACTION_DELETE = "Microsoft.KeyVault/vaults/keys/delete"
ACTION_SIGN = "Microsoft.KeyVault/vaults/keys/sign/action"
ACTION_VERIFY = "Microsoft.KeyVault/vaults/keys/verify/action"
ACTION_DELETED_READ = "Microsoft.KeyVault/vaults/deletedkeys/read"
ACTION_PURGE = "Microsoft.KeyVault/vaults/deletedkeys/delete"
ACTION_RECOVER = "Microsoft.KeyVault/vaults/deletedkeys/recover/action"

ROLE_CRYPTO_OFFICER = "Key Vault Crypto Officer"
ROLE_CRYPTO_USER = "Key Vault Crypto User"
ROLE_ADMINISTRATOR = "Key Vault Administrator"

# The project's split of duties (see the vendor page): the Officer manages keys,
# the User signs. Note the real Crypto Officer role ("keys/*") also allows crypto
# operations; the emulator keeps them apart on purpose so a deployment that only
# grants the Officer role is caught by tests.
_ROLE_ACTIONS: dict[str, frozenset[str]] = {
    ROLE_CRYPTO_OFFICER: frozenset(
        {
            ACTION_READ,
            ACTION_CREATE,
            ACTION_UPDATE,
            ACTION_DELETE,
            ACTION_DELETED_READ,
            ACTION_PURGE,
            ACTION_RECOVER,
        }
    ),
    ROLE_CRYPTO_USER: frozenset({ACTION_READ, ACTION_SIGN, ACTION_VERIFY}),
    ROLE_ADMINISTRATOR: frozenset(
        {
            ACTION_READ,
            ACTION_CREATE,
            ACTION_UPDATE,
            ACTION_DELETE,
            ACTION_SIGN,
            ACTION_VERIFY,
            ACTION_DELETED_READ,
            ACTION_PURGE,
            ACTION_RECOVER,
        }
    ),
}

_ROLE_ALIASES = {
    "crypto-officer": ROLE_CRYPTO_OFFICER,
    "officer": ROLE_CRYPTO_OFFICER,
    "crypto-user": ROLE_CRYPTO_USER,
    "user": ROLE_CRYPTO_USER,
    "administrator": ROLE_ADMINISTRATOR,
    "admin": ROLE_ADMINISTRATOR,
}


def canonical_role(name: str) -> str:
    """Map a role name or alias ("crypto-user") to the Azure role name; ValueError if unknown."""
    text = name.strip()
    for role in _ROLE_ACTIONS:
        if role.lower() == text.lower():
            return role
    alias = _ROLE_ALIASES.get(text.lower())
    if alias is None:
        raise ValueError(f"unknown role {name!r}; known: {', '.join(_ROLE_ACTIONS)}")
    return alias


def role_allows(roles: list[str], action: str) -> bool:
    return any(action in _ROLE_ACTIONS.get(r, frozenset()) for r in roles)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass
class Principal:
    client_id: str
    object_id: str
    roles: list[str] = field(default_factory=list)
    secret_sha256: str | None = None
    federated_subjects: list[str] = field(default_factory=list)
    # "system" or "user": this principal is also a managed identity (see entra.py, /msi/token).
    managed_identity: str | None = None

    def check_secret(self, secret: str) -> bool:
        if self.secret_sha256 is None:
            return False
        return hmac.compare_digest(self.secret_sha256, _hash_secret(secret))

    def public_view(self) -> dict[str, Any]:
        """What the control API shows: never the secret (not even its digest)."""
        return {
            "client_id": self.client_id,
            "object_id": self.object_id,
            "roles": list(self.roles),
            "has_secret": self.secret_sha256 is not None,
            "federated_subjects": list(self.federated_subjects),
            "managed_identity": self.managed_identity,
        }


class PrincipalStore:
    """Thread-safe principals, persisted as JSON in the state dir."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._principals: dict[str, Principal] = {}
        if path.exists():
            for raw in json.loads(path.read_text()).get("principals", []):
                p = Principal(**raw)
                self._principals[p.client_id] = p

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        data = {"principals": [vars(p) for p in self._principals.values()]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self._path)

    def upsert(
        self,
        client_id: str,
        *,
        roles: list[str] | None = None,
        client_secret: str | None = None,
        federated_subjects: list[str] | None = None,
        managed_identity: str | None = None,
    ) -> Principal:
        """Create or change a principal. Fields given as None keep their current value."""
        canonical = [canonical_role(r) for r in roles] if roles is not None else None
        if managed_identity not in (None, "system", "user"):
            raise ValueError("managed_identity must be 'system' or 'user'")
        with self._lock:
            p = self._principals.get(client_id)
            if p is None:
                # A stable object id per client id, like an Entra service principal's oid.
                oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"spirl-emulator:{client_id}"))
                p = Principal(client_id=client_id, object_id=oid, federated_subjects=[client_id])
                self._principals[client_id] = p
            if canonical is not None:
                p.roles = canonical
            if client_secret is not None:
                p.secret_sha256 = _hash_secret(client_secret)
            if federated_subjects is not None:
                p.federated_subjects = list(federated_subjects)
            if managed_identity is not None:
                p.managed_identity = managed_identity
            self._save()
            return Principal(**vars(p))

    def get(self, client_id: str) -> Principal | None:
        with self._lock:
            p = self._principals.get(client_id)
            return None if p is None else Principal(**vars(p))

    def remove(self, client_id: str) -> bool:
        with self._lock:
            found = self._principals.pop(client_id, None) is not None
            if found:
                self._save()
            return found

    def managed(self, client_id: str | None) -> Principal | None:
        """The managed identity for a token request: by client id, else the system-assigned one."""
        with self._lock:
            for p in self._principals.values():
                if client_id is not None and p.client_id == client_id and p.managed_identity:
                    return Principal(**vars(p))
                if client_id is None and p.managed_identity == "system":
                    return Principal(**vars(p))
            return None

    def all(self) -> list[Principal]:
        with self._lock:
            return [Principal(**vars(p)) for p in self._principals.values()]
