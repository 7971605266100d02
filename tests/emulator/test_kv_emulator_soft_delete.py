"""Soft delete and recovery, names and versions, tags, key states: the emulator against the
unmodified SDK. Each test names the document it follows."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import SignatureAlgorithm

from controlplane.emulators.keyvault import EmulatorProcess, start_emulator

from support.kv_sdk import ADMIN, ADMIN_SECRET, NO_RETRY, POLL, SdkFactory, unique_name

DELAY = 1.0


def _error(exc: HttpResponseError) -> dict[str, object]:
    assert exc.response is not None
    error: dict[str, object] = exc.response.json()["error"]
    return error


def _inner(exc: HttpResponseError) -> str | None:
    inner = _error(exc).get("innererror")
    return inner.get("code") if isinstance(inner, dict) else None


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """Deletes and recoveries that take a second, as the service's do."""
    emu = start_emulator(
        tmp_path_factory.mktemp("kv-slow"),
        principals={ADMIN: ["administrator"]},
        soft_delete={"delete_delay": DELAY, "recover_delay": DELAY},
        limits={"hsm_create": 1000},
    )
    try:
        emu.control.add_principal(ADMIN, client_secret=ADMIN_SECRET)
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def client(slow: EmulatorProcess) -> KeyClient:
    sdk = SdkFactory(slow)
    return sdk.key_client(sdk.secret_credential(ADMIN, ADMIN_SECRET), **NO_RETRY)


# -- delete and recover take time -----------------------------------------------------------
# Source: azure-sdk-for-python sdk/keyvault/azure-keyvault-keys/azure/keyvault/keys/_shared/
# _polling.py (DeleteRecoverPollingMethod): "When a resource is deleted, Key Vault immediately
# removes it from its collection. However, the resource will not immediately appear in the
# deleted collection. Key Vault will therefore respond 404 to GET requests for the deleted
# resource ... while recovering a deleted resource, Key Vault will respond 404 to GET requests
# for the non-deleted resource".


def test_a_key_being_deleted_is_in_neither_collection_until_done(client: KeyClient) -> None:
    name = unique_name("deleting")
    client.create_ec_key(name, hardware_protected=True)
    poller = client.begin_delete_key(name, **POLL)
    with pytest.raises(ResourceNotFoundError):
        client.get_key(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key(name)
    assert name not in {d.name for d in client.list_deleted_keys()}
    # Purging or re-creating it now: 409 Conflict "Key is currently being deleted."
    # (ObjectIsBeingDeleted; azure-sdk-for-js keyvault-keys recordings of a purge during delete).
    for attempt in (
        lambda: client.purge_deleted_key(name),
        lambda: client.create_ec_key(name, hardware_protected=True),
    ):
        with pytest.raises(HttpResponseError) as info:
            attempt()
        assert info.value.status_code == 409 and _inner(info.value) == "ObjectIsBeingDeleted"
    poller.wait()
    assert client.get_deleted_key(name).name == name


def test_a_soft_deleted_name_cannot_be_reused_until_recovered(client: KeyClient) -> None:
    """409 ObjectIsDeletedButRecoverable (learn.microsoft.com "Azure Key Vault soft-delete
    overview": a deleted object's name cannot be reused until it is recovered or purged)."""
    name = unique_name("held")
    first = client.create_ec_key(name, hardware_protected=True)
    client.begin_delete_key(name, **POLL).wait()
    with pytest.raises(HttpResponseError) as info:
        client.create_ec_key(name, hardware_protected=True)
    assert info.value.status_code == 409
    assert _inner(info.value) == "ObjectIsDeletedButRecoverable"
    poller = client.begin_recover_deleted_key(name, **POLL)
    # While it is being recovered: GET 404, a new version is refused with
    # ObjectIsBeingRecovered (hashicorp/terraform-provider-azurerm#12285, Azure/azure-sdk-for-net
    # #31581: "... is currently being recovered and cannot be re-created; retry later.").
    with pytest.raises(ResourceNotFoundError):
        client.get_key(name)
    with pytest.raises(HttpResponseError) as info:
        client.create_ec_key(name, hardware_protected=True)
    assert info.value.status_code == 409 and _inner(info.value) == "ObjectIsBeingRecovered"
    poller.wait()
    assert client.get_key(name).properties.version == first.properties.version
    assert client.create_ec_key(name, hardware_protected=True).name == name


def test_parallel_recoveries_conflict(client: KeyClient) -> None:
    """The second of two parallel recoveries is a 409 "There was a conflict while recovering the
    soft-deleted key ..." without an inner code (Azure/azure-sdk-for-net#38464)."""
    name = unique_name("twice")
    client.create_ec_key(name, hardware_protected=True)
    client.begin_delete_key(name, **POLL).wait()
    results: list[object] = []

    def recover() -> None:
        try:
            results.append(client.begin_recover_deleted_key(name, **POLL))
        except HttpResponseError as exc:
            results.append(exc)

    threads = [threading.Thread(target=recover) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, HttpResponseError)]
    assert len(errors) == 1 and errors[0].status_code == 409
    assert "conflict while recovering" in str(_error(errors[0])["message"])
    assert _inner(errors[0]) is None


# -- purge protection -----------------------------------------------------------------------
# Source: learn.microsoft.com "Azure Key Vault soft-delete overview" (purge protection: no
# purge until the retention period ends); the service's answer, 403 Forbidden 'Operation
# "purge" is not allowed because purge protection is enabled for this vault.'; the REST spec's
# DeletionRecoveryLevel (keys.json): "Recoverable" / "CustomizedRecoverable" when purging is
# not permitted, "+Purgeable" when it is.


def test_purge_protection_refuses_purge_and_shows_in_the_recovery_level(tmp_path: Path) -> None:
    with start_emulator(
        tmp_path / "protected",
        principals={ADMIN: ["administrator"]},
        soft_delete={"purge_protection": True, "retention_days": 7, "delete_delay": 0},
    ) as emu:
        emu.control.add_principal(ADMIN, client_secret=ADMIN_SECRET)
        sdk = SdkFactory(emu)
        client = sdk.key_client(sdk.secret_credential(ADMIN, ADMIN_SECRET), **NO_RETRY)
        key = client.create_ec_key(unique_name("kept"), hardware_protected=True)
        assert key.properties.recovery_level == "CustomizedRecoverable"
        assert key.properties.recoverable_days == 7
        client.begin_delete_key(key.name, **POLL).wait()
        with pytest.raises(HttpResponseError) as info:
            client.purge_deleted_key(key.name)
        assert info.value.status_code == 403
        assert "purge protection" in str(_error(info.value)["message"])
        assert key.name in {d.name for d in client.list_deleted_keys()}
        emu.control.set_soft_delete(purge_protection=False, retention_days=90)
        assert client.get_deleted_key(key.name).properties.recovery_level == (
            "Recoverable+Purgeable"
        )
        client.purge_deleted_key(key.name)


# -- names, versions, tags --------------------------------------------------------------------


def test_key_names_are_case_insensitive(client: KeyClient) -> None:
    """learn.microsoft.com "About keys, secrets and certificates" (Object identifiers): object
    names are case-insensitive."""
    name = unique_name("MixedCase")
    key = client.create_ec_key(name, hardware_protected=True)
    again = client.get_key(name.lower())
    assert again.properties.version == key.properties.version
    assert again.name == name  # spelled as created
    second = client.create_ec_key(name.upper(), hardware_protected=True)
    assert second.name == name
    versions = {p.version for p in client.list_properties_of_key_versions(name.lower())}
    assert versions == {key.properties.version, second.properties.version}
    assert [p.name for p in client.list_properties_of_keys()].count(name) == 1


def test_versions_are_not_listed_in_creation_order(client: KeyClient) -> None:
    """The REST spec (GetKeyVersions) promises no order; the emulator lists by version id, so
    a client relying on creation order breaks here as it would in Azure."""
    name = unique_name("order")
    made = [
        client.create_ec_key(name, hardware_protected=True).properties.version for _ in range(6)
    ]
    listed = [p.version for p in client.list_properties_of_key_versions(name)]
    assert sorted(listed) == listed and set(listed) == set(made)


def test_tag_limits(client: KeyClient) -> None:
    """learn.microsoft.com "Azure Key Vault keys details", Key tags: up to 15 tags, names and
    values up to 256 characters."""
    ok = {f"t{i}": "v" * 256 for i in range(14)} | {"n" * 256: "v"}
    assert (
        len(
            client.create_ec_key(
                unique_name("tags"), hardware_protected=True, tags=ok
            ).properties.tags
            or {}
        )
        == 15
    )
    for bad in (
        {f"t{i}": "v" for i in range(16)},
        {"n" * 257: "v"},
        {"t": "v" * 257},
    ):
        with pytest.raises(HttpResponseError) as info:
            client.create_ec_key(unique_name("tags"), hardware_protected=True, tags=bad)
        assert info.value.status_code == 400
    key = client.create_ec_key(unique_name("tags"), hardware_protected=True)
    with pytest.raises(HttpResponseError) as info:
        client.update_key_properties(key.name, tags={f"t{i}": "v" for i in range(16)})
    assert info.value.status_code == 400


# -- key states -------------------------------------------------------------------------------
# Source: learn.microsoft.com "Azure Key Vault keys details", Key attributes and Date-time
# controlled operations: outside nbf/exp a key does not sign (403) but still verifies; a
# disabled key does nothing. The inner codes are the service's (e.g. KeyDisabled).


def test_key_state_refusals(client: KeyClient, slow: EmulatorProcess) -> None:
    sdk = SdkFactory(slow)
    credential = sdk.secret_credential(ADMIN, ADMIN_SECRET)
    name = unique_name("state")
    key = client.create_ec_key(name, hardware_protected=True)
    crypto = sdk.crypto_client(key.id, credential, **NO_RETRY)
    digest = hashlib.sha256(b"state").digest()
    signature = crypto.sign(SignatureAlgorithm.es256, digest).signature
    client.update_key_properties(name, enabled=False)
    with pytest.raises(HttpResponseError) as info:
        crypto.sign(SignatureAlgorithm.es256, digest)
    assert info.value.status_code == 403 and _inner(info.value) == "KeyDisabled"
    from datetime import UTC, datetime, timedelta

    client.update_key_properties(
        name, enabled=True, expires_on=datetime.now(UTC) - timedelta(minutes=1)
    )
    with pytest.raises(HttpResponseError) as info:
        crypto.sign(SignatureAlgorithm.es256, digest)
    assert info.value.status_code == 403 and _inner(info.value) == "KeyExpired"
    assert crypto.verify(SignatureAlgorithm.es256, digest, signature).is_valid
