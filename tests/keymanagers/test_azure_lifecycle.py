"""The Azure Key Vault key manager's key lifecycle, soft delete, permission models, identity and
errors, against the emulator process with the unmodified SDK.

Behaviours of Key Vault these tests rely on, and where they are documented, are listed in the
emulator's tests (tests/emulator/); here each test says which one it exercises.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.keys import KeyClient
from azure_kv import SEED_PERMISSIONS, TRUST_DOMAIN, principal

from controlplane.emulators.keyvault import EmulatorProcess
from controlplane.keymanagers import KeyManagerContext, build_key_manager
from controlplane.keymanagers.azure_errors import (
    FirewallDeniedError,
    KeyStateError,
    PermissionDeniedError,
)
from controlplane.keymanagers.azure_key_vault import (
    TAG_KEY_ID,
    TAG_PROBE,
    TAG_SERVER_ID,
    TAG_TRUST_DOMAIN,
    AzureKeyVaultKeyManager,
)
from controlplane.keymanagers.base import KeyType, SigningAlgorithm
from controlplane.keymanagers.signatures import digest as hash_digest
from controlplane.keymanagers.signatures import hash_for_key_type

from contract import assert_signs_and_verifies
from support.azure import SHARED

pytestmark = pytest.mark.usefixtures("reset_kv")


def _names(admin: KeyClient) -> set[str]:
    return {p.name or "" for p in admin.list_properties_of_keys()}


def _deleted(admin: KeyClient) -> set[str]:
    return {d.name or "" for d in admin.list_deleted_keys()}


def _ops(kv: EmulatorProcess, since: int, name: str) -> list[str]:
    return [e["operationName"] for e in kv.control.audit(since) if e["keyName"] == name]


def _wait_until_deleted(admin: KeyClient, name: str) -> None:
    """What the SDK's delete poller does: GET /deletedkeys/{name} until it answers."""
    deadline = time.monotonic() + 10
    while name not in _deleted(admin):
        assert time.monotonic() < deadline, f"{name} never finished deleting"
        time.sleep(0.05)


# -- release: delete now, purge in the 48 h sweep ------------------------------------------


def _sweep(manager: AzureKeyVaultKeyManager) -> list[str]:
    """The 48 h orphan sweep with nothing orphaned: it purges the manager's deleted keys."""
    return manager.delete_orphaned_keys(set(), datetime.now(UTC) - timedelta(days=365))


def test_release_deletes_and_the_sweep_purges(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    manager = make_manager()
    manager.generate_key("x509-ca-old", KeyType.EC_P256)
    name = manager.key_name("x509-ca-old")
    since = len(kv.control.audit())
    assert manager.release_key("x509-ca-old") is True
    assert _ops(kv, since, name) == ["KeyDelete"]  # one call, as SPIRE's plugin makes
    assert name not in _names(admin)
    _wait_until_deleted(admin, name)
    _sweep(manager)
    assert name not in _deleted(admin)


def test_release_after_a_restart_is_idempotent(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    """A server restarted between its release and saving that it happened releases again: the
    key is gone (404), which is fine."""
    first = make_manager(server_id="restarting")
    first.generate_key("jwt-restart", KeyType.EC_P256)
    name = first.key_name("jwt-restart")
    assert first.release_key("jwt-restart") is True
    first.close()
    again = make_manager(server_id="restarting")
    assert again.release_key("jwt-restart") is True
    _wait_until_deleted(admin, name)
    _sweep(again)
    assert name not in _deleted(admin)


def test_a_key_still_being_deleted_is_purged_by_a_later_sweep(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    """409 ObjectIsBeingDeleted on the purge: left for the next sweep, no error."""
    kv.control.set_soft_delete(delete_delay=3)  # reset_kv puts it back
    manager = make_manager()
    manager.generate_key("x509-ca-slow", KeyType.EC_P256)
    name = manager.key_name("x509-ca-slow")
    manager.release_key("x509-ca-slow")
    _sweep(manager)  # not listed as deleted yet: nothing to purge
    _wait_until_deleted(admin, name)
    _sweep(manager)
    assert name not in _deleted(admin)


def test_purge_protection_leaves_released_keys_to_the_retention_period(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    """Purge protection (recovery level "Recoverable"): the key manager does not even try."""
    kv.control.set_soft_delete(purge_protection=True)
    manager = make_manager()
    manager.generate_key("x509-ca-kept", KeyType.EC_P256)
    name = manager.key_name("x509-ca-kept")
    since = len(kv.control.audit())
    manager.release_key("x509-ca-kept")
    _wait_until_deleted(admin, name)
    _sweep(manager)
    assert _ops(kv, since, name) == ["KeyDelete"]
    assert name in _deleted(admin)
    manager.check()  # the probe cannot be purged either: the check still passes


def test_without_purge_permission_keys_are_deleted_not_purged(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    """The seed's access policy (Get, List, Create, Update, Delete, Sign) has no Purge."""
    kv.control.set_permission_model("access-policy")
    client_id, secret = principal(kv, [], SEED_PERMISSIONS)
    td = f"nopurge-{secrets.token_hex(3)}.example.org"
    manager = make_manager(client_id=client_id, secret=secret, trust_domain=td)
    for key_id in ("x509-ca-a", "x509-ca-b"):
        manager.generate_key(key_id, KeyType.EC_P256)
        manager.release_key(key_id)
        _wait_until_deleted(admin, manager.key_name(key_id))
    since = len(kv.control.audit())
    _sweep(manager)  # one purge refused (403 AccessDenied): no second attempt
    purges = [e for e in kv.control.audit(since) if e["operationName"] == "KeyPurge"]
    assert len(purges) == 1 and purges[0]["httpStatusCode"] == 403
    assert {manager.key_name("x509-ca-a"), manager.key_name("x509-ca-b")} <= _deleted(admin)
    manager.check()  # the probe is deleted, not purged: the check passes all the same


def test_releasing_a_shared_key_disables_its_old_versions(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    """Key Vault cannot delete one version; a shared name keeps its newest two generations
    (bursts of versions made within 15 minutes: racing servers) enabled."""
    td = f"rel-{secrets.token_hex(3)}.example.org"
    manager = make_manager(server_id="server-a", trust_domain=td, config={"sharedKeys": SHARED})
    versions = []
    for minutes in (-60, -40, -20, 0):  # each version too old for the next to reuse
        kv.control.set_clock_offset(minutes * 60)
        versions.append(manager.generate_key("jwt-signer-a", KeyType.EC_P256).provider_ref[-32:])
    name = manager.key_name("jwt-signer-a")
    # Another server raced the newest generation: its version belongs to that generation.
    racer = admin.create_ec_key(
        name,
        hardware_protected=True,
        tags={TAG_TRUST_DOMAIN: td, TAG_SERVER_ID: "server-b", TAG_KEY_ID: "jwt-signer-a"},
    )
    kv.control.set_clock_offset(0)
    assert manager.release_key("jwt-signer-a") is True
    enabled = {
        p.version: p.enabled for p in admin.list_properties_of_key_versions(name) if p.version
    }
    assert enabled == {
        versions[0]: False,
        versions[1]: False,
        versions[2]: True,
        versions[3]: True,
        racer.properties.version: True,
    }
    assert name in _names(admin)  # the name stays: other servers sign with it


# -- refresh and orphans ------------------------------------------------------------------------


def test_refresh_touches_only_the_keys_in_use(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    manager = make_manager()
    for key_id in ("x509-ca-used", "x509-ca-unused"):
        manager.generate_key(key_id, KeyType.EC_P256)
    since = len(kv.control.audit())
    assert manager.refresh_own_keys(["x509-ca-used"]) == [manager.key_name("x509-ca-used")]
    touched = {e["keyName"] for e in kv.control.audit(since)}
    assert touched == {manager.key_name("x509-ca-used")}
    assert [e["operationName"] for e in kv.control.audit(since)] == ["KeyUpdate"]
    tags = admin.get_key(manager.key_name("x509-ca-used")).properties.tags
    assert tags and tags[TAG_KEY_ID] == "x509-ca-used" and tags["team"] == "identity"


def test_orphans_are_deleted_and_purged(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    td = f"orphans-{secrets.token_hex(3)}.example.org"
    manager = make_manager(server_id="orphan-server", trust_domain=td)
    other = make_manager(server_id="other-server", trust_domain=td)
    kv.control.set_clock_offset(-3 * 3600)  # made three hours ago
    manager.generate_key("x509-ca-kept", KeyType.EC_P256)
    manager.generate_key("x509-ca-orphan", KeyType.EC_P256)
    other.generate_key("x509-ca-not-mine", KeyType.EC_P256)
    probe = admin.create_ec_key(
        f"spire-probe-{secrets.token_hex(4)}",
        hardware_protected=True,
        expires_on=datetime.now(UTC) - timedelta(hours=2),
        tags={TAG_TRUST_DOMAIN: td, TAG_SERVER_ID: "orphan-server", TAG_PROBE: "check"},
    )
    kv.control.set_clock_offset(0)
    manager.generate_key("x509-ca-new", KeyType.EC_P256)  # not in `keep`, but recent
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    deleted = manager.delete_orphaned_keys({"x509-ca-kept"}, cutoff)
    assert sorted(deleted) == sorted([manager.key_name("x509-ca-orphan"), probe.name])
    names = _names(admin)
    for kept in ("x509-ca-kept", "x509-ca-new"):
        assert manager.key_name(kept) in names
    assert other.key_name("x509-ca-not-mine") in names
    _wait_until_deleted(admin, manager.key_name("x509-ca-orphan"))
    _wait_until_deleted(admin, probe.name or "")
    assert manager.delete_orphaned_keys({"x509-ca-kept"}, cutoff) == []  # purges what it deleted
    assert not {manager.key_name("x509-ca-orphan"), probe.name} & _deleted(admin)


# -- soft delete: recover only when the name is held, wait out running operations ----------


def test_a_name_being_deleted_is_waited_for_then_recovered(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    """Create on a name being deleted: 409 ObjectIsBeingDeleted (wait), then
    ObjectIsDeletedButRecoverable (recover), then the new version."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # records the back-off, lets a little real time pass
        waits.append(seconds)
        time.sleep(0.1)

    manager = make_manager(sleep=sleep)
    manager.generate_key("comeback", KeyType.EC_P256)
    name = manager.key_name("comeback")
    admin.begin_delete_key(name)  # not waited for: still being deleted
    pub = manager.generate_key("comeback", KeyType.EC_P256)
    assert waits, "the running deletion was not waited for"
    assert_signs_and_verifies(manager, pub)
    recovered = [e for e in kv.control.audit() if e["keyName"] == name]
    assert [e["operationName"] for e in recovered].count("KeyRecover") == 1


def test_servers_recovering_one_shared_name_at_once_both_get_the_key(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    """Parallel recoveries conflict (409) and being-recovered creates conflict
    (ObjectIsBeingRecovered): both are waited out."""
    td = f"recover-{secrets.token_hex(3)}.example.org"
    shared = {"sharedKeys": SHARED}
    a = make_manager(server_id="server-a", trust_domain=td, config=shared)
    b = make_manager(server_id="server-b", trust_domain=td, config=shared)
    kv.control.set_clock_offset(-3600)
    a.generate_key("jwt-signer-b", KeyType.EC_P256)
    kv.control.set_clock_offset(0)
    name = a.key_name("jwt-signer-b")
    admin.begin_delete_key(name).wait()  # e.g. another server's stale-key cleanup
    results: dict[str, Any] = {}

    def generate(label: str, manager: AzureKeyVaultKeyManager) -> None:
        try:
            results[label] = manager.generate_key("jwt-signer-b", KeyType.EC_P256)
        except Exception as exc:  # noqa: BLE001 - reported below
            results[label] = exc

    threads = [threading.Thread(target=generate, args=x) for x in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in results.values() if isinstance(r, Exception)], results
    assert results["a"].public_key_der == results["b"].public_key_der


# -- errors that name the cause ----------------------------------------------------------------


def test_access_policy_vault_check_passes_with_the_seed_permissions(
    kv: EmulatorProcess, make_manager: Any
) -> None:
    kv.control.set_permission_model("access-policy")
    client_id, secret = principal(kv, [], SEED_PERMISSIONS)
    manager = make_manager(client_id=client_id, secret=secret)
    manager.check()
    pub = manager.generate_key("x509-ca-policy", KeyType.EC_P256)
    assert_signs_and_verifies(manager, pub)


@pytest.mark.parametrize("missing", ["get", "list", "create", "update", "delete", "sign"])
def test_access_policy_check_names_the_missing_permission(
    kv: EmulatorProcess, make_manager: Any, missing: str
) -> None:
    kv.control.set_permission_model("access-policy")
    granted = [p for p in SEED_PERMISSIONS if p != missing]
    client_id, secret = principal(kv, ["Key Vault Administrator"], granted)  # roles ignored
    manager = make_manager(client_id=client_id, secret=secret)
    with pytest.raises(PermissionDeniedError) as info:
        manager.check()
    message = str(info.value)
    assert f"key permission '{missing.capitalize()}'" in message
    assert "access policies" in message and "RBAC role" not in message


def test_rbac_check_names_the_missing_role_not_a_permission(
    kv: EmulatorProcess, make_manager: Any
) -> None:
    client_id, secret = principal(kv, ["Key Vault Crypto User"], SEED_PERMISSIONS)
    manager = make_manager(client_id=client_id, secret=secret)
    with pytest.raises(PermissionDeniedError) as info:
        manager.check()
    message = str(info.value)
    assert "'Microsoft.KeyVault/vaults/keys/create/action'" in message
    assert "'Key Vault Crypto Officer'" in message and "access polic" not in message


def test_firewall_refusal_names_the_network_rules(kv: EmulatorProcess, make_manager: Any) -> None:
    manager = make_manager()
    kv.control.set_network_rules("Deny", ["192.0.2.0/24"])
    with pytest.raises(FirewallDeniedError) as info:
        manager.check()
    message = str(info.value)
    assert "firewall" in message and "127.0.0.1" in message
    assert "RBAC" not in message and "access polic" not in message


def test_a_disabled_key_is_a_key_state_error_not_a_permission(
    admin: KeyClient, make_manager: Any
) -> None:
    manager = make_manager()
    pub = manager.generate_key("x509-ca-off", KeyType.EC_P256)
    admin.update_key_properties(manager.key_name("x509-ca-off"), enabled=False)
    alg = SigningAlgorithm(hash_for_key_type(pub.key_type))
    with pytest.raises(KeyStateError) as info:
        manager.sign_digest("x509-ca-off", hash_digest(b"x", alg.hash), alg)
    assert "disabled" in str(info.value) and not isinstance(info.value, PermissionDeniedError)


# -- names ------------------------------------------------------------------------------------


def test_key_names_compare_case_insensitively(admin: KeyClient, make_manager: Any) -> None:
    """Key Vault names are case-insensitive: a key named in other letters is still ours."""
    td = f"case-{secrets.token_hex(3)}.example.org"
    manager = make_manager(server_id="case-server", trust_domain=td)
    name = manager.key_name("x509-ca-case").upper()
    admin.create_ec_key(
        name,
        hardware_protected=True,
        tags={
            TAG_TRUST_DOMAIN: td,
            TAG_SERVER_ID: "case-server",
            TAG_KEY_ID: "x509-ca-case",
        },
    )
    assert [k.key_id for k in manager.list_public_keys()] == ["x509-ca-case"]
    assert manager.get_public_key("x509-ca-case").provider_ref.split("/")[-2] == name
    other = make_manager(server_id="case-cleaner", trust_domain=td)
    assert other.delete_stale_keys({name.lower()}, max_age=timedelta(0)) == []


# -- managed identity through IMDS, as on a VM or an AKS node -------------------------------


def test_managed_identity_through_imds_from_the_environment(
    kv: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a VM or AKS node identity gets (the SDK reads AZURE_POD_IDENTITY_AUTHORITY_HOST for
    the IMDS address), like test_workload_identity_from_environment."""
    client_id = f"vm-{secrets.token_hex(4)}"
    kv.control.add_principal(client_id, ["Key Vault Crypto Officer"], managed_identity="user")
    for name in ("AZURE_FEDERATED_TOKEN_FILE", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in kv.imds_env().items():
        monkeypatch.setenv(name, value)
    context = KeyManagerContext(
        data_dir=Path("/nonexistent"), kek=b"k" * 32, trust_domain=TRUST_DOMAIN, server_id="vm"
    )
    spec = {
        "extensions": {
            "azureKeyVault": {
                "vaultURL": kv.vault_url,
                "credentials": {"managedIdentity": {"clientID": client_id}},
            }
        }
    }
    manager = build_key_manager(spec, context)
    try:
        assert isinstance(manager, AzureKeyVaultKeyManager)
        manager.check()
        key = manager.generate_key(f"jwt-{secrets.token_hex(3)}", KeyType.EC_P256)
        assert_signs_and_verifies(manager, key)
    finally:
        manager.close()
    events = [e for e in kv.control.audit() if e["operationName"] == "KeySign"]
    assert events[-1]["identity"]["claim"]["appid"] == client_id


# -- shared keys: racing servers agree without relying on listing order ----------------------


@pytest.mark.parametrize("round_", range(3))
def test_servers_racing_to_create_a_shared_key_agree(make_manager: Any, round_: int) -> None:
    """Both found nothing fresh and created a version at once. The emulator lists versions by
    version id (no order is defined), so agreement must come from `created` and the current
    version (what GET answers), which every server sees alike."""
    td = f"race-{secrets.token_hex(3)}.example.org"
    managers = [
        make_manager(server_id=f"server-{i}", trust_domain=td, config={"sharedKeys": SHARED})
        for i in range(2)
    ]
    barrier = threading.Barrier(len(managers))
    results: list[Any] = [None] * len(managers)

    def generate(i: int) -> None:
        barrier.wait()
        results[i] = managers[i].generate_key("jwt-signer-b", KeyType.EC_P256)

    threads = [threading.Thread(target=generate, args=(i,)) for i in range(len(managers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0].public_key_der == results[1].public_key_der
    restarted = make_manager(server_id="server-0", trust_domain=td, config={"sharedKeys": SHARED})
    assert restarted.get_public_key("jwt-signer-b").public_key_der == results[0].public_key_der
