"""Turn Azure SDK failures into KeyManager errors that name the real cause and its fix.

Key Vault says why it refused in ``error.innererror.code`` (and, less reliably, in the message);
the status alone does not tell a missing role from a firewall or a disabled key:

- ``ForbiddenByRbac`` (RBAC vault): the missing data action (quoted by the service as
  ``Action: '...'``) and the built-in role that grants it.
- ``AccessDenied`` (access policy vault): the missing key permission ("does not have keys
  sign permission").
- ``ForbiddenByFirewall`` ("Client address is not authorized and caller is not a trusted
  service."): the vault's network rules, with the server's address.
- Key states (``KeyDisabled``, ``KeyExpired``, ``KeyNotYetValid``, "not permitted on this key"):
  the key, not the identity, is the problem.
- Standard tier ("Hardware key operation not allowed on standard vault"): Premium is required.
- 409 ``ObjectIsDeletedButRecoverable``: the name is held by a soft-deleted key (recover it);
  ``ObjectIsBeingDeleted``, ``ObjectIsBeingRecovered`` and the parallel-recovery conflict:
  an operation still running, retry later (transient).
- Purge refused by purge protection: nothing to fix, the service purges at the end of the
  retention period.
- 404 -> KeyNotFoundError; 429, 5xx, connection failures -> TransientKeyManagerError.

Data actions and roles are Azure's: learn.microsoft.com "Azure built-in roles for Security"
(Key Vault Crypto Officer = ``Microsoft.KeyVault/vaults/keys/*``; Crypto User = read, update,
sign, verify, ...) and "Azure permissions for Security" (``keys/purge/action``,
``keys/recover/action``; reading deleted keys is ``keys/read``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from controlplane.keymanagers.base import (
    KeyManagerError,
    KeyNotFoundError,
    TransientKeyManagerError,
)

__all__ = [
    "OPERATIONS",
    "DeletedButRecoverableError",
    "FirewallDeniedError",
    "KeyStateError",
    "Operation",
    "PermissionDeniedError",
    "PurgeProtectedError",
    "SoftDeleteConflictError",
    "StandardTierError",
    "map_azure_error",
    "retry_after_seconds",
]

CRYPTO_OFFICER = "Key Vault Crypto Officer"
CRYPTO_USER = "Key Vault Crypto User"
STANDARD_TIER_MESSAGE = "Hardware key operation not allowed on standard vault"
_DATA_ACTION = "Microsoft.KeyVault/vaults/keys/"


@dataclass(frozen=True)
class Operation:
    verb: str  # for messages: "create a key"
    action: str  # the RBAC data action
    roles: tuple[str, ...]  # built-in roles granting it, the narrowest first
    access_policy: str  # the legacy access-policy key permission


_OFFICER = (CRYPTO_OFFICER,)
_USER_OR_OFFICER = (CRYPTO_USER, CRYPTO_OFFICER)

OPERATIONS: dict[str, Operation] = {
    "create": Operation("create a key", _DATA_ACTION + "create/action", _OFFICER, "Create"),
    "get": Operation("read a key", _DATA_ACTION + "read", _USER_OR_OFFICER, "Get"),
    "list": Operation("list keys", _DATA_ACTION + "read", _USER_OR_OFFICER, "List"),
    "update": Operation("update a key", _DATA_ACTION + "update/action", _USER_OR_OFFICER, "Update"),
    "delete": Operation("delete a key", _DATA_ACTION + "delete", _OFFICER, "Delete"),
    "sign": Operation("sign", _DATA_ACTION + "sign/action", _USER_OR_OFFICER, "Sign"),
    "purge": Operation("purge a deleted key", _DATA_ACTION + "purge/action", _OFFICER, "Purge"),
    "recover": Operation(
        "recover a deleted key", _DATA_ACTION + "recover/action", _OFFICER, "Recover"
    ),
}


class StandardTierError(KeyManagerError):
    """The vault is Standard tier; HSM keys need Premium."""


class PermissionDeniedError(KeyManagerError):
    """The identity lacks a Key Vault permission (RBAC role or access policy)."""


class FirewallDeniedError(PermissionDeniedError):
    """The vault's network rules do not admit the server's address."""


class KeyStateError(KeyManagerError):
    """The key's own state (disabled, expired, not yet valid, key_ops) forbids the operation."""


class DeletedButRecoverableError(KeyManagerError):
    """The name belongs to a soft-deleted key: recover or purge it before reusing the name."""


class SoftDeleteConflictError(TransientKeyManagerError):
    """A delete or a recovery of the same key is still running: retry later."""


class PurgeProtectedError(KeyManagerError):
    """The vault has purge protection: deleted keys stay until the retention period ends."""


def retry_after_seconds(exc: HttpResponseError) -> float | None:
    headers = getattr(exc.response, "headers", None)
    if headers is None:
        return None
    raw = headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _error_body(exc: HttpResponseError) -> dict[str, Any]:
    """The service's {"code", "message", "innererror"} (parsed by the SDK, else by us)."""
    err = exc.error
    if err is not None and (err.code or err.message):
        return {
            "code": err.code,
            "message": err.message,
            "innererror": dict(err.innererror or {}),
        }
    try:
        text = exc.response.text() if exc.response is not None else ""
        body = json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - not JSON: nothing to read
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


@dataclass(frozen=True)
class _Said:
    """What the service said about a failed request, read from its body once."""

    code: str  # innererror.code, e.g. ForbiddenByRbac ("" when there is none)
    full: str  # the whole message (Azure puts the caller, action and address in it)
    line: str  # its first line, quoted in our messages


def _said(exc: HttpResponseError) -> _Said:
    body = _error_body(exc)
    inner = body.get("innererror")
    code = str(inner.get("code") or "") if isinstance(inner, dict) else ""
    full = str(body.get("message") or exc.message or "")
    first = (full or str(exc)).splitlines()
    return _Said(code=code, full=full, line=first[0].strip() if first else "")


_KEY_STATE_CODES = {"KeyDisabled", "KeyExpired", "KeyNotYetValid", "KeyOperationForbidden"}
_KEY_STATE_PHRASES = (
    "on a disabled key",
    "on an expired key",
    "not yet valid",
    "not permitted on this key",
    "outside the key's validity period",
)
_RBAC_ACTION = re.compile(r"Action: '([^']+)'")
_POLICY_PERMISSION = re.compile(r"does not have keys (\w+) permission", re.IGNORECASE)
_CLIENT_ADDRESS = re.compile(r"Client address: ([^\s\\]+)")


def _roles_text(roles: tuple[str, ...]) -> str:
    text = f"'{roles[0]}'"
    return text + "".join(f" (or '{r}')" for r in roles[1:])


def _role_for_action(action: str, op: Operation) -> tuple[str, ...]:
    for known in OPERATIONS.values():
        if known.action.lower() == action.lower():
            return known.roles
    return op.roles


def _forbidden(said: _Said, op: Operation, what: str, vault: str) -> KeyManagerError:
    code, full, message = said.code, said.full, said.line
    lowered = full.lower()
    if code in _KEY_STATE_CODES or any(p in lowered for p in _KEY_STATE_PHRASES):
        # Forbidden by the key's own state, not by a permission: naming a role here would
        # send the operator the wrong way.
        return KeyStateError(f"Key Vault {vault} refused to {what}: {message}")
    if code == "ForbiddenByFirewall" or "client address is not authorized" in lowered:
        found = _CLIENT_ADDRESS.search(full)
        address = f" ({found.group(1)})" if found else ""
        return FirewallDeniedError(
            f"Key Vault {vault} refused to {what}: its firewall does not admit this server's "
            f"address{address}. Add the address or the server's virtual network to the vault's "
            "networking rules (Networking > Firewalls and virtual networks), or reach the vault "
            "through a private endpoint."
        )
    if "purge protection" in lowered:
        return PurgeProtectedError(
            f"Key Vault {vault} has purge protection: deleted keys stay until the end of the "
            f"retention period ({message})"
        )
    found = _POLICY_PERMISSION.search(full)
    if code == "AccessDenied" or found:
        permission = found.group(1).capitalize() if found else op.access_policy
        return PermissionDeniedError(
            f"Key Vault {vault} denied the server's identity permission to {what}: the vault "
            f"uses access policies and the identity's policy lacks the key permission "
            f"'{permission}' (grant Get, List, Create, Update, Delete and Sign). "
            f"Service said: {message}"
        )
    found = _RBAC_ACTION.search(full)
    action = found.group(1) if found else op.action
    roles = _role_for_action(action, op)
    if code == "ForbiddenByRbac" or found:
        return PermissionDeniedError(
            f"Key Vault {vault} denied the server's identity permission to {what}: it lacks the "
            f"data action '{action}', granted by the RBAC role {_roles_text(roles)} on the vault. "
            f"Service said: {message}"
        )
    return PermissionDeniedError(
        f"Key Vault {vault} denied the server's identity permission to {what}: it needs the "
        f"data action '{op.action}', granted by the RBAC role {_roles_text(op.roles)} (legacy "
        f"access policy: the '{op.access_policy}' key permission). Service said: {message}"
    )


def _conflict(said: _Said, what: str, vault: str) -> KeyManagerError | None:
    code, message = said.code, said.line
    if code == "ObjectIsDeletedButRecoverable":
        return DeletedButRecoverableError(f"Key Vault {vault} could not {what}: {message}")
    if code in ("ObjectIsBeingDeleted", "ObjectIsBeingRecovered") or (
        "conflict while recovering" in message.lower()
    ):
        return SoftDeleteConflictError(
            f"Key Vault {vault} could not {what} yet (a delete or recovery is still running): "
            f"{message}"
        )
    return None


def map_azure_error(
    exc: Exception, operation: str, vault: str, subject: str = ""
) -> KeyManagerError:
    """The KeyManager error for an SDK exception raised while doing `operation` on `vault`."""
    op = OPERATIONS[operation]
    what = f"{op.verb} {subject}".strip() if subject else op.verb
    if isinstance(exc, ResourceNotFoundError):
        return KeyNotFoundError(f"Key Vault {vault}: {subject or 'key'} not found")
    if isinstance(exc, ClientAuthenticationError) and exc.status_code in (None, 400, 401):
        return KeyManagerError(
            f"cannot authenticate to Key Vault {vault} to {what}: {_said(exc).line}"
        )
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        said = _said(exc)
        message = said.line
        if STANDARD_TIER_MESSAGE.lower() in message.lower():
            return StandardTierError(
                f"Key Vault {vault} is a Standard tier vault: it refused to create an HSM-backed "
                f"key ({message}). The Azure Key Vault key manager only uses HSM keys "
                "(EC-HSM/RSA-HSM), which require a Premium tier vault; upgrade the vault's SKU "
                "to Premium or point vaultURL at a Premium vault."
            )
        if status == 403:
            return _forbidden(said, op, what, vault)
        if status == 409:
            mapped = _conflict(said, what, vault)
            if mapped is not None:
                return mapped
        if status == 429 or status >= 500 or status == 408:
            return TransientKeyManagerError(
                f"Key Vault {vault} could not {what} right now (HTTP {status}): {message}"
            )
        return KeyManagerError(f"Key Vault {vault} refused to {what} (HTTP {status}): {message}")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return TransientKeyManagerError(
            f"Key Vault {vault} unreachable while trying to {what}: {exc}"
        )
    return KeyManagerError(f"Key Vault {vault}: cannot {what}: {exc}")
