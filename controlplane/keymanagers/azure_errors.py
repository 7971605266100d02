"""Turn Azure SDK failures into KeyManager errors an operator can act on.

- Standard tier ("Hardware key operation not allowed on standard vault") -> names the
  tier and says Premium is required.
- 403 -> names the missing data action and the RBAC role (and legacy access policy
  permission) that grants it.
- 404 -> KeyNotFoundError; 429, 5xx, connection failures -> TransientKeyManagerError.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "Operation",
    "PermissionDeniedError",
    "StandardTierError",
    "map_azure_error",
    "retry_after_seconds",
]

CRYPTO_OFFICER = "Key Vault Crypto Officer"
CRYPTO_USER = "Key Vault Crypto User"
STANDARD_TIER_MESSAGE = "Hardware key operation not allowed on standard vault"


@dataclass(frozen=True)
class Operation:
    verb: str  # for messages: "create a key"
    action: str  # the RBAC data action
    role: str  # a built-in role granting it
    access_policy: str  # the legacy access-policy permission


OPERATIONS: dict[str, Operation] = {
    "create": Operation(
        "create a key", "Microsoft.KeyVault/vaults/keys/create/action", CRYPTO_OFFICER, "Create"
    ),
    "get": Operation(
        "read a key",
        "Microsoft.KeyVault/vaults/keys/read",
        f"{CRYPTO_USER} or {CRYPTO_OFFICER}",
        "Get",
    ),
    "list": Operation(
        "list keys",
        "Microsoft.KeyVault/vaults/keys/read",
        f"{CRYPTO_USER} or {CRYPTO_OFFICER}",
        "List",
    ),
    "update": Operation(
        "update a key", "Microsoft.KeyVault/vaults/keys/update/action", CRYPTO_OFFICER, "Update"
    ),
    "delete": Operation(
        "delete a key", "Microsoft.KeyVault/vaults/keys/delete", CRYPTO_OFFICER, "Delete"
    ),
    "sign": Operation("sign", "Microsoft.KeyVault/vaults/keys/sign/action", CRYPTO_USER, "Sign"),
    "purge": Operation(
        "purge a deleted key",
        "Microsoft.KeyVault/vaults/deletedkeys/delete",
        CRYPTO_OFFICER,
        "Purge",
    ),
    "recover": Operation(
        "recover a deleted key",
        "Microsoft.KeyVault/vaults/deletedkeys/recover/action",
        CRYPTO_OFFICER,
        "Recover",
    ),
}


class StandardTierError(KeyManagerError):
    """The vault is Standard tier; HSM keys need Premium."""


class PermissionDeniedError(KeyManagerError):
    """The identity lacks a Key Vault permission."""


def retry_after_seconds(exc: HttpResponseError) -> float | None:
    headers = getattr(exc.response, "headers", None)
    if headers is None:
        return None
    raw = headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


# Key Vault's words when a key's own state forbids an operation (403 like RBAC denials).
_KEY_STATE_PHRASES = (
    "on a disabled key",
    "on an expired key",
    "not yet valid",
    "not permitted on this key",
)


def _is_key_state_refusal(message: str) -> bool:
    return any(p in message.lower() for p in _KEY_STATE_PHRASES)


def _service_message(exc: HttpResponseError) -> str:
    if exc.error is not None and exc.error.message:
        return str(exc.error.message).splitlines()[0].strip()
    return str(exc.message or exc).splitlines()[0].strip()


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
            f"cannot authenticate to Key Vault {vault} to {what}: {_service_message(exc)}"
        )
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        message = _service_message(exc)
        if STANDARD_TIER_MESSAGE.lower() in message.lower():
            return StandardTierError(
                f"Key Vault {vault} is a Standard tier vault: it refused to create an HSM-backed "
                f"key ({message}). The Azure Key Vault key manager only uses HSM keys "
                "(EC-HSM/RSA-HSM), which require a Premium tier vault; upgrade the vault's SKU "
                "to Premium or point vaultURL at a Premium vault."
            )
        if status == 403 and _is_key_state_refusal(message):
            # Forbidden by the key's own state (expired, disabled, not yet valid, key_ops),
            # not by RBAC: naming a role here would send the operator the wrong way.
            return KeyManagerError(f"Key Vault {vault} refused to {what}: {message}")
        if status == 403:
            return PermissionDeniedError(
                f"Key Vault {vault} denied the server's identity permission to {what}: it needs "
                f"the data action '{op.action}', granted by the RBAC role '{op.role}' on the "
                f"vault (legacy access policy: '{op.access_policy}' key permission). "
                f"Service said: {message}"
            )
        if status == 429 or status >= 500 or status in (408,):
            return TransientKeyManagerError(
                f"Key Vault {vault} could not {what} right now (HTTP {status}): {message}"
            )
        return KeyManagerError(f"Key Vault {vault} refused to {what} (HTTP {status}): {message}")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return TransientKeyManagerError(
            f"Key Vault {vault} unreachable while trying to {what}: {exc}"
        )
    return KeyManagerError(f"Key Vault {vault}: cannot {what}: {exc}")
