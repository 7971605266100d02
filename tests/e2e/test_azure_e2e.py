"""End to end with Azure Key Vault: a real control plane, real spirl-tds servers, and real
Key Vault emulator processes that the unmodified Azure SDK in the servers talks to over
HTTPS (Workload Identity through the emulator's Entra ID). Plumbing: support/azure.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.keys import KeyProperties

from support.azure import (
    SHARED,
    AzureEnv,
    azure_env,
    key_manager_doc,
    keys_of,
    lifecycle_doc,
)
from support.tds import (
    TD,
    Tds,
    ca_certificates,
    jwt_kids,
    kid_of,
    verify_jwt,
    verify_x509,
    wait_for,
)

pytestmark = pytest.mark.e2e

H = timedelta(hours=1)
D = timedelta(days=1)
NO_SIGN_APP = str(uuid.UUID(int=77))  # an app registration whose role lacks keys/sign/action
TDD_SCOPE = "trust-domain-deployment"


@pytest.fixture
def aenv(tmp_path: Path) -> Iterator[AzureEnv]:
    with azure_env(tmp_path) as env:
        yield env


class Issuing:
    """Issues JWT- and X.509-SVIDs from every server in a loop; records every failure."""

    def __init__(self, servers: list[Tds]) -> None:
        self.servers = servers
        self.failures: list[str] = []
        self.issued = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clients = [s.client(timeout=30) for s in self.servers]
        try:
            while not self._stop.is_set():
                for client in clients:
                    r = client.post(
                        "/v1/svid/jwt",
                        json={"spiffe_id": f"spiffe://{TD}/load", "audience": ["aud"]},
                    )
                    if r.status_code != 200:
                        self.failures.append(r.text)
                    self.issued += 1
                time.sleep(0.01)
        finally:
            for client in clients:
                client.close()

    def __enter__(self) -> Issuing:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def assert_tags(props: KeyProperties, server_id: str, kid: str) -> None:
    tags = props.tags or {}
    assert tags["spire-server-td"] == TD
    assert tags["spire-server-id"] == server_id
    assert tags["spire-key-id"] == kid
    assert tags["team"] == "identity"


def test_migration_default_to_azure_to_vault_b_and_back(aenv: AzureEnv) -> None:
    vault_a = aenv.start_vault("a")
    # 6 h keys: next key prepared at 3 h, activated at 5 h, expired at 6 h; SVIDs <= 1 h.
    aenv.set_config(lifecycle_doc("6h", "6h"))
    id_file = aenv.tmp / "ids" / "server-id"
    a = aenv.start_tds("a", "--key-identifier-file", str(id_file))
    server_id = id_file.read_text().strip()
    assert uuid.UUID(server_id) and (id_file.stat().st_mode & 0o777) == 0o600
    pid = a.process.pid
    default_kids = {k["kid"] for k in keys_of(a, type="default")}
    assert len(default_kids) == 2

    svids: list[tuple[str, Any, datetime]] = []  # every SVID issued, verified at the end

    def issue(label: str) -> str:
        token, chain = a.jwt(label, "1h"), a.x509(label, "1h")
        now = aenv.clock.now()
        verify_jwt(token, a.bundle(), now)  # verifies right when issued
        verify_x509(chain, a.bundle(), now)
        svids.append((token, chain, now))
        return token

    issue("on-default")

    # Step 2: apply the vendor's document. Active at once, no key in the vault yet.
    azure = {"vaultURL": vault_a.url, "keyTags": {"team": "identity"}}
    version = aenv.set_config(key_manager_doc(azure))
    wait_for(lambda: a.status()["applied_version"] == version, what="Azure config applied")
    st = a.status()
    assert st["key_manager"]["type"] == "azureKeyVault" and st["health"] == "HEALTHY"
    assert vault_a.listed() == [], "a swap must not create a key in the vault"
    assert {k["kid"] for k in st["keys"]} == default_kids
    assert kid_of(issue("after-swap")) in default_kids  # the old keys keep signing
    wait_for(
        lambda: (
            aenv.cp.client()
            .get(f"/v1/trust-domain-deployments/{aenv.tdd_id}/servers")
            .json()["items"][0]["key_manager"]["type"]
            == "azureKeyVault"
        ),
        what="the control plane sees the Azure key manager",
    )

    # Step 3: the next rotation makes HSM keys in the vault, tagged.
    aenv.jump_to(3 * H + timedelta(minutes=1))
    wait_for(lambda: len(keys_of(a, type="azureKeyVault")) == 2, what="Azure keys prepared")
    in_vault = {(p.tags or {}).get("spire-key-id"): p for p in vault_a.listed()}
    azure_kids = {k["kid"] for k in keys_of(a, type="azureKeyVault")}
    assert set(in_vault) == azure_kids
    for kid, props in in_vault.items():
        assert_tags(props, server_id, kid)
        assert vault_a.admin.get_key(str(props.name)).key_type == "EC-HSM"
    assert kid_of(issue("prepared")) in default_kids

    aenv.jump_to(5 * H + timedelta(minutes=1))
    wait_for(
        lambda: {k["kid"] for k in keys_of(a, state="active")} == azure_kids,
        what="Azure keys active",
    )
    assert kid_of(issue("on-azure")) in azure_kids
    # The old keys stay published (retired) until they expire; all SVIDs still verify.
    assert {k["kid"] for k in keys_of(a, state="retired")} == default_kids
    now = aenv.clock.now()
    for token, chain, at in svids:
        if at + H > now:
            verify_jwt(token, a.bundle(), now)
            verify_x509(chain, a.bundle(), now)
    azure_jwt_kids = {k["kid"] for k in keys_of(a, type="azureKeyVault", kind="jwt")}
    wait_for(
        lambda: (
            azure_jwt_kids <= jwt_kids(b := aenv.cp_bundle())
            and ca_certificates(a.bundle()) <= ca_certificates(b)
        ),
        what="Azure keys in the control plane bundle",
    )
    # Signs are Key Vault AuditEvents.
    assert any(e.get("operationName") == "KeySign" for e in vault_a.emu.control.audit())

    # The vendor's Verify step: the Key Vault key ids in use are logged.
    log = a.process.log_text()
    key_urls = {str(p.id) for p in in_vault.values()}
    assert all(url.startswith(vault_a.url + "keys/") for url in key_urls)
    assert all(url in log for url in key_urls), "Key Vault key ids not logged"

    # Vault A -> vault B (same tenant, another vault): again a swap without a key.
    vault_b = aenv.start_vault("b")
    version = aenv.set_config(
        key_manager_doc({"vaultURL": vault_b.url, "keyTags": {"team": "identity"}})
    )
    wait_for(lambda: a.status()["applied_version"] == version, what="vault B applied")
    assert vault_b.listed() == []
    log = a.process.log_text()
    swap_log = log[log.rfind("applied config version") :]
    assert all(url in swap_log.split("\n", 1)[0] for url in key_urls), "keys not logged on swap"
    aenv.jump_to(6 * H + timedelta(minutes=2))  # old default keys expire; next keys -> vault B
    wait_for(lambda: len(vault_b.listed()) == 2, what="keys created in vault B")
    wait_for(lambda: not keys_of(a, type="default"), what="default keys expired")
    assert kid_of(issue("still-vault-a")) in azure_kids  # vault A's key is still current
    b_kids = {p.tags["spire-key-id"] for p in vault_b.listed() if p.tags}
    aenv.jump_to(8 * H + timedelta(minutes=2))
    wait_for(
        lambda: {k["kid"] for k in keys_of(a, state="active")} == b_kids, what="vault B keys active"
    )
    assert kid_of(issue("on-vault-b")) in b_kids

    # Azure back to default: the next keys are local again, vault B's keys drain.
    version = aenv.set_config(key_manager_doc(None))
    wait_for(lambda: a.status()["key_manager"]["type"] == "default", what="back to default")
    aenv.jump_to(9 * H + timedelta(minutes=3))  # vault A keys expire, its manager closes
    wait_for(lambda: len(keys_of(a, type="default")) == 2, what="default keys prepared")
    aenv.jump_to(11 * H + timedelta(minutes=3))
    wait_for(
        lambda: all(k["key_manager"]["type"] == "default" for k in keys_of(a, state="active")),
        what="default keys active",
    )
    token = issue("default-again")
    assert kid_of(token) not in b_kids | azure_kids | default_kids
    now = aenv.clock.now()
    for token, chain, at in svids:  # everything still unexpired verifies
        if at + H > now:
            verify_jwt(token, a.bundle(), now)
            verify_x509(chain, a.bundle(), now)
    assert "closing key manager" in a.process.log_text()
    assert a.process.pid == pid and a.process.proc.poll() is None
    metrics = a.metrics()
    assert "tds_svid_failures_total{" not in metrics


def test_refusals_throttling_and_outage_never_fail_an_issuance(aenv: AzureEnv) -> None:
    vault = aenv.start_vault("a")
    aenv.set_config(lifecycle_doc("6h", "6h"))
    a = aenv.start_tds("a", "--key-identifier-value", "server-a")
    default_kids = {k["kid"] for k in a.status()["keys"]}

    def outcome(version: int) -> dict[str, Any]:
        return wait_for(
            lambda: (
                (
                    # The attempt's outcome, not its start (a previous NACK's error may linger).
                    (x := a.status())["applied_version"] == version
                    or f"config version {version} not applied" in (x["error"] or "")
                )
                and x
            ),
            what=f"config {version} attempted",
        )

    with Issuing([a]) as load:
        # A Standard tier vault is refused (NACK); the old manager keeps signing.
        vault.emu.control.set_sku("standard")
        version = aenv.set_config(key_manager_doc({"vaultURL": vault.url}))
        st = outcome(version)
        assert st["health"] == "UNHEALTHY" and st["key_manager"]["type"] == "default"
        assert "Standard tier" in st["error"] and "Premium" in st["error"]
        vault.emu.control.set_sku("premium")

        # An identity that may do everything with keys but sign (a custom role): refused,
        # naming the data action and the built-in role that grants it.
        vault.emu.control.define_role(
            "keys-but-sign",
            ["Microsoft.KeyVault/vaults/keys/*"],
            ["Microsoft.KeyVault/vaults/keys/sign/action"],
        )
        vault.emu.control.add_principal(
            NO_SIGN_APP, ["keys-but-sign"], client_secret="no-sign-secret"
        )
        secret_file = aenv.tmp / "no-sign-secret"
        secret_file.write_text("no-sign-secret\n")
        secret_file.chmod(0o600)
        version = aenv.set_config(
            key_manager_doc(
                {
                    "vaultURL": vault.url,
                    "credentials": {
                        "clientSecret": {
                            "tenantID": vault.emu.tenant_id,
                            "clientID": NO_SIGN_APP,
                            "clientSecretFile": str(secret_file),
                        }
                    },
                }
            )
        )
        st = outcome(version)
        assert st["health"] == "UNHEALTHY" and st["key_manager"]["type"] == "default"
        assert "sign" in st["error"] and "Key Vault Crypto User" in st["error"]
        assert "no-sign-secret" not in json.dumps(st)

        # A good document heals; still no key in the vault.
        version = aenv.set_config(key_manager_doc({"vaultURL": vault.url}))
        st = outcome(version)
        assert st["health"] == "HEALTHY" and st["key_manager"]["type"] == "azureKeyVault"
        assert vault.listed() == []

        # Vault outage at rotation time: the default keys keep signing, rotation retries.
        vault.emu.control.add_fault("outage", target="vault")
        aenv.jump_to(3 * H + timedelta(minutes=1))
        wait_for(
            lambda: "generating" in (a.status()["error"] or ""), what="rotation failure reported"
        )
        assert not keys_of(a, type="azureKeyVault")
        wait_for(  # reported to the control plane as it happens, not at the next heartbeat
            lambda: (
                "generating"
                in (
                    aenv.cp.client()
                    .get(f"/v1/trust-domain-deployments/{aenv.tdd_id}/servers")
                    .json()["items"][0]["error"]
                    or ""
                )
            ),
            what="the control plane sees the failed rotation",
        )
        time.sleep(0.3)  # a few more failed attempts while SVIDs are being issued
        vault.emu.control.clear_faults()
        wait_for(
            lambda: len(keys_of(a, type="azureKeyVault")) == 2,
            timeout=30,
            what="rotation retried after the outage",
        )
        wait_for(lambda: a.status()["health"] == "HEALTHY", what="healthy again")
        aenv.jump_to(5 * H + timedelta(minutes=1))
        wait_for(
            lambda: all(
                k["key_manager"]["type"] == "azureKeyVault" for k in keys_of(a, state="active")
            ),
            what="Azure keys active",
        )

        # A throttling storm on key creation at the next rotation: ridden out with
        # Retry-After; the current (Azure) key keeps signing meanwhile.
        vault.emu.control.add_fault("throttle", operations=["KeyCreate"], count=3, retry_after=1)
        aenv.jump_to(7 * H)  # Azure keys from ~3 h: prepare at ~6 h, activate at ~8 h
        wait_for(
            lambda: len(keys_of(a, state="prepared")) == 2,
            timeout=30,
            what="keys prepared through the storm",
        )
        assert vault.emu.control.faults() == []  # the storm was used up
    assert "answered 429" in a.process.log_text()
    assert load.issued > 50 and load.failures == [], load.failures[:3]
    assert not {kid_of(a.jwt("after"))} & default_kids
    metrics = a.metrics()
    assert "tds_config_nacks_total 2" in metrics
    assert "tds_svid_failures_total{" not in metrics


def test_shared_keys_across_servers_and_stale_key_cleanup(aenv: AzureEnv) -> None:
    vault = aenv.start_vault("a")
    # Long keys: at day 15 the first keys are still published (protected), and the next
    # JWT key is prepared (day 10) by both servers at the same moment.
    aenv.set_config(lifecycle_doc("20d", "20d"))
    aenv.set_config(
        key_manager_doc(
            {"vaultURL": vault.url, "keyTags": {"team": "identity"}, "sharedKeys": SHARED}
        )
    )
    # A key of a server that vanished long ago (never in any bundle).
    gone = vault.admin.create_ec_key(
        "spire-key-of-a-vanished-server",
        curve="P-256",
        hardware_protected=True,
        tags={"spire-server-td": TD, "spire-server-id": "server-gone", "spire-key-id": "x509-ca-0"},
    )
    a = aenv.start_tds("a", "--key-identifier-value", "server-a")
    b = aenv.start_tds("b", "--key-identifier-value", "server-b")
    c = aenv.start_tds("c", "--key-identifier-value", "server-c")
    servers = (a, b, c)
    # The vendor's Verify step at startup: the Key Vault key ids in use are logged.
    ready = [ln for ln in a.process.log_text().splitlines() if " ready; " in ln]
    assert ready and f"{vault.url}keys/" in ready[-1]

    # One JWT key in the vault for all three; X.509 CA keys stay per server.
    jwt_keys = [p for p in vault.listed() if re.search(r"-jwt-signer-[ab]$", p.name or "")]
    assert len(jwt_keys) == 1
    assert len(list(vault.admin.list_properties_of_key_versions(jwt_keys[0].name))) == 1
    jwt_kids = {k["kid"] for s in servers for k in keys_of(s, kind="jwt")}
    assert len(jwt_kids) == 1
    x509_kids = {k["kid"] for s in servers for k in keys_of(s, kind="x509-ca")}
    assert len(x509_kids) == 3
    assert {p.tags["spire-key-id"] for p in vault.listed() if p.tags} >= x509_kids

    def bundle_count(bundle: dict[str, Any], kid: str) -> int:
        return sum(k.get("kid") == kid for k in bundle["keys"])

    (jwt_kid,) = jwt_kids
    wait_for(
        lambda: (
            (b := aenv.cp_bundle())
            and bundle_count(b, jwt_kid) == 1
            and all(ca_certificates(s.bundle()) <= ca_certificates(b) for s in servers)
        ),
        what="the control plane bundle carries the shared key once",
    )
    for s in servers:
        assert bundle_count(s.bundle(), jwt_kid) == 1
    token = a.jwt("from-a")
    for s in servers:  # a JWT from one server verifies with every server's bundle
        verify_jwt(token, s.bundle(), aenv.clock.now())
        assert kid_of(s.jwt("x")) == jwt_kid

    # Server c vanishes; its X.509 CA key stays in the bundle until day 20.
    c.stop()
    aenv.servers.remove(c)

    # Day 15: keys not updated since day 0 are stale. Both servers also prepare the next
    # JWT key at the same tick (a race), and must still end with one shared key.
    aenv.jump_to(15 * D)
    for s in (a, b):
        wait_for(lambda s=s: len(keys_of(s, kind="jwt")) == 2, what="next JWT key prepared")
    for s in (a, b):  # one cleanup at start, one at day 15
        wait_for(
            lambda s=s: s.process.log_text().count("stale key cleanup with azureKeyVault") >= 2,
            what="stale key cleanup at day 15",
        )
    assert "deleted stale Key Vault key" in a.process.log_text() + b.process.log_text()
    names = {p.name for p in vault.listed()}
    assert gone.name not in names
    wait_for(  # soft-deleted: listed as deleted once the (asynchronous) deletion completes
        lambda: gone.name in {d.name for d in vault.admin.list_deleted_keys()},
        what="the stale key in the deleted keys",
    )
    # Protected: c's CA key (stale, but may still verify SVIDs until day 20), and every
    # key a and b use.
    in_vault = {(p.tags or {}).get("spire-key-id") for p in vault.listed()}
    assert x509_kids <= in_vault
    server_c_keys = [
        p for p in vault.listed() if (p.tags or {}).get("spire-server-id") == "server-c"
    ]
    assert server_c_keys, "the vanished server's still-published key was deleted"
    next_kids = [{k["kid"] for k in keys_of(s, kind="jwt", state="prepared")} for s in (a, b)]
    assert next_kids[0] == next_kids[1] and len(next_kids[0]) == 1, "racing servers diverged"
    wait_for(
        lambda: bundle_count(aenv.cp_bundle(), next(iter(next_kids[0]))) == 1,
        what="the next shared key once in the bundle",
    )
    # Own keys were refreshed at day 15 (the vault's clock), so nobody sees them stale.
    refreshed = [
        p
        for p in vault.listed()
        if (p.tags or {}).get("spire-server-id") in ("server-a", "server-b")
        and p.updated_on is not None
    ]
    assert refreshed and all(p.updated_on > aenv.clock.now() - D for p in refreshed)


def test_config_set_wait_follows_the_rollout_to_done_refusal_or_timeout(aenv: AzureEnv) -> None:
    vault = aenv.start_vault("a", sku="standard")
    a = aenv.start_tds("a", "--key-identifier-value", "server-a")
    b = aenv.start_tds("b", "--key-identifier-value", "server-b")

    def set_and_wait(doc: str, *flags: str) -> subprocess.CompletedProcess[str]:
        path = aenv.tmp / f"doc-{time.monotonic_ns()}.yaml"
        path.write_text(doc)
        return aenv.cp.spirlctl(
            "config",
            "set",
            TDD_SCOPE,
            "--id",
            aenv.tdd_id,
            str(path),
            "--wait",
            *flags,
            check=False,
        )

    # A healthy fleet: exit 0 once both servers applied it; plain progress lines (no terminal).
    done = set_and_wait(lifecycle_doc("6h", "6h"), "--timeout", "60s")
    assert done.returncode == 0, done.stderr
    assert "2/2 applied" in done.stdout and "complete" in done.stdout

    # A Standard tier vault: the first refusal ends the wait (exit 3), naming the server and why.
    refused = set_and_wait(key_manager_doc({"vaultURL": vault.url}), "--timeout", "60s")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    named = [ln for ln in refused.stderr.splitlines() if "refused by" in ln]
    assert named and all("Standard tier" in ln for ln in named)
    assert any(s.server_id in named[0] for s in (a, b))
    refused_version = aenv.cp.spirlctl_json("config", "get", TDD_SCOPE, "--id", aenv.tdd_id)[
        "version"
    ]
    rollout_url = f"/v1/rollouts/{TDD_SCOPE}/{aenv.tdd_id}"
    wait_for(
        lambda: aenv.cp.client().get(rollout_url).json()["counts"]["refused"] == 2,
        what="both refusals reported",
    )
    for s in (a, b):
        assert s.status()["key_manager"]["type"] == "default"  # they kept the previous one
    again = aenv.cp.spirlctl(
        "rollout", "status", TDD_SCOPE, "--id", aenv.tdd_id, "--timeout", "0", check=False
    )
    assert again.returncode == 3
    assert a.server_id in again.stderr and b.server_id in again.stderr

    # b stalls (SIGSTOP: connected, silent): a applies the fixed vault, b never does in time.
    vault.emu.control.set_sku("premium")
    os.kill(b.process.pid, signal.SIGSTOP)
    try:
        fixed = key_manager_doc({"vaultURL": vault.url, "keyTags": {"team": "identity"}})
        timed_out = set_and_wait(fixed, "--timeout", "10s", "-o", "json")
    finally:
        os.kill(b.process.pid, signal.SIGCONT)
    assert timed_out.returncode == 4, timed_out.stdout + timed_out.stderr
    result = json.loads(timed_out.stdout)
    counts = result["rollout"]["counts"]
    assert (counts["targeted"], counts["applied"], counts["pending"]) == (2, 1, 1)
    assert f"pending on {b.server_id}" in timed_out.stderr

    # `rollout status` follows that change to its end, like `kubectl rollout status`.
    later = aenv.cp.spirlctl(
        "rollout",
        "status",
        TDD_SCOPE,
        "--id",
        aenv.tdd_id,
        "--version",
        str(result["version"]),
        "--timeout",
        "60s",
    )
    assert "2/2 applied" in later.stdout
    # The refused version is superseded: servers that hold the later one count as applied.
    superseded = aenv.cp.spirlctl(
        "rollout", "status", TDD_SCOPE, "--id", aenv.tdd_id, "--version", str(refused_version)
    )
    assert "complete" in superseded.stdout and "now at version" in superseded.stdout
