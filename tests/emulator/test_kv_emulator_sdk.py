"""The unmodified Azure SDK (azure-identity + azure-keyvault-keys) against the emulator."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.identity import (
    ClientSecretCredential,
    DefaultAzureCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import SignatureAlgorithm
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from controlplane.emulators.keyvault import EmulatorProcess

from support.kv_sdk import ADMIN, POLL, SdkFactory, unique_name


def _tls(emu: EmulatorProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=emu.ca_file)


def _ec_public(key: KeyVaultKey) -> ec.EllipticCurvePublicKey:
    jwk = key.key
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[getattr(jwk.crv, "value", jwk.crv)]
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve
    ).public_key()


def _rsa_public(key: KeyVaultKey) -> rsa.RSAPublicKey:
    jwk = key.key
    return rsa.RSAPublicNumbers(
        int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")
    ).public_key()


def _verify_ec(key: KeyVaultKey, digest: bytes, raw: bytes, h: hashes.HashAlgorithm) -> None:
    half = len(raw) // 2
    der = encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
    _ec_public(key).verify(der, digest, ec.ECDSA(Prehashed(h)))


def _names_listed_by_a_child(
    emulator: EmulatorProcess, env: dict[str, str], credential: str
) -> list[str]:
    """Key names listed by a separate Python process given only `env` (no code changes)."""
    script = (
        "import sys\n"
        "from azure.identity import DefaultAzureCredential\n"
        "from azure.keyvault.keys import KeyClient\n"
        f"c = KeyClient(sys.argv[1], {credential}, verify_challenge_resource=False)\n"
        "print('\\n'.join(k.name for k in c.list_properties_of_keys()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, emulator.vault_url],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


# -- authentication -------------------------------------------------------------------------


def test_challenge_without_token(emulator: EmulatorProcess) -> None:
    resp = httpx.get(f"{emulator.vault_url}keys?api-version=7.5", verify=_tls(emulator))
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{emulator.authority_host.rstrip("/")}/{emulator.tenant_id}", '
        'resource="https://vault.azure.net"'
    )
    assert resp.json()["error"]["code"] == "Unauthorized"


def test_token_for_another_audience_is_refused(emulator: EmulatorProcess) -> None:
    # A token for another resource (here: Microsoft Graph) must not open the vault.
    token = httpx.post(
        f"{emulator.authority_host}{emulator.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": ADMIN,
            "client_secret": "admin-secret-value",
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=_tls(emulator),
    ).json()["access_token"]
    resp = httpx.get(
        f"{emulator.vault_url}keys?api-version=7.5",
        headers={"Authorization": f"Bearer {token}"},
        verify=_tls(emulator),
    )
    assert resp.status_code == 401
    assert "audience" in resp.json()["error"]["message"]


def test_workload_identity_via_default_credential(
    emulator: EmulatorProcess, sdk: SdkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id = unique_name("wi")
    emulator.control.add_principal(
        client_id,
        ["crypto-officer", "crypto-user"],
        federated_subjects=["system:serviceaccount:spire:server"],
    )
    for name, value in emulator.sdk_env(client_id).items():
        monkeypatch.setenv(name, value)
    credential = DefaultAzureCredential(disable_instance_discovery=True)
    client = sdk.key_client(credential)
    key = client.create_ec_key(unique_name("wi-key"), curve="P-256", hardware_protected=True)
    assert key.key_type == "EC-HSM"
    digest = hashlib.sha256(b"workload identity").digest()
    result = sdk.crypto_client(key, credential).sign(SignatureAlgorithm.es256, digest)
    _verify_ec(key, digest, result.signature, hashes.SHA256())
    sign_events = [
        e
        for e in emulator.control.audit()
        if e["operationName"] == "KeySign" and e["keyName"] == key.name
    ]
    assert sign_events and sign_events[-1]["identity"]["claim"]["appid"] == client_id


def test_workload_identity_in_a_child_process(
    emulator: EmulatorProcess, sdk: SdkFactory, admin_credential: ClientSecretCredential
) -> None:
    """sdk_env() is all a separate process needs (CA via REQUESTS_CA_BUNDLE, no code changes)."""
    known = sdk.key_client(admin_credential).create_ec_key(
        unique_name("seen-by-child"), hardware_protected=True
    )
    client_id = unique_name("child")
    emulator.control.add_principal(client_id, ["crypto-user"])
    credential = (
        "DefaultAzureCredential(disable_instance_discovery=True,"
        " exclude_managed_identity_credential=True)"
    )
    assert known.name in _names_listed_by_a_child(emulator, emulator.sdk_env(client_id), credential)


def test_federated_assertion_with_unknown_subject_is_refused(
    emulator: EmulatorProcess, tmp_path: pytest.TempPathFactory
) -> None:
    client_id = unique_name("wi-bad")
    emulator.control.add_principal(
        client_id, ["crypto-user"], federated_subjects=["expected-subject"]
    )
    token_file = tmp_path / "token"  # type: ignore[operator]
    token_file.write_text(emulator.control.federated_token(subject="someone-else"))
    credential = WorkloadIdentityCredential(
        tenant_id=emulator.tenant_id,
        client_id=client_id,
        token_file_path=str(token_file),
        authority=emulator.authority_host,
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS70021"):
        credential.get_token("https://vault.azure.net/.default")


def test_wrong_client_secret_is_refused(sdk: SdkFactory) -> None:
    credential = sdk.secret_credential(ADMIN, "not-the-secret")
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        sdk.key_client(credential).get_key("anything")


# -- keys -----------------------------------------------------------------------------------


def test_create_get_versions_and_shapes(emulator: EmulatorProcess, admin_client: KeyClient) -> None:
    name = unique_name("shape")
    first = admin_client.create_ec_key(
        name, curve="P-384", hardware_protected=True, tags={"team": "id"}
    )
    second = admin_client.create_ec_key(name, curve="P-384", hardware_protected=True)
    assert first.id == f"{emulator.vault_url}keys/{name}/{first.properties.version}"
    assert first.key.crv == "P-384" and first.key.key_ops == ["sign", "verify"]
    assert first.properties.tags == {"team": "id"}
    assert first.properties.created_on is not None
    latest = admin_client.get_key(name)
    assert latest.properties.version == second.properties.version
    assert admin_client.get_key(name, first.properties.version).key.x == first.key.x
    versions = {p.version for p in admin_client.list_properties_of_key_versions(name)}
    assert versions == {first.properties.version, second.properties.version}
    with pytest.raises(ResourceNotFoundError):
        admin_client.get_key(unique_name("missing"))


def test_list_keys_pages_with_next_link(emulator: EmulatorProcess, admin_client: KeyClient) -> None:
    prefix = unique_name("page")
    names = {f"{prefix}-{i}" for i in range(27)}
    for n in names:
        admin_client.create_ec_key(n, hardware_protected=False)
    before = len(emulator.control.audit())
    listed = {p.name for p in admin_client.list_properties_of_keys(max_page_size=10)}
    assert names <= listed
    list_calls = [e for e in emulator.control.audit(before) if e["operationName"] == "KeyList"]
    assert len(list_calls) >= 3  # >= 27 keys at 10 per page


def test_maxresults_above_25_is_rejected(
    emulator: EmulatorProcess, admin_credential: ClientSecretCredential
) -> None:
    token = admin_credential.get_token("https://vault.azure.net/.default").token
    resp = httpx.get(
        f"{emulator.vault_url}keys?api-version=7.5&maxresults=26",
        headers={"Authorization": f"Bearer {token}"},
        verify=_tls(emulator),
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "BadParameter"


def test_update_tags_bumps_updated(emulator: EmulatorProcess, admin_client: KeyClient) -> None:
    name = unique_name("upd")
    key = admin_client.create_ec_key(name, hardware_protected=True)
    emulator.control.advance_clock(3600)
    try:
        props = admin_client.update_key_properties(name, tags={"spire-server-id": "a"}).properties
    finally:
        emulator.control.advance_clock(-3600)
    assert props.tags == {"spire-server-id": "a"}
    assert props.updated_on is not None and key.properties.updated_on is not None
    assert (props.updated_on - key.properties.updated_on).total_seconds() >= 3600
    assert props.created_on == key.properties.created_on


def test_delete_recover_purge(admin_client: KeyClient) -> None:
    name = unique_name("del")
    admin_client.create_rsa_key(name, size=2048, hardware_protected=True)
    poller = admin_client.begin_delete_key(name, **POLL)
    deleted = poller.result()  # the DELETE's answer; the deletion itself completes later
    assert deleted.recovery_id and deleted.scheduled_purge_date is not None
    poller.wait()
    with pytest.raises(ResourceNotFoundError):
        admin_client.get_key(name)
    assert name in {d.name for d in admin_client.list_deleted_keys()}
    recover = admin_client.begin_recover_deleted_key(name, **POLL)
    assert recover.result().name == name
    recover.wait()
    admin_client.begin_delete_key(name, **POLL).wait()
    admin_client.purge_deleted_key(name)
    assert name not in {d.name for d in admin_client.list_deleted_keys()}
    with pytest.raises(ResourceNotFoundError):
        admin_client.get_deleted_key(name)


def test_sign_and_verify_each_algorithm(
    sdk: SdkFactory, admin_client: KeyClient, admin_credential: ClientSecretCredential
) -> None:
    ec384 = admin_client.create_ec_key(unique_name("s384"), curve="P-384", hardware_protected=True)
    d384 = hashlib.sha384(b"p384").digest()
    crypto = sdk.crypto_client(ec384.id, admin_credential)
    sig = crypto.sign(SignatureAlgorithm.es384, d384).signature
    assert len(sig) == 96
    _verify_ec(ec384, d384, sig, hashes.SHA384())
    assert crypto.verify(SignatureAlgorithm.es384, d384, sig).is_valid

    rsa_key = admin_client.create_rsa_key(unique_name("srsa"), size=2048, hardware_protected=True)
    d256 = hashlib.sha256(b"rsa").digest()
    crypto = sdk.crypto_client(rsa_key.id, admin_credential)
    rs = crypto.sign(SignatureAlgorithm.rs256, d256).signature
    _rsa_public(rsa_key).verify(rs, d256, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    ps = crypto.sign(SignatureAlgorithm.ps256, d256).signature
    _rsa_public(rsa_key).verify(
        ps,
        d256,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        Prehashed(hashes.SHA256()),
    )
    with pytest.raises(InvalidSignature):
        _rsa_public(rsa_key).verify(
            rs, hashlib.sha256(b"other").digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
        )


def test_audit_log_lines(
    emulator: EmulatorProcess,
    sdk: SdkFactory,
    admin_client: KeyClient,
    admin_credential: ClientSecretCredential,
) -> None:
    key = admin_client.create_ec_key(unique_name("audit"), hardware_protected=True)
    sdk.crypto_client(key.id, admin_credential).sign(
        SignatureAlgorithm.es256, hashlib.sha256(b"a").digest()
    )
    lines = [json.loads(x) for x in (emulator.state_dir / "audit.jsonl").read_text().splitlines()]
    mine = [e for e in lines if e["keyName"] == key.name]
    ops = [e["operationName"] for e in mine]
    assert "KeyCreate" in ops and "KeySign" in ops
    sign = next(e for e in mine if e["operationName"] == "KeySign")
    assert sign["category"] == "AuditEvent"
    assert sign["resultType"] == "Success" and sign["httpStatusCode"] == 200
    assert sign["keyVersion"] == key.properties.version
    assert sign["identity"]["claim"]["appid"] == ADMIN
    assert sign["time"].endswith("Z")


# -- managed identity through IMDS ----------------------------------------------------------
# Source: learn.microsoft.com "How to use managed identities for Azure resources on an Azure VM
# to acquire an access token": GET http://169.254.169.254/metadata/identity/oauth2/token
# ?api-version=2018-02-01&resource=...[&client_id=...] with header "Metadata: true"; 400
# bad_request_102 "Required metadata header not specified" without it. The unmodified SDK
# (azure-identity ImdsCredential, msal managed_identity._obtain_token_on_azure_vm) sends exactly
# that, to AZURE_POD_IDENTITY_AUTHORITY_HOST when set.


def test_imds_requires_the_metadata_header(emulator: EmulatorProcess) -> None:
    url = f"{emulator.imds_url}/metadata/identity/oauth2/token"
    params = {"api-version": "2018-02-01", "resource": "https://vault.azure.net"}
    assert emulator.imds_url.startswith("http://")  # IMDS is plain HTTP
    resp = httpx.get(url, params=params)
    assert resp.status_code == 400 and resp.json()["error"] == "bad_request_102"
    resp = httpx.get(url, params={**params, "client_id": "nobody"}, headers={"Metadata": "true"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


@pytest.mark.parametrize("endpoint", ["app-service", "imds"])
def test_user_assigned_managed_identity(
    emulator: EmulatorProcess,
    sdk: SdkFactory,
    admin_credential: ClientSecretCredential,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
) -> None:
    """The unmodified ManagedIdentityCredential, from App Service's endpoint (IDENTITY_ENDPOINT,
    IDENTITY_HEADER) or from IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST)."""
    from azure.identity import ManagedIdentityCredential

    client_id = unique_name(f"mi-{endpoint}")
    emulator.control.add_principal(client_id, ["crypto-user"], managed_identity="user")
    env = emulator.managed_identity_env() if endpoint == "app-service" else emulator.imds_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    known = sdk.key_client(admin_credential).create_ec_key(
        unique_name("seen-by-mi"), hardware_protected=True
    )
    credential = ManagedIdentityCredential(client_id=client_id)
    names = {k.name for k in sdk.key_client(credential).list_properties_of_keys()}
    assert known.name in names
    events = [e for e in emulator.control.audit() if e["operationName"] == "KeyList"]
    assert events[-1]["identity"]["claim"]["appid"] == client_id
    if endpoint == "app-service":
        monkeypatch.setenv("IDENTITY_HEADER", "wrong")
        with pytest.raises(ClientAuthenticationError):
            ManagedIdentityCredential(client_id=client_id).get_token(
                "https://vault.azure.net/.default"
            )


def test_system_assigned_identity_through_imds_in_a_child_process(
    emulator: EmulatorProcess, sdk: SdkFactory, admin_credential: ClientSecretCredential
) -> None:
    """imds_env() is all a separate process needs: DefaultAzureCredential falls through to
    managed identity, which asks IMDS for the system-assigned identity's token."""
    known = sdk.key_client(admin_credential).create_ec_key(
        unique_name("seen-by-vm"), hardware_protected=True
    )
    client_id = unique_name("vm-identity")
    emulator.control.add_principal(client_id, ["crypto-user"], managed_identity="system")
    names = _names_listed_by_a_child(emulator, emulator.imds_env(), "DefaultAzureCredential()")
    assert known.name in names
    events = [e for e in emulator.control.audit() if e["operationName"] == "KeyList"]
    assert events[-1]["identity"]["claim"]["appid"] == client_id
