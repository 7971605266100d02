"""Unmodified Azure SDK clients pointed at one Key Vault emulator (the settings it needs, once),
for the emulator, key manager and end-to-end tests."""

from __future__ import annotations

from typing import Any

from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient

from controlplane.emulators.keyvault import EmulatorProcess

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
