"""Principals (app registrations) of the fake Entra ID and the vault's two permission models.

A principal is a client id with optional client secret, optional federated subjects (Workload
Identity), Azure RBAC role assignments on the vault, and a legacy access policy (key
permissions). Which of the two authorizes a request is the vault's permission model, as in
Azure: with RBAC on, access policies are ignored, and the reverse.

Sources (quoted in the tests too):

- Built-in roles: learn.microsoft.com "Azure built-in roles for Security"
  (MicrosoftDocs/azure-docs `articles/role-based-access-control/built-in-roles/security.md`):
  Key Vault Crypto Officer is ``Microsoft.KeyVault/vaults/keys/*`` (so it can sign), Crypto
  User is read, update, backup, encrypt, decrypt, wrap, unwrap, sign and verify, Administrator
  is ``Microsoft.KeyVault/vaults/*``, Reader is ``Microsoft.KeyVault/vaults/*/read``.
- Data actions: "Azure permissions for Security" (`.../permissions/security.md`,
  Microsoft.KeyVault): ``keys/read``, ``keys/create/action``, ``keys/update/action``,
  ``keys/delete``, ``keys/recover/action``, ``keys/purge/action``, ``keys/sign/action``,
  ``keys/verify/action``. There is no ``deletedkeys/*`` action: reading deleted keys is
  ``keys/read``.
- Access policy key permissions: "Azure Key Vault keys details", Key access control
  (`articles/key-vault/keys/about-keys-details.md`): get, list, update, create, import,
  delete, recover, backup, restore, decrypt, encrypt, unwrapKey, wrapKey, verify, sign, purge.

Secrets are kept as SHA-256 digests only; nothing here ever returns or logs one.
"""

from __future__ import annotations

import fnmatch
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
    "ACCESS_POLICY",
    "ACTION_CREATE",
    "ACTION_DELETE",
    "ACTION_PURGE",
    "ACTION_READ",
    "ACTION_RECOVER",
    "ACTION_SIGN",
    "ACTION_UPDATE",
    "ACTION_VERIFY",
    "BUILT_IN_ROLES",
    "KEY_PERMISSIONS",
    "PERMISSION_MODELS",
    "RBAC",
    "ROLE_ADMINISTRATOR",
    "ROLE_CRYPTO_OFFICER",
    "ROLE_CRYPTO_USER",
    "ROLE_READER",
    "Principal",
    "PrincipalStore",
    "RoleDefinition",
]

_KEYS = "Microsoft.KeyVault/vaults/keys/"
ACTION_READ = _KEYS + "read"
ACTION_CREATE = _KEYS + "create/action"
ACTION_UPDATE = _KEYS + "update/action"
ACTION_DELETE = _KEYS + "delete"
ACTION_RECOVER = _KEYS + "recover/action"
ACTION_PURGE = _KEYS + "purge/action"
ACTION_SIGN = _KEYS + "sign/action"
ACTION_VERIFY = _KEYS + "verify/action"

ROLE_ADMINISTRATOR = "Key Vault Administrator"
ROLE_CRYPTO_OFFICER = "Key Vault Crypto Officer"
ROLE_CRYPTO_USER = "Key Vault Crypto User"
ROLE_READER = "Key Vault Reader"

RBAC = "rbac"
ACCESS_POLICY = "access-policy"
PERMISSION_MODELS = (RBAC, ACCESS_POLICY)

# Key permissions of a vault access policy (Azure spells two of them in camel case).
KEY_PERMISSIONS = (
    "get",
    "list",
    "update",
    "create",
    "import",
    "delete",
    "recover",
    "backup",
    "restore",
    "decrypt",
    "encrypt",
    "unwrapKey",
    "wrapKey",
    "verify",
    "sign",
    "purge",
    "release",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
)


def _matches(pattern: str, action: str) -> bool:
    # Azure compares operation names case-insensitively; "*" stands for any run of characters.
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


@dataclass(frozen=True)
class RoleDefinition:
    """An Azure role definition's data-plane part: dataActions minus notDataActions."""

    name: str
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...] = ()

    def allows(self, action: str) -> bool:
        return any(_matches(p, action) for p in self.data_actions) and not any(
            _matches(p, action) for p in self.not_data_actions
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "roleName": self.name,
            "dataActions": list(self.data_actions),
            "notDataActions": list(self.not_data_actions),
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> RoleDefinition:
        name = raw.get("roleName") or raw.get("name")
        actions = raw.get("dataActions")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a role definition needs a roleName")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise ValueError("dataActions must be a list of strings")
        not_actions = raw.get("notDataActions") or []
        if not isinstance(not_actions, list) or not all(isinstance(a, str) for a in not_actions):
            raise ValueError("notDataActions must be a list of strings")
        return RoleDefinition(name.strip(), tuple(actions), tuple(not_actions))


BUILT_IN_ROLES: dict[str, RoleDefinition] = {
    r.name: r
    for r in (
        RoleDefinition(ROLE_ADMINISTRATOR, ("Microsoft.KeyVault/vaults/*",)),
        RoleDefinition(
            ROLE_CRYPTO_OFFICER,
            ("Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*"),
        ),
        RoleDefinition(
            ROLE_CRYPTO_USER,
            tuple(
                _KEYS + a
                for a in (
                    "read",
                    "update/action",
                    "backup/action",
                    "encrypt/action",
                    "decrypt/action",
                    "wrap/action",
                    "unwrap/action",
                    "sign/action",
                    "verify/action",
                )
            ),
        ),
        RoleDefinition(
            ROLE_READER,
            (
                "Microsoft.KeyVault/vaults/*/read",
                "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            ),
        ),
    )
}

_ROLE_ALIASES = {
    "crypto-officer": ROLE_CRYPTO_OFFICER,
    "officer": ROLE_CRYPTO_OFFICER,
    "crypto-user": ROLE_CRYPTO_USER,
    "user": ROLE_CRYPTO_USER,
    "administrator": ROLE_ADMINISTRATOR,
    "admin": ROLE_ADMINISTRATOR,
    "reader": ROLE_READER,
}


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def canonical_permissions(names: list[str]) -> list[str]:
    """Access policy key permissions in Azure's spelling; "all" expands; ValueError if unknown."""
    out: list[str] = []
    by_lower = {p.lower(): p for p in KEY_PERMISSIONS}
    for raw in names:
        text = str(raw).strip()
        if text.lower() == "all":
            return list(KEY_PERMISSIONS)
        permission = by_lower.get(text.lower())
        if permission is None:
            raise ValueError(
                f"unknown key permission {raw!r}; known: all, {', '.join(KEY_PERMISSIONS)}"
            )
        if permission not in out:
            out.append(permission)
    return out


@dataclass
class Principal:
    client_id: str
    object_id: str
    roles: list[str] = field(default_factory=list)
    key_permissions: list[str] = field(default_factory=list)  # the vault access policy
    secret_sha256: str | None = None
    federated_subjects: list[str] = field(default_factory=list)
    # "system" or "user": this principal is also a managed identity (see entra.py).
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
            "key_permissions": list(self.key_permissions),
            "has_secret": self.secret_sha256 is not None,
            "federated_subjects": list(self.federated_subjects),
            "managed_identity": self.managed_identity,
        }


class PrincipalStore:
    """Thread-safe principals and custom role definitions, persisted as JSON in the state dir."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._principals: dict[str, Principal] = {}
        self._custom_roles: dict[str, RoleDefinition] = {}
        if path.exists():
            raw = json.loads(path.read_text())
            for item in raw.get("principals", []):
                p = Principal(**item)
                self._principals[p.client_id] = p
            for item in raw.get("roles", []):
                role = RoleDefinition.from_json(item)
                self._custom_roles[role.name] = role

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        data = {
            "principals": [vars(p) for p in self._principals.values()],
            "roles": [r.to_json() for r in self._custom_roles.values()],
        }
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self._path)

    # -- roles -------------------------------------------------------------------------------

    def _role(self, name: str) -> RoleDefinition | None:
        for table in (BUILT_IN_ROLES, self._custom_roles):
            for role in table.values():
                if role.name.lower() == name.strip().lower():
                    return role
        return None

    def canonical_role(self, name: str) -> str:
        """A built-in or custom role name, or an alias ("crypto-user"); ValueError if unknown."""
        with self._lock:
            role = self._role(_ROLE_ALIASES.get(name.strip().lower(), name))
            if role is None:
                known = ", ".join([*BUILT_IN_ROLES, *self._custom_roles])
                raise ValueError(f"unknown role {name!r}; known: {known}")
            return role.name

    def define_role(self, role: RoleDefinition) -> RoleDefinition:
        """Create or replace a custom role (as `az role definition create` would)."""
        if role.name.lower() in (n.lower() for n in BUILT_IN_ROLES):
            raise ValueError(f"{role.name!r} is a built-in role and cannot be redefined")
        with self._lock:
            self._custom_roles[role.name] = role
            self._save()
        return role

    def roles(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in (*BUILT_IN_ROLES.values(), *self._custom_roles.values())]

    def rbac_allows(self, principal: Principal, action: str) -> bool:
        with self._lock:
            return any(
                role is not None and role.allows(action)
                for role in (self._role(name) for name in principal.roles)
            )

    # -- principals --------------------------------------------------------------------------

    def upsert(
        self,
        client_id: str,
        *,
        roles: list[str] | None = None,
        key_permissions: list[str] | None = None,
        client_secret: str | None = None,
        federated_subjects: list[str] | None = None,
        managed_identity: str | None = None,
    ) -> Principal:
        """Create or change a principal. Fields given as None keep their current value."""
        canonical = [self.canonical_role(r) for r in roles] if roles is not None else None
        permissions = (
            canonical_permissions(key_permissions) if key_permissions is not None else None
        )
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
            if permissions is not None:
                p.key_permissions = permissions
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

    def managed(self, client_id: str | None, object_id: str | None = None) -> Principal | None:
        """The managed identity for a token request: by client id or object id, else the
        system-assigned one."""
        with self._lock:
            for p in self._principals.values():
                if not p.managed_identity:
                    continue
                if client_id is not None or object_id is not None:
                    if p.client_id == client_id or p.object_id == object_id:
                        return Principal(**vars(p))
                elif p.managed_identity == "system":
                    return Principal(**vars(p))
            return None

    def all(self) -> list[Principal]:
        with self._lock:
            return [Principal(**vars(p)) for p in self._principals.values()]
