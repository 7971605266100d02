"""The Azure Key Vault key manager against the real emulator process (unmodified Azure SDK).

Covers the shared contract plus tier and permission checks, tags, shared keys across two
manager instances, stale-key cleanup driven by the emulator clock, and throttling.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.keyvault.keys import KeyClient
from azure_kv import (
    BOTH_ROLES,
    SERVER_APP,
    SERVER_SECRET,
    TRUST_DOMAIN,
    Sleeps,
    config,
    principal,
    secret_file,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from controlplane.emulators.keyvault import EmulatorProcess, start_emulator
from controlplane.keymanagers import KeyManagerContext, build_key_manager
from controlplane.keymanagers.azure_errors import PermissionDeniedError, StandardTierError
from controlplane.keymanagers.azure_key_vault import (
    TAG_KEY_ID,
    TAG_SERVER_ID,
    TAG_TRUST_DOMAIN,
    AzureKeyVaultKeyManager,
)
from controlplane.keymanagers.base import (
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    SigningAlgorithm,
    TransientKeyManagerError,
)
from controlplane.keymanagers.signatures import digest as hash_digest
from controlplane.keymanagers.signatures import hash_for_key_type

from contract import KeyManagerContract, assert_signs_and_verifies
from support.azure import SHARED

pytestmark = pytest.mark.usefixtures("reset_kv")


def _probe_keys(admin: KeyClient) -> list[str]:
    return [
        p.name for p in admin.list_properties_of_keys() if (p.name or "").startswith("spire-probe-")
    ]


# -- the contract ------------------------------------------------------------------------------


class TestAzureKeyVaultContract(KeyManagerContract):
    @pytest.fixture
    def key_manager(self, make_manager: Any) -> Iterator[AzureKeyVaultKeyManager]:
        yield make_manager()


class TestAzureKeyVaultSharedKeysContract(KeyManagerContract):
    key_types = (KeyType.EC_P256, KeyType.RSA_2048)  # the full set runs above

    @pytest.fixture
    def key_manager(self, make_manager: Any) -> Iterator[AzureKeyVaultKeyManager]:
        yield make_manager(config={"sharedKeys": SHARED})


# -- credentials and the factory ---------------------------------------------------------------


def test_workload_identity_from_environment(
    kv: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id = str(uuid.uuid4())
    kv.control.add_principal(client_id, BOTH_ROLES)
    # Exactly what a pod with Azure Workload Identity gets, plus the emulator's CA.
    for name, value in kv.sdk_env(client_id).items():
        monkeypatch.setenv(name, value)
    context = KeyManagerContext(
        data_dir=Path("/nonexistent"),
        kek=b"k" * 32,
        trust_domain=TRUST_DOMAIN,
        server_id="wi-server",
    )
    manager = build_key_manager(
        {"extensions": {"azureKeyVault": {"vaultURL": kv.vault_url}}}, context
    )
    try:
        assert isinstance(manager, AzureKeyVaultKeyManager)
        manager.check()
        key = manager.generate_key(f"jwt-{secrets.token_hex(3)}", KeyType.EC_P256)
        assert_signs_and_verifies(manager, key)
    finally:
        manager.close()


def test_managed_identity(kv: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    client_id = str(uuid.uuid4())
    kv.control.add_principal(client_id, BOTH_ROLES, managed_identity="user")
    for name, value in kv.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    manager = AzureKeyVaultKeyManager(
        {"vaultURL": kv.vault_url, "credentials": {"managedIdentity": {"clientID": client_id}}},
        trust_domain=TRUST_DOMAIN,
        server_id="mi-server",
    )
    try:
        manager.check()
        key = manager.generate_key("jwt-mi", KeyType.EC_P384)
        assert_signs_and_verifies(manager, key)
    finally:
        manager.close()


def test_workload_identity_without_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(KeyManagerError, match="workloadIdentity credential is not configured"):
        AzureKeyVaultKeyManager(
            {"vaultURL": "https://v.vault.azure.net/"}, trust_domain=TRUST_DOMAIN, server_id="s"
        )


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"vaultURL": "http://v.vault.azure.net/"}, "https"),
        ({"vaultURL": "https://v.vault.azure.net/", "keyTags": {"spire-x": "y"}}, "reserved"),
        # The parser applies the document layer's tag rules (documents/tags.py) when handed a
        # dict directly: a Cyrillic look-alike prefix and a NUL in a value are refused too.
        ({"vaultURL": "https://v.vault.azure.net/", "keyTags": {"\u0430zure:x": "y"}}, "reserved"),
        ({"vaultURL": "https://v.vault.azure.net/", "keyTags": {"team": "a\x00b"}}, "control"),
        ({"vaultURL": "https://v.vault.azure.net/", "keyType": "ec-p521"}, "keyType"),
        # Key Vault's own tag limits: 15 tags (the server adds 3), 256 characters per name/value.
        (
            {
                "vaultURL": "https://v.vault.azure.net/",
                "keyTags": {f"t{i}": "v" for i in range(13)},
            },
            "keyTags",
        ),
        ({"vaultURL": "https://v.vault.azure.net/", "keyTags": {"n" * 257: "v"}}, "keyTags"),
        ({"vaultURL": "https://v.vault.azure.net/", "keyTags": {"t": "v" * 257}}, "keyTags"),
        (
            {
                "vaultURL": "https://v.vault.azure.net/",
                "sharedKeys": {"keyNameTemplate": "a", "keyIdExtractionRegex": "(a)(b)"},
            },
            "one capture group",
        ),
    ],
)
def test_bad_config_rejected(config: dict[str, Any], reason: str) -> None:
    with pytest.raises(KeyManagerError, match=reason):
        AzureKeyVaultKeyManager(
            config, trust_domain=TRUST_DOMAIN, server_id="s", credential=object()
        )


def test_missing_secret_file_names_the_path(kv: EmulatorProcess, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(KeyManagerError, match="nope"):
        AzureKeyVaultKeyManager(
            config(kv, missing), trust_domain=TRUST_DOMAIN, server_id="s", authority_host="x"
        )


def test_wrong_secret_fails_check(make_manager: Any) -> None:
    manager = make_manager(secret="wrong")
    with pytest.raises(KeyManagerError, match="authenticate"):
        manager.check()


# -- tier and permissions ----------------------------------------------------------------------


def test_standard_tier_is_refused_by_check(tmp_path: Path) -> None:
    with start_emulator(
        tmp_path / "std", sku="standard", principals={SERVER_APP: BOTH_ROLES}
    ) as emu:
        emu.control.add_principal(SERVER_APP, client_secret=SERVER_SECRET)
        manager = AzureKeyVaultKeyManager(
            config(emu, secret_file(tmp_path, SERVER_SECRET)),
            trust_domain=TRUST_DOMAIN,
            server_id="std-server",
            connection_verify=emu.ca_file,
            authority_host=emu.authority_host,
        )
        try:
            with pytest.raises(StandardTierError) as info:
                manager.check()
            message = str(info.value)
            assert "Standard tier" in message and "Premium" in message
            with pytest.raises(StandardTierError):
                manager.generate_key("x509-ca-1", KeyType.EC_P256)
        finally:
            manager.close()
        audit = emu.control.audit()
        assert not [
            e for e in audit if e["operationName"] == "KeyCreate" and e["resultType"] == "Success"
        ]


def test_missing_sign_permission_names_permission_and_role(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    # Crypto Officer alone may sign (keys/*); a custom role without the sign action may not.
    role = f"no-sign-{secrets.token_hex(3)}"
    kv.control.define_role(
        role, ["Microsoft.KeyVault/vaults/keys/*"], ["Microsoft.KeyVault/vaults/keys/sign/action"]
    )
    client_id, secret = principal(kv, [role])
    manager = make_manager(client_id=client_id, secret=secret)
    with pytest.raises(PermissionDeniedError) as info:
        manager.check()
    message = str(info.value)
    assert "Microsoft.KeyVault/vaults/keys/sign/action" in message
    assert "Key Vault Crypto User" in message
    # The probe key was created and deleted again: nothing usable is left behind.
    assert _probe_keys(admin) == []


def test_crypto_officer_alone_passes_the_check(make_manager: Any, kv: EmulatorProcess) -> None:
    client_id, secret = principal(kv, ["Key Vault Crypto Officer"])
    make_manager(client_id=client_id, secret=secret).check()


def test_missing_create_permission_names_permission_and_role(
    kv: EmulatorProcess, make_manager: Any
) -> None:
    client_id, secret = principal(kv, ["Key Vault Crypto User"])
    manager = make_manager(client_id=client_id, secret=secret)
    with pytest.raises(PermissionDeniedError) as info:
        manager.check()
    assert "Microsoft.KeyVault/vaults/keys/create/action" in str(info.value)
    assert "Key Vault Crypto Officer" in str(info.value)


def test_check_leaves_no_usable_key(admin: KeyClient, make_manager: Any) -> None:
    manager = make_manager()
    manager.check()
    manager.check()
    assert _probe_keys(admin) == []
    assert manager.list_public_keys() == []
    # Deleted and purged: the probe does not linger in the deleted keys either.
    deleted = [
        d.name for d in admin.list_deleted_keys() if (d.name or "").startswith("spire-probe-")
    ]
    assert deleted == []


# -- keys, tags and signatures -----------------------------------------------------------------


def test_keys_are_hsm_and_tagged(admin: KeyClient, make_manager: Any) -> None:
    manager = make_manager(server_id="tagged-server")
    pub = manager.generate_key("x509-ca-abc", KeyType.EC_P384)
    key = admin.get_key(manager.key_name("x509-ca-abc"))
    assert key.id == pub.provider_ref
    assert str(getattr(key.key_type, "value", key.key_type)) == "EC-HSM"
    assert key.properties.tags == {
        "team": "identity",
        TAG_TRUST_DOMAIN: TRUST_DOMAIN,
        TAG_SERVER_ID: "tagged-server",
        TAG_KEY_ID: "x509-ca-abc",
    }
    rsa_pub = manager.generate_key("rsa-key", KeyType.RSA_2048)
    assert (
        str(getattr(admin.get_key(manager.key_name("rsa-key")).key_type, "value", "")) == "RSA-HSM"
    )
    assert rsa_pub.key_type is KeyType.RSA_2048


def test_ec_signature_is_der_and_verifies(make_manager: Any) -> None:
    manager = make_manager()
    pub = manager.generate_key("jwt-der", KeyType.EC_P256)
    data = hashlib.sha256(b"tbs certificate bytes").digest()
    sig = manager.sign_digest("jwt-der", data, SigningAlgorithm(hash_for_key_type(KeyType.EC_P256)))
    assert sig[0] == 0x30  # DER SEQUENCE, not raw r||s
    public = serialization.load_der_public_key(pub.public_key_der)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(sig, data, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_wrong_hash_for_curve_rejected(make_manager: Any) -> None:
    manager = make_manager()
    manager.generate_key("p256", KeyType.EC_P256)
    alg = SigningAlgorithm(hash_for_key_type(KeyType.EC_P384))
    with pytest.raises(KeyManagerError, match="cannot sign"):
        manager.sign_digest("p256", hash_digest(b"x", alg.hash), alg)


def test_new_instance_finds_existing_keys(make_manager: Any) -> None:
    first = make_manager(server_id="restarted")
    pub = first.generate_key("x509-ca-restart", KeyType.EC_P256)
    first.close()
    second = make_manager(server_id="restarted")
    assert second.get_public_key("x509-ca-restart").public_key_der == pub.public_key_der
    assert [k.key_id for k in second.list_public_keys()] == ["x509-ca-restart"]
    assert_signs_and_verifies(second, pub)
    other_server = make_manager(server_id="someone-else")
    with pytest.raises(KeyNotFoundError):
        other_server.get_public_key("x509-ca-restart")


def test_signs_are_audited(kv: EmulatorProcess, make_manager: Any) -> None:
    manager = make_manager()
    pub = manager.generate_key("audited", KeyType.EC_P256)
    assert_signs_and_verifies(manager, pub)
    name = manager.key_name("audited")
    events = [
        e for e in kv.control.audit() if e["keyName"] == name and e["operationName"] == "KeySign"
    ]
    assert events and events[-1]["resultType"] == "Success"
    assert events[-1]["identity"]["claim"]["appid"] == SERVER_APP


def test_regenerating_a_soft_deleted_name_recovers_it(admin: KeyClient, make_manager: Any) -> None:
    manager = make_manager()
    manager.generate_key("comeback", KeyType.EC_P256)
    admin.begin_delete_key(manager.key_name("comeback")).wait()
    pub = manager.generate_key("comeback", KeyType.EC_P256)
    assert manager.get_public_key("comeback").public_key_der == pub.public_key_der
    assert_signs_and_verifies(manager, pub)


# -- shared keys -------------------------------------------------------------------------------


def test_shared_key_is_reused_across_servers(admin: KeyClient, make_manager: Any) -> None:
    td = f"shared-{secrets.token_hex(3)}.example.org"
    a = make_manager(server_id="server-a", trust_domain=td, config={"sharedKeys": SHARED})
    b = make_manager(server_id="server-b", trust_domain=td, config={"sharedKeys": SHARED})
    pub_a = a.generate_key("jwt-signer-a", KeyType.EC_P256)
    pub_b = b.generate_key("jwt-signer-a", KeyType.EC_P256)
    assert pub_b.public_key_der == pub_a.public_key_der
    name = a.key_name("jwt-signer-a")
    assert name == b.key_name("jwt-signer-a")
    assert len(list(admin.list_properties_of_key_versions(name))) == 1
    # Both list the key under its id (recovered by the regex) and both can sign with it.
    assert [k.key_id for k in b.list_public_keys()] == ["jwt-signer-a"]
    assert_signs_and_verifies(b, pub_b)
    assert_signs_and_verifies(a, pub_a)


def test_shared_key_older_than_15_minutes_gets_a_new_version(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    td = f"shared-{secrets.token_hex(3)}.example.org"
    a = make_manager(server_id="server-a", trust_domain=td, config={"sharedKeys": SHARED})
    b = make_manager(server_id="server-b", trust_domain=td, config={"sharedKeys": SHARED})
    # A's key is made 16 minutes "ago" (the vault's clock), as B sees it now.
    kv.control.set_clock_offset(-16 * 60)
    pub_a = a.generate_key("jwt-signer-a", KeyType.EC_P256)
    kv.control.set_clock_offset(0)
    pub_b = b.generate_key("jwt-signer-a", KeyType.EC_P256)
    assert pub_b.public_key_der != pub_a.public_key_der
    assert len(list(admin.list_properties_of_key_versions(a.key_name("jwt-signer-a")))) == 2


def test_servers_racing_on_a_shared_key_converge_on_one_version(
    admin: KeyClient, make_manager: Any
) -> None:
    td = f"race-{secrets.token_hex(3)}.example.org"
    a = make_manager(server_id="server-a", trust_domain=td, config={"sharedKeys": SHARED})
    pub_a = a.generate_key("jwt-signer-a", KeyType.EC_P256)
    name = a.key_name("jwt-signer-a")
    # Server B found nothing fresh at the same moment and created its own version.
    racing = admin.create_ec_key(
        name,
        curve="P-256",
        hardware_protected=True,
        tags={TAG_TRUST_DOMAIN: td, TAG_SERVER_ID: "server-b", TAG_KEY_ID: "jwt-signer-a"},
    )
    assert racing.properties.version != a.get_public_key("jwt-signer-a").provider_ref[-32:]
    b = make_manager(server_id="server-b", trust_domain=td, config={"sharedKeys": SHARED})
    a_restarted = make_manager(server_id="server-a", trust_domain=td, config={"sharedKeys": SHARED})
    for manager in (b, a_restarted):
        pub = manager.get_public_key("jwt-signer-a")
        assert pub.public_key_der == pub_a.public_key_der
        assert_signs_and_verifies(manager, pub)


def test_shared_regex_that_captures_the_wrong_part_is_refused(make_manager: Any) -> None:
    # The SPIRE doc example: with a dotted trust domain the regex captures "org-jwt-signer".
    bad = {
        "keyNameTemplate": 'spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}',
        "keyIdExtractionRegex": "^spire-[^-]+-(.+)$",
    }
    manager = make_manager(config={"sharedKeys": bad})
    with pytest.raises(KeyManagerError, match="keyIdExtractionRegex"):
        manager.generate_key("jwt-signer", KeyType.EC_P256)
    with pytest.raises(KeyManagerError, match="keyIdExtractionRegex"):
        manager.check()


# -- stale keys --------------------------------------------------------------------------------


def test_stale_keys_of_other_servers_are_deleted(
    kv: EmulatorProcess, admin: KeyClient, make_manager: Any
) -> None:
    td = f"stale-{secrets.token_hex(3)}.example.org"  # dotted
    gone = make_manager(server_id="gone-server", trust_domain=td)
    refreshing = make_manager(server_id="refreshing-server", trust_domain=td)
    other_td = make_manager(server_id="other-td-server", trust_domain=f"x{td}")
    me = make_manager(server_id="me", trust_domain=td)

    kv.control.set_clock_offset(-15 * 86400)  # everything below is created 15 days ago
    try:
        gone.generate_key("x509-ca-old", KeyType.EC_P256)
        gone.generate_key("jwt-still-verifying", KeyType.EC_P256)
        refreshing.generate_key("x509-ca-alive", KeyType.EC_P256)
        other_td.generate_key("x509-ca-foreign", KeyType.EC_P256)
        me.generate_key("x509-ca-mine", KeyType.EC_P256)
    finally:
        kv.control.set_clock_offset(0)
    assert refreshing.refresh_own_keys(["x509-ca-alive"]) == [refreshing.key_name("x509-ca-alive")]

    deleted = me.delete_stale_keys(protected_key_names={gone.key_name("jwt-still-verifying")})
    assert deleted == [gone.key_name("x509-ca-old")]
    remaining = {p.name for p in admin.list_properties_of_keys()}
    assert gone.key_name("x509-ca-old") not in remaining
    for kept in (
        gone.key_name("jwt-still-verifying"),  # protected
        refreshing.key_name("x509-ca-alive"),  # refreshed
        other_td.key_name("x509-ca-foreign"),  # another trust domain
        me.key_name("x509-ca-mine"),  # own key
    ):
        assert kept in remaining
    # Protection by key id works too.
    assert me.delete_stale_keys(protected_key_names={"jwt-still-verifying"}) == []


# -- throttling and outages --------------------------------------------------------------------


# Source: learn.microsoft.com "Azure Key Vault throttling guidance": on 429 back off
# exponentially, 1, 2, 4, 8, 16 s; honour Retry-After when the service sends one.


def test_throttled_sign_is_retried_after_retry_after(
    kv: EmulatorProcess, make_manager: Any
) -> None:
    sleeps = Sleeps()
    manager = make_manager(sleep=sleeps)
    pub = manager.generate_key("busy", KeyType.EC_P256)
    kv.control.add_fault("throttle", count=2, retry_after=3, operations=["KeySign"])
    assert_signs_and_verifies(manager, pub)
    assert len(sleeps.waits) == 2 and all(3.0 <= w <= 3.3 for w in sleeps.waits)


def test_a_429_without_retry_after_backs_off_exponentially_with_jitter(
    kv: EmulatorProcess, make_manager: Any
) -> None:
    sleeps = Sleeps()
    manager = make_manager(sleep=sleeps)
    pub = manager.generate_key("no-retry-after", KeyType.EC_P256)
    kv.control.add_fault("throttle", count=4, retry_after=None, operations=["KeySign"])
    assert_signs_and_verifies(manager, pub)
    assert len(sleeps.waits) == 4
    for wait, base in zip(sleeps.waits, (1, 2, 4, 8), strict=True):
        assert 0.8 * base <= wait <= 1.2 * base
    assert len(set(sleeps.waits)) == 4  # jittered, not a fixed schedule


def test_throttling_storm_becomes_transient_error_at_the_deadline(
    kv: EmulatorProcess, make_manager: Any
) -> None:
    sleeps = Sleeps()
    manager = make_manager(sleep=sleeps, sign_deadline=5)
    pub = manager.generate_key("storm", KeyType.EC_P256)
    kv.control.add_fault("throttle", retry_after=2, operations=["KeySign"])
    alg = SigningAlgorithm(hash_for_key_type(pub.key_type))
    with pytest.raises(TransientKeyManagerError, match="429"):
        manager.sign_digest("storm", hash_digest(b"x", alg.hash), alg)
    assert len(sleeps.waits) == 2 and sum(sleeps.waits) <= 5


def test_hsm_create_limit_is_ridden_out(kv: EmulatorProcess, make_manager: Any) -> None:
    sleeps = Sleeps()
    manager = make_manager(sleep=sleeps, deadline=200)
    kv.control.set_limits(window_seconds=60, hsm_create=2)  # reset_kv puts them back
    for i in range(2):
        manager.generate_key(f"lim-{i}", KeyType.EC_P256)
    with pytest.raises(TransientKeyManagerError):
        manager.generate_key("lim-2", KeyType.EC_P256)
    # Retry-After (~60 s, the window) three times, then the next wait would pass 200 s.
    assert len(sleeps.waits) == 3 and all(w >= 59 for w in sleeps.waits)


def test_outage_is_transient(kv: EmulatorProcess, make_manager: Any) -> None:
    manager = make_manager()
    pub = manager.generate_key("outage", KeyType.EC_P256)
    kv.control.add_fault("outage", target="vault")
    alg = SigningAlgorithm(hash_for_key_type(pub.key_type))
    with pytest.raises(TransientKeyManagerError):
        manager.sign_digest("outage", hash_digest(b"x", alg.hash), alg)
    kv.control.clear_faults()
    assert_signs_and_verifies(manager, pub)


def test_control_api_is_reachable_only_with_token(kv: EmulatorProcess) -> None:
    resp = httpx.get(
        f"{kv.control_url}health", verify=ssl.create_default_context(cafile=kv.ca_file)
    )
    assert resp.status_code == 401


def test_key_state_refusal_is_not_blamed_on_rbac() -> None:
    from azure.core.exceptions import HttpResponseError

    from controlplane.keymanagers.azure_errors import map_azure_error

    exc = HttpResponseError(message="Operation sign is not allowed on an expired key.")
    exc.status_code = 403
    err = map_azure_error(exc, "sign", "https://v.vault.azure.net/", "k")
    assert not isinstance(err, PermissionDeniedError)
    assert "expired key" in str(err) and "Crypto User" not in str(err)
    denied = HttpResponseError(message="Caller is not authorized to perform action on resource.")
    denied.status_code = 403
    assert isinstance(map_azure_error(denied, "sign", "https://v/", "k"), PermissionDeniedError)


def test_shared_mode_refresh_leaves_a_vanished_servers_own_keys_to_age(
    admin: KeyClient, make_manager: Any
) -> None:
    td = f"refresh-{secrets.token_hex(3)}.example.org"
    shared = {"sharedKeys": SHARED}
    a = make_manager(server_id="server-a", trust_domain=td, config=shared)
    gone = make_manager(server_id="server-gone", trust_domain=td, config=shared)
    gone.generate_key("jwt-signer-a", KeyType.EC_P256)  # shared, used by a too
    gone.generate_key("x509-ca-0123", KeyType.EC_P256)  # the vanished server's own key
    a.generate_key("x509-ca-4567", KeyType.EC_P256)
    refreshed = set(a.refresh_own_keys(["jwt-signer-a", "x509-ca-4567"]))
    assert refreshed == {a.key_name("jwt-signer-a"), a.key_name("x509-ca-4567")}
    assert a.key_name("x509-ca-0123") not in refreshed
