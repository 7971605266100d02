"""Helpers for the Azure Key Vault key manager tests (the emulator, its principals, configs).

The fixtures using them (`kv`, `admin`, `make_manager`) are in conftest.py.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

from controlplane.emulators.keyvault import EmulatorProcess

TRUST_DOMAIN = "example.org"  # dotted on purpose: cleanup must compare the raw name
ADMIN = str(uuid.UUID(int=1))
ADMIN_SECRET = "admin-secret"
SERVER_APP = str(uuid.UUID(int=2))
SERVER_SECRET = "server-secret"
BOTH_ROLES = ["Key Vault Crypto Officer", "Key Vault Crypto User"]
# The legacy access policy of seed 000: "Get, List, Create, Update, Delete, Sign".
SEED_PERMISSIONS = ["get", "list", "create", "update", "delete", "sign"]


class Sleeps:
    """Records back-off waits instead of sleeping (assert on them, not on time)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def secret_file(tmp_path: Path, secret: str) -> str:
    path = tmp_path / f"secret-{secrets.token_hex(4)}"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return str(path)


def config(
    kv: EmulatorProcess, secret_path: str, client_id: str = SERVER_APP, **extra: Any
) -> dict[str, Any]:
    return {
        "vaultURL": kv.vault_url,
        "keyTags": {"team": "identity"},
        "credentials": {
            "clientSecret": {
                "tenantID": kv.tenant_id,
                "clientID": client_id,
                "clientSecretFile": secret_path,
            }
        },
        **extra,
    }


def principal(
    kv: EmulatorProcess, roles: list[str], key_permissions: list[str] | None = None
) -> tuple[str, str]:
    client_id, secret = str(uuid.uuid4()), secrets.token_urlsafe(12)
    kv.control.add_principal(
        client_id, roles, key_permissions=key_permissions, client_secret=secret
    )
    return client_id, secret
