"""Tiers, RBAC, service limits, injected faults and restarts of the emulator, via the SDK."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import SignatureAlgorithm
from kv_sdk import ADMIN, ADMIN_SECRET, SdkFactory

from controlplane.emulators.keyvault import EmulatorProcess, start_emulator

NO_RETRY = {"retry_total": 0}


def _name(label: str) -> str:
    return f"{label}-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """An emulator with tiny limits so tests reach them with a handful of calls."""
    emu = start_emulator(
        tmp_path_factory.mktemp("kv-limited"),
        principals={ADMIN: ["administrator"]},
        limits={"window_seconds": 2, "hsm_create": 3, "sign": 5, "sign_rsa4096": 2},
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
            client.create_ec_key(_name("hsm"), hardware_protected=True)
        assert info.value.status_code == 400
        assert info.value.error is not None
        assert info.value.error.code == "BadParameter"
        assert "Hardware key operation not allowed on standard vault" in info.value.error.message
        # Software keys are fine on Standard.
        assert client.create_ec_key(_name("sw"), hardware_protected=False).key_type == "EC"


# -- RBAC -----------------------------------------------------------------------------------


def test_crypto_officer_cannot_sign(
    emulator: EmulatorProcess, sdk: SdkFactory, admin_client: KeyClient
) -> None:
    key = admin_client.create_ec_key(_name("rbac"), hardware_protected=True)
    officer = sdk.principal(_name("officer"), ["Key Vault Crypto Officer"], "pw1")
    with pytest.raises(HttpResponseError) as info:
        sdk.crypto_client(key.id, officer).sign(
            SignatureAlgorithm.es256, hashlib.sha256(b"x").digest()
        )
    assert info.value.status_code == 403
    assert info.value.error is not None and info.value.error.code == "Forbidden"
    assert (
        "does not have permission to perform action 'Microsoft.KeyVault/vaults/keys/sign/action'"
        in (info.value.error.message or "")
    )
    assert info.value.response is not None
    assert info.value.response.json()["error"]["innererror"]["code"] == "ForbiddenByRbac"
    failures = [
        e
        for e in emulator.control.audit()
        if e["keyName"] == key.name and e["operationName"] == "KeySign"
    ]
    assert (
        failures
        and failures[-1]["resultType"] == "Failure"
        and failures[-1]["httpStatusCode"] == 403
    )


def test_crypto_user_cannot_create_but_can_sign(sdk: SdkFactory, admin_client: KeyClient) -> None:
    user = sdk.principal(_name("user"), ["crypto-user"], "pw2")
    client = sdk.key_client(user)
    with pytest.raises(HttpResponseError) as info:
        client.create_ec_key(_name("denied"), hardware_protected=True)
    assert info.value.status_code == 403
    assert "Microsoft.KeyVault/vaults/keys/create/action" in (info.value.error.message or "")  # type: ignore[union-attr]
    key = admin_client.create_ec_key(_name("usable"), hardware_protected=True)
    assert client.get_key(key.name).id == key.id
    sig = sdk.crypto_client(key.id, user).sign(
        SignatureAlgorithm.es256, hashlib.sha256(b"y").digest()
    )
    assert len(sig.signature) == 64


def test_role_change_takes_effect(sdk: SdkFactory, emulator: EmulatorProcess) -> None:
    client_id = _name("changing")
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
            client.create_ec_key(_name(f"lim{i}"), hardware_protected=True)
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
    key = client.create_ec_key(_name("ride"), hardware_protected=False)
    assert client.get_key(key.name).id == key.id
    assert limited.control.faults() == []  # both injected 429s were consumed


def test_rsa4096_sign_limit(limited: EmulatorProcess, lsdk: SdkFactory) -> None:
    cred = lsdk.secret_credential(ADMIN, ADMIN_SECRET)
    key = lsdk.key_client(cred).create_rsa_key(_name("r4k"), size=4096, hardware_protected=False)
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
        old = admin_client.create_ec_key(_name("old"), hardware_protected=True)
    finally:
        emulator.control.set_clock_offset(0)
    new = admin_client.create_ec_key(_name("new"), hardware_protected=True)
    age = new.properties.updated_on - old.properties.updated_on
    assert age.total_seconds() >= 15 * 86400 - 60


def test_bad_limit_values_are_refused_and_the_vault_keeps_serving(
    emulator: EmulatorProcess, admin_client: KeyClient
) -> None:
    from controlplane.emulators.keyvault.process import EmulatorError

    for bad in ({"sign": "5"}, {"sign": 5.5}, {"hsm_create": -1}, {"window_seconds": 0}):
        with pytest.raises(EmulatorError, match="400"):
            emulator.control.set_limits(**bad)
    key = admin_client.create_ec_key(
        f"after-bad-limits-{secrets.token_hex(3)}", hardware_protected=True
    )
    assert admin_client.get_key(key.name).id == key.id
