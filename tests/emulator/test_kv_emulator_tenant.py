"""Two emulated vaults of one tenant (--tenant-dir): one credential and one CA for both,
keys and role assignments per vault. This is how a server is moved from vault A to vault B."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient

from controlplane.emulators.keyvault import start_emulator

APP = "tds-tenant-app"
SECRET = "tenant-app-secret"


def test_two_vaults_share_a_tenant_not_keys(tmp_path: Path) -> None:
    tenant = tmp_path / "tenant"
    a = start_emulator(tmp_path / "a", tenant_dir=tenant, principals={APP: ["administrator"]})
    try:
        b = start_emulator(tmp_path / "b", tenant_dir=tenant, principals={APP: ["crypto-user"]})
        try:
            assert a.tenant_id == b.tenant_id and a.ca_file == b.ca_file
            assert a.vault_url != b.vault_url
            a.control.add_principal(APP, client_secret=SECRET)
            # Tokens come from vault A's Entra endpoint only, as from one real tenant.
            credential = ClientSecretCredential(
                a.tenant_id,
                APP,
                SECRET,
                authority=a.authority_host,
                disable_instance_discovery=True,
                connection_verify=a.ca_file,
            )
            clients = [
                KeyClient(
                    e.vault_url,
                    credential,
                    verify_challenge_resource=False,
                    connection_verify=a.ca_file,
                )
                for e in (a, b)
            ]
            clients[0].create_ec_key("only-in-a", hardware_protected=True)
            assert [p.name for p in clients[0].list_properties_of_keys()] == ["only-in-a"]
            assert list(clients[1].list_properties_of_keys()) == []
            # Role assignments are per vault: the same app may only read and sign in B.
            with pytest.raises(HttpResponseError) as denied:
                clients[1].create_ec_key("not-allowed", hardware_protected=True)
            assert denied.value.status_code == 403
        finally:
            b.stop()
    finally:
        a.stop()
