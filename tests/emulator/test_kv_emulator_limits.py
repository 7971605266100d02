"""Tiers, RBAC, service limits, injected faults and restarts of the emulator, via the SDK."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import SignatureAlgorithm

from controlplane.emulators.keyvault import EmulatorProcess, start_emulator

from support.kv_sdk import ADMIN, ADMIN_SECRET, NO_RETRY, POLL, SdkFactory, unique_name


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """An emulator with tiny limits so tests reach them with a handful of calls."""
    emu = start_emulator(
        tmp_path_factory.mktemp("kv-limited"),
        principals={ADMIN: ["administrator"]},
        limits={"window_seconds": 2, "hsm_create": 3, "hsm_key": 5, "hsm_key_rsa4096": 2},
    )
    try:
        emu.control.add_principal(ADMIN, client_secret=ADMIN_SECRET)
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def lsdk(limited: EmulatorProcess) -> Iterator[SdkFactory]:
    yield SdkFactory(limited)
    limited.control.clear_faults()


# -- tier -----------------------------------------------------------------------------------


def test_standard_tier_refuses_hsm_keys(tmp_path: Path) -> None:
    with start_emulator(
        tmp_path / "std", sku="standard", principals={"app": ["crypto-officer"]}
    ) as emu:
        emu.control.add_principal("app", client_secret="pw")
        client = SdkFactory(emu).key_client(SdkFactory(emu).secret_credential("app", "pw"))
        with pytest.raises(HttpResponseError) as info:
            client.create_ec_key(unique_name("hsm"), hardware_protected=True)
        assert info.value.status_code == 400
        assert info.value.error is not None
        assert info.value.error.code == "BadParameter"
        assert "Hardware key operation not allowed on standard vault" in info.value.error.message
        # Software keys are fine on Standard.
        assert client.create_ec_key(unique_name("sw"), hardware_protected=False).key_type == "EC"


# -- RBAC -----------------------------------------------------------------------------------
# Source: learn.microsoft.com "Azure built-in roles for Security" (MicrosoftDocs/azure-docs
# articles/role-based-access-control/built-in-roles/security.md): Key Vault Crypto Officer is
# dataActions Microsoft.KeyVault/vaults/keys/*; Key Vault Crypto User is keys/read,
# update/action, backup/action, encrypt, decrypt, wrap, unwrap, sign/action, verify/action.
# Denials: 403 Forbidden, innererror ForbiddenByRbac, the message naming the data action.


def test_crypto_officer_is_keys_star_and_can_sign(
    emulator: EmulatorProcess, sdk: SdkFactory
) -> None:
    officer = sdk.principal(unique_name("officer"), ["Key Vault Crypto Officer"], "pw1")
    client = sdk.key_client(officer)
    key = client.create_ec_key(unique_name("officer-key"), hardware_protected=True)
    sig = sdk.crypto_client(key.id, officer).sign(
        SignatureAlgorithm.es256, hashlib.sha256(b"x").digest()
    )
    assert len(sig.signature) == 64
    client.update_key_properties(key.name, tags={"a": "b"})
    client.begin_delete_key(key.name, **POLL).wait()
    client.begin_recover_deleted_key(key.name, **POLL).wait()  # keys/recover/action
    client.begin_delete_key(key.name, **POLL).wait()
    client.purge_deleted_key(key.name)  # keys/purge/action


def test_crypto_user_cannot_create_but_can_sign_and_update(
    sdk: SdkFactory, admin_client: KeyClient
) -> None:
    user = sdk.principal(unique_name("user"), ["crypto-user"], "pw2")
    client = sdk.key_client(user)
    with pytest.raises(HttpResponseError) as info:
        client.create_ec_key(unique_name("denied"), hardware_protected=True)
    assert info.value.status_code == 403
    assert info.value.response is not None
    error = info.value.response.json()["error"]
    assert error["innererror"]["code"] == "ForbiddenByRbac"
    assert "Action: 'Microsoft.KeyVault/vaults/keys/create/action'" in error["message"]
    key = admin_client.create_ec_key(unique_name("usable"), hardware_protected=True)
    assert client.get_key(key.name).id == key.id
    sig = sdk.crypto_client(key.id, user).sign(
        SignatureAlgorithm.es256, hashlib.sha256(b"y").digest()
    )
    assert len(sig.signature) == 64
    assert client.update_key_properties(key.name, tags={"t": "1"}).properties.tags == {"t": "1"}
    with pytest.raises(HttpResponseError) as info:
        client.begin_delete_key(key.name)
    assert "keys/delete'" in info.value.response.json()["error"]["message"]  # type: ignore[union-attr]


def test_custom_role_without_sign_is_denied_the_sign_data_action(
    emulator: EmulatorProcess, sdk: SdkFactory, admin_client: KeyClient
) -> None:
    """A custom role (learn.microsoft.com "Azure custom roles": dataActions minus
    notDataActions): every key action but sign."""
    role = unique_name("no-sign-role")
    emulator.control.define_role(
        role, ["Microsoft.KeyVault/vaults/keys/*"], ["Microsoft.KeyVault/vaults/keys/sign/action"]
    )
    cred = sdk.principal(unique_name("custom"), [role], "pw4")
    key = sdk.key_client(cred).create_ec_key(unique_name("custom-key"), hardware_protected=True)
    with pytest.raises(HttpResponseError) as info:
        sdk.crypto_client(key.id, cred).sign(
            SignatureAlgorithm.es256, hashlib.sha256(b"z").digest()
        )
    assert info.value.status_code == 403
    assert info.value.response is not None
    body = info.value.response.json()["error"]
    assert body["innererror"]["code"] == "ForbiddenByRbac"
    assert "Action: 'Microsoft.KeyVault/vaults/keys/sign/action'" in body["message"]
    failures = [
        e
        for e in emulator.control.audit()
        if e["keyName"] == key.name and e["operationName"] == "KeySign"
    ]
    assert failures and failures[-1]["resultType"] == "Failure"
    assert failures[-1]["httpStatusCode"] == 403


def test_deleted_keys_need_keys_read_not_a_deletedkeys_action(
    sdk: SdkFactory, admin_client: KeyClient
) -> None:
    """Permissions page (role-based-access-control/permissions/security.md): there is no
    deletedkeys/* data action; Key Vault Reader (vaults/*/read) can list deleted keys."""
    key = admin_client.create_ec_key(unique_name("gone"), hardware_protected=True)
    admin_client.begin_delete_key(key.name, **POLL).wait()
    reader = sdk.key_client(sdk.principal(unique_name("reader"), ["Key Vault Reader"], "pw5"))
    assert key.name in {d.name for d in reader.list_deleted_keys()}
    with pytest.raises(HttpResponseError) as info:
        reader.purge_deleted_key(key.name)
    assert "keys/purge/action" in info.value.response.json()["error"]["message"]  # type: ignore[union-attr]


def test_role_change_takes_effect(sdk: SdkFactory, emulator: EmulatorProcess) -> None:
    client_id = unique_name("changing")
    client = sdk.key_client(sdk.principal(client_id, [], "pw3"))
    with pytest.raises(HttpResponseError) as info:
        list(client.list_properties_of_keys())
    assert info.value.status_code == 403
    emulator.control.set_roles(client_id, ["crypto-user"])
    list(client.list_properties_of_keys())


# -- service limits -------------------------------------------------------------------------


def test_hsm_create_limit_answers_429_with_retry_after(
    limited: EmulatorProcess, lsdk: SdkFactory
) -> None:
    client = lsdk.key_client(lsdk.secret_credential(ADMIN, ADMIN_SECRET), **NO_RETRY)
    statuses = []
    retry_after = None
    for i in range(5):
        try:
            client.create_ec_key(unique_name(f"lim{i}"), hardware_protected=True)
            statuses.append(200)
        except HttpResponseError as exc:
            statuses.append(exc.status_code)
            assert exc.response is not None
            retry_after = exc.response.headers.get("Retry-After")
    assert 429 in statuses
    assert statuses.count(200) <= 3
    assert retry_after is not None and int(retry_after) >= 1
    throttled = [e for e in limited.control.audit() if e["httpStatusCode"] == 429]
    assert throttled and throttled[-1]["operationName"] == "KeyCreate"


def test_sdk_retry_policy_rides_out_a_short_throttle(
    limited: EmulatorProcess, lsdk: SdkFactory
) -> None:
    client = lsdk.key_client(lsdk.secret_credential(ADMIN, ADMIN_SECRET))
    limited.control.add_fault("throttle", count=2, retry_after=1, operations=["KeyGet"])
    key = client.create_ec_key(unique_name("ride"), hardware_protected=False)
    assert client.get_key(key.name).id == key.id
    assert limited.control.faults() == []  # both injected 429s were consumed


def test_rsa4096_sign_limit(limited: EmulatorProcess, lsdk: SdkFactory) -> None:
    cred = lsdk.secret_credential(ADMIN, ADMIN_SECRET)
    key = lsdk.key_client(cred).create_rsa_key(
        unique_name("r4k"), size=4096, hardware_protected=True
    )
    crypto = lsdk.crypto_client(key.id, cred, **NO_RETRY)
    digest = hashlib.sha256(b"r").digest()
    codes = []
    for _ in range(4):
        try:
            crypto.sign(SignatureAlgorithm.rs256, digest)
            codes.append(200)
        except HttpResponseError as exc:
            codes.append(exc.status_code)
    assert codes.count(200) <= 2 and 429 in codes


def test_gets_of_an_hsm_key_count_against_its_limit(
    limited: EmulatorProcess, lsdk: SdkFactory
) -> None:
    """Service limits page: "HSM key, All other transactions" covers GET too (its note counts
    RSA HSM-key GET transactions against the same 2,000 / 250 budget as signs)."""
    cred = lsdk.secret_credential(ADMIN, ADMIN_SECRET)
    client = lsdk.key_client(cred, **NO_RETRY)
    key = client.create_rsa_key(unique_name("get4k"), size=4096, hardware_protected=True)
    time.sleep(2.1)  # a fresh window: this test's own budget is hsm_key_rsa4096 = 2
    codes = []
    for _ in range(3):
        try:
            client.get_key(key.name)
            codes.append(200)
        except HttpResponseError as exc:
            codes.append(exc.status_code)
    assert codes == [200, 200, 429]


def test_limits_are_weighted_and_enforced_on_their_sum(tmp_path: Path) -> None:
    """Service limits page: "The throttling thresholds are weighted, and enforcement is on their
    sum": with 4 RSA-4,096 and 8 EC HSM transactions allowed per window, 2 of the former use
    half the window, so 4 of the latter fill it."""
    with start_emulator(
        tmp_path / "weighted",
        principals={ADMIN: ["administrator"]},
        limits={"window_seconds": 30, "hsm_key": 8, "hsm_key_rsa4096": 4},
        soft_delete={"delete_delay": 0},
    ) as emu:
        emu.control.add_principal(ADMIN, client_secret=ADMIN_SECRET)
        sdk = SdkFactory(emu)
        client = sdk.key_client(sdk.secret_credential(ADMIN, ADMIN_SECRET), **NO_RETRY)
        rsa = client.create_rsa_key(unique_name("w-rsa"), size=4096, hardware_protected=True)
        ec = client.create_ec_key(unique_name("w-ec"), hardware_protected=True)
        client.get_key(rsa.name)
        client.get_key(rsa.name)
        codes = []
        for _ in range(5):
            try:
                client.get_key(ec.name)
                codes.append(200)
            except HttpResponseError as exc:
                codes.append(exc.status_code)
        assert codes == [200, 200, 200, 200, 429]


def test_a_429_without_retry_after(tmp_path: Path) -> None:
    """Throttling guidance: the client must back off on 429 whether or not Retry-After is sent;
    the emulator can leave it out, for limit hits and for injected faults."""
    with start_emulator(
        tmp_path / "no-retry-after",
        principals={ADMIN: ["administrator"]},
        limits={"window_seconds": 30, "hsm_create": 1},
        retry_after=False,
    ) as emu:
        emu.control.add_principal(ADMIN, client_secret=ADMIN_SECRET)
        sdk = SdkFactory(emu)
        client = sdk.key_client(sdk.secret_credential(ADMIN, ADMIN_SECRET), **NO_RETRY)
        client.create_ec_key(unique_name("one"), hardware_protected=True)
        with pytest.raises(HttpResponseError) as info:
            client.create_ec_key(unique_name("two"), hardware_protected=True)
        assert info.value.status_code == 429
        assert info.value.response is not None
        assert "Retry-After" not in info.value.response.headers
        emu.control.add_fault("throttle", retry_after=None, count=1, operations=["KeyList"])
        with pytest.raises(HttpResponseError) as info:
            list(client.list_properties_of_keys())
        assert info.value.status_code == 429
        assert "Retry-After" not in info.value.response.headers  # type: ignore[union-attr]


# -- faults ---------------------------------------------------------------------------------


def test_injected_503_and_outage(limited: EmulatorProcess, lsdk: SdkFactory) -> None:
    client = lsdk.key_client(lsdk.secret_credential(ADMIN, ADMIN_SECRET), **NO_RETRY)
    list(client.list_properties_of_keys())  # token cached before the outage
    limited.control.add_fault("unavailable", count=1)
    with pytest.raises(HttpResponseError) as info:
        list(client.list_properties_of_keys())
    assert info.value.status_code == 503
    limited.control.add_fault("outage")
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        list(client.list_properties_of_keys())
    limited.control.clear_faults()
    list(client.list_properties_of_keys())


def test_latency_fault_still_serves(limited: EmulatorProcess, lsdk: SdkFactory) -> None:
    client = lsdk.key_client(lsdk.secret_credential(ADMIN, ADMIN_SECRET))
    limited.control.add_fault("latency", latency_ms=50, count=1)
    list(client.list_properties_of_keys())
    assert limited.control.faults() == []


def test_control_api_needs_token(limited: EmulatorProcess) -> None:
    import ssl

    import httpx

    resp = httpx.get(
        f"{limited.control_url}faults", verify=ssl.create_default_context(cafile=limited.ca_file)
    )
    assert resp.status_code == 401


# -- restart and clock ----------------------------------------------------------------------


def test_restart_keeps_keys_and_ca(tmp_path: Path) -> None:
    state = tmp_path / "persist"
    with start_emulator(state, principals={"app": ["administrator"]}) as emu:
        emu.control.add_principal("app", client_secret="pw")
        sdk = SdkFactory(emu)
        key = sdk.key_client(sdk.secret_credential("app", "pw")).create_ec_key(
            "kept", hardware_protected=True
        )
        ca = Path(emu.ca_file).read_bytes()
        tenant = emu.tenant_id
    with start_emulator(state) as emu2:
        assert Path(emu2.ca_file).read_bytes() == ca and emu2.tenant_id == tenant
        sdk2 = SdkFactory(emu2)
        again = sdk2.key_client(sdk2.secret_credential("app", "pw")).get_key("kept")
        assert again.key.x == key.key.x and again.properties.version == key.properties.version


def test_clock_offset_backdates_new_keys(
    emulator: EmulatorProcess, admin_client: KeyClient
) -> None:
    emulator.control.set_clock_offset(-15 * 86400)
    try:
        old = admin_client.create_ec_key(unique_name("old"), hardware_protected=True)
    finally:
        emulator.control.set_clock_offset(0)
    new = admin_client.create_ec_key(unique_name("new"), hardware_protected=True)
    age = new.properties.updated_on - old.properties.updated_on
    assert age.total_seconds() >= 15 * 86400 - 60


def test_bad_limit_values_are_refused_and_the_vault_keeps_serving(
    emulator: EmulatorProcess, admin_client: KeyClient
) -> None:
    from controlplane.emulators.keyvault.process import EmulatorError

    for bad in (
        {"hsm_key": "5"},
        {"hsm_key": 5.5},
        {"hsm_create": -1},
        {"window_seconds": 0},
        {"retry_after": 1},
    ):
        with pytest.raises(EmulatorError, match="400"):
            emulator.control.set_limits(**bad)
    key = admin_client.create_ec_key(
        f"after-bad-limits-{secrets.token_hex(3)}", hardware_protected=True
    )
    assert admin_client.get_key(key.name).id == key.id
