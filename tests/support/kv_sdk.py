"""Unmodified Azure SDK clients pointed at one Key Vault emulator (the settings it needs, once),
for the emulator, key manager and end-to-end tests."""

from __future__ import annotations

import secrets
from typing import Any

from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient

from controlplane.emulators.keyvault import EmulatorProcess

# Options for SDK calls in tests: no retries (a refusal is the answer), and the emulator finishes
# a delete / recovery in 0.5 s where the SDK would poll every 2 s.
NO_RETRY = {"retry_total": 0}
POLL = {"_polling_interval": 0.1}


def unique_name(label: str) -> str:
    """A key name no other test uses on the shared emulator."""
    return f"{label}-{secrets.token_hex(4)}"


ADMIN = "tds-admin"
ADMIN_SECRET = "admin-secret-value"


class SdkFactory:
    """Builds unmodified SDK clients pointed at one emulator (the settings it needs, once)."""

    def __init__(self, emu: EmulatorProcess) -> None:
        self.emu = emu

    def secret_credential(self, client_id: str, secret: str) -> ClientSecretCredential:
        return ClientSecretCredential(
            self.emu.tenant_id,
            client_id,
            secret,
            authority=self.emu.authority_host,
            disable_instance_discovery=True,
            connection_verify=self.emu.ca_file,
        )

    def key_client(self, credential: TokenCredential, **kwargs: Any) -> KeyClient:
        return KeyClient(
            self.emu.vault_url,
            credential,
            verify_challenge_resource=False,
            connection_verify=self.emu.ca_file,
            **kwargs,
        )

    def crypto_client(
        self, key: KeyVaultKey | str, credential: TokenCredential, **kwargs: Any
    ) -> CryptographyClient:
        return CryptographyClient(
            key,
            credential,
            verify_challenge_resource=False,
            connection_verify=self.emu.ca_file,
            **kwargs,
        )

    def principal(self, client_id: str, roles: list[str], secret: str) -> ClientSecretCredential:
        self.emu.control.add_principal(client_id, roles, client_secret=secret)
        return self.secret_credential(client_id, secret)
