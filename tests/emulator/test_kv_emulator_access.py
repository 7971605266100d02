"""The two permission models and the firewall, through the unmodified SDK."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys.crypto import SignatureAlgorithm

from controlplane.emulators.keyvault import EmulatorProcess, start_emulator

from support.kv_sdk import ADMIN, ADMIN_SECRET, NO_RETRY, POLL, SdkFactory, unique_name

SEED_PERMISSIONS = ["get", "list", "create", "update", "delete", "sign"]  # seed 000


@pytest.fixture(scope="module")
def policy_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A vault on the legacy access policy model."""
    emu = start_emulator(
        tmp_path_factory.mktemp("kv-policies"),
        permission_model="access-policy",
        access_policies={ADMIN: ["all"]},
        principals={ADMIN: ["administrator"]},
        soft_delete={"delete_delay": 0, "recover_delay": 0},
    )
    try:
        emu.control.add_principal(ADMIN, client_secret=ADMIN_SECRET)
        yield emu
    finally:
        emu.stop()


# -- access policies ------------------------------------------------------------------------
# Source: learn.microsoft.com "Azure Key Vault keys details", Key access control (the key
# permissions get, list, update, create, delete, recover, sign, verify, purge, ...) and
# "Migrate to Azure RBAC" (with RBAC off, access policies decide; role assignments do not).
# A denial is 403 Forbidden, innererror AccessDenied, "The user, group or application
# '...' does not have keys <permission> permission on key vault '<vault>;location=...'" (the
# service's answer, as quoted in learn.microsoft.com Q&A and provider issues).


def test_the_seed_access_policy_does_everything_the_server_needs(
    policy_vault: EmulatorProcess,
) -> None:
    sdk = SdkFactory(policy_vault)
    client_id = unique_name("seed")
    policy_vault.control.add_principal(
        client_id, key_permissions=SEED_PERMISSIONS, client_secret="pw"
    )
    credential = sdk.secret_credential(client_id, "pw")
    client = sdk.key_client(credential, **NO_RETRY)
    key = client.create_ec_key(unique_name("k"), hardware_protected=True, tags={"a": "b"})
    assert key.name in {p.name for p in client.list_properties_of_keys()}
    client.update_key_properties(key.name, tags={"a": "c"})
    sdk.crypto_client(key.id, credential).sign(
        SignatureAlgorithm.es256, hashlib.sha256(b"seed").digest()
    )
    client.begin_delete_key(key.name, **POLL).wait()
    with pytest.raises(HttpResponseError) as info:
        client.purge_deleted_key(key.name)  # Purge is not in the seed's list
    assert info.value.status_code == 403
    assert info.value.response is not None
    error = info.value.response.json()["error"]
    assert error["innererror"]["code"] == "AccessDenied"
    assert "does not have keys purge permission on key vault" in error["message"]


def test_role_assignments_do_not_count_on_an_access_policy_vault(
    policy_vault: EmulatorProcess,
) -> None:
    sdk = SdkFactory(policy_vault)
    client_id = unique_name("rbac-only")
    policy_vault.control.add_principal(
        client_id, ["Key Vault Administrator"], key_permissions=["get"], client_secret="pw"
    )
    client = sdk.key_client(sdk.secret_credential(client_id, "pw"), **NO_RETRY)
    with pytest.raises(HttpResponseError) as info:
        list(client.list_properties_of_keys())
    assert info.value.response is not None
    error = info.value.response.json()["error"]
    assert error["innererror"]["code"] == "AccessDenied"
    assert "keys list permission" in error["message"]


def test_access_policies_do_not_count_on_an_rbac_vault(policy_vault: EmulatorProcess) -> None:
    sdk = SdkFactory(policy_vault)
    client_id = unique_name("policy-only")
    policy_vault.control.add_principal(client_id, [], key_permissions=["all"], client_secret="pw")
    client = sdk.key_client(sdk.secret_credential(client_id, "pw"), **NO_RETRY)
    list(client.list_properties_of_keys())
    policy_vault.control.set_permission_model("rbac")
    try:
        with pytest.raises(HttpResponseError) as info:
            list(client.list_properties_of_keys())
        assert info.value.response is not None
        assert info.value.response.json()["error"]["innererror"]["code"] == "ForbiddenByRbac"
    finally:
        policy_vault.control.set_permission_model("access-policy")


# -- firewall -------------------------------------------------------------------------------
# Source: learn.microsoft.com "Common error codes for Azure Key Vault" (ForbiddenByFirewall:
# "Client address is not authorized and caller is not a trusted service.") and "Configure
# Azure Key Vault networking settings" (default action Deny with IP rules).


def test_the_firewall_refuses_an_address_outside_its_rules(
    policy_vault: EmulatorProcess,
) -> None:
    sdk = SdkFactory(policy_vault)
    client = sdk.key_client(sdk.secret_credential(ADMIN, ADMIN_SECRET), **NO_RETRY)
    list(client.list_properties_of_keys())
    policy_vault.control.set_network_rules("Deny", ["10.0.0.0/8"])
    try:
        with pytest.raises(HttpResponseError) as info:
            list(client.list_properties_of_keys())
        assert info.value.status_code == 403
        assert info.value.response is not None
        error = info.value.response.json()["error"]
        assert error["innererror"]["code"] == "ForbiddenByFirewall"
        assert "Client address: 127.0.0.1" in error["message"]
        policy_vault.control.set_network_rules("Deny", ["127.0.0.0/8"])
        list(client.list_properties_of_keys())
    finally:
        policy_vault.control.set_network_rules("Allow")
