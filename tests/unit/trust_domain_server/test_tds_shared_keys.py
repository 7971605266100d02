"""Shared keys mode (stable per-slot JWT key ids, kid from the public key) and stale-key
housekeeping on the injectable clock, with in-memory key managers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from unit.trust_domain_server.tds_fakes import FakeKeyManager, handle_for

from controlplane.keymanagers.base import KeyType, PublicKey
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.crypto import jwk_thumbprint
from controlplane.trust_domain_server.housekeeping import CLEANUP_INTERVAL, REFRESH_INTERVAL
from controlplane.trust_domain_server.keyring import (
    SHARED_JWT_KEY_IDS,
    KeyKind,
    KeyRecord,
    Keyring,
    Lifetimes,
)
from controlplane.trust_domain_server.server import TrustDomainServer

T0 = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


class SharedVault:
    """What servers sharing one vault see: a key id names one key for all of them."""

    def __init__(self) -> None:
        self.owner = FakeKeyManager("azureKeyVault")
        self.created: list[str] = []


class SharingManager(FakeKeyManager):
    """A fake that shares keys by id through a SharedVault (as Key Vault's sharedKeys mode
    does within 15 minutes), and keeps stale-key housekeeping calls."""

    shares_keys = True

    def __init__(self, vault: SharedVault) -> None:
        super().__init__("azureKeyVault")
        self.vault = vault
        self.refreshes: list[list[str]] = []
        self.cleanups: list[set[str]] = []
        self.fail_housekeeping = False

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        shared = self.vault.owner
        if key_id.startswith("jwt-signer-") and key_id in shared.keys:
            self.keys[key_id] = shared.keys[key_id]  # reuse the fresh shared key
            return self.get_public_key(key_id)
        pub = super().generate_key(key_id, key_type)
        shared.keys[key_id] = self.keys[key_id]
        self.vault.created.append(key_id)
        return pub

    def refresh_own_keys(self, in_use_key_ids: Any = ()) -> list[str]:
        from controlplane.keymanagers.base import TransientKeyManagerError

        if self.fail_housekeeping:
            raise TransientKeyManagerError("vault throttled")
        self.refreshes.append(list(in_use_key_ids))
        return []

    def delete_stale_keys(self, protected: Any = ()) -> list[str]:
        self.cleanups.append(set(protected))
        return []


def jwt_records(ring: Keyring) -> list[KeyRecord]:
    return [r for r in ring.records() if r.kind is KeyKind.JWT]


def test_shared_mode_alternates_slot_ids_and_kid_is_the_thumbprint() -> None:
    vault = SharedVault()
    rings = []
    for _ in range(2):
        ring = Keyring("example.org", Lifetimes(x509_ca=24 * H, jwt=24 * H))
        ring.install_manager(handle_for(SharingManager(vault)))
        ring.rotate(T0)
        rings.append(ring)
    a, b = (r.current(KeyKind.JWT) for r in rings)
    assert a is not None and b is not None
    assert a.key_id == b.key_id == SHARED_JWT_KEY_IDS[0]
    assert a.kid == b.kid == "jwt-" + jwk_thumbprint(a.public_key_der)
    # X.509 CA keys stay per server: random ids, two keys.
    x_a, x_b = (r.current(KeyKind.X509_CA) for r in rings)
    assert x_a is not None and x_b is not None and x_a.kid != x_b.kid
    assert x_a.key_id == x_a.kid
    assert vault.created.count(SHARED_JWT_KEY_IDS[0]) == 1

    # The next key goes to the other slot, never over the key still signing.
    for ring in rings:
        ring.rotate(T0 + 12 * H)
    nexts = [[r for r in jwt_records(ring) if r.state.value == "prepared"][0] for ring in rings]
    assert {n.key_id for n in nexts} == {SHARED_JWT_KEY_IDS[1]}
    assert nexts[0].kid == nexts[1].kid != a.kid
    for ring in rings:
        ring.rotate(T0 + 21 * H)  # activates b
        ring.rotate(T0 + 25 * H)  # the first a expired at 24 h; a is prepared again
    assert {r.key_id for r in jwt_records(rings[0])} == set(SHARED_JWT_KEY_IDS)


def test_default_mode_kid_is_the_key_id() -> None:
    ring = Keyring("example.org")
    km = FakeKeyManager("default")
    ring.install_manager(handle_for(km))
    ring.rotate(T0)
    rec = ring.current(KeyKind.JWT)
    assert rec is not None and rec.kid == rec.key_id and rec.kid.startswith("jwt-")
    assert rec.kid in km.keys


def test_shared_kid_survives_persistence_and_signs_with_the_key_id() -> None:
    clock = ManualClock(T0)
    vault = SharedVault()
    km = SharingManager(vault)
    server = TrustDomainServer("example.org", clock, lambda spec: km, lambda spec: "sha256:x")
    server.apply_config({"version": 1, "sections": {}})
    server.rotate()
    token = server.issuer.issue_jwt("spiffe://example.org/w", ["a"])
    header = jwt.get_unverified_header(token)
    rec = server.keyring.current(KeyKind.JWT)
    assert rec is not None and header["kid"] == rec.kid != rec.key_id
    keys = {k["kid"]: k for k in server.bundle_document()["keys"] if k["use"] == "jwt-svid"}
    key = jwt.PyJWK.from_json(json.dumps(keys[header["kid"]]))
    claims = jwt.decode(
        token, key.key, algorithms=["ES256"], audience="a", options={"verify_iat": False}
    )
    assert claims["sub"] == "spiffe://example.org/w"
    restored = KeyRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert (restored.kid, restored.key_id) == (rec.kid, rec.key_id)
    # Records written before key_id existed read back with key_id = kid.
    old = rec.to_dict()
    del old["key_id"]
    assert KeyRecord.from_dict(old).key_id == rec.kid


def test_housekeeping_runs_on_the_clock_with_protected_keys() -> None:
    clock = ManualClock(T0)
    km = SharingManager(SharedVault())
    server = TrustDomainServer("example.org", clock, lambda spec: km, lambda spec: "sha256:x")
    lifecycle = {"jwtKeyTTL": "54h", "x509CATTL": "54h"}  # prepare at 27 h, activate at 45 h
    server.apply_config({"version": 1, "sections": {"KeyLifecycle": {"document": lifecycle}}})
    server.rotate()
    assert len(km.refreshes) == 1
    assert km.cleanups == [], "no cleanup before a bundle arrived from the control plane"
    # X.509 CA entries carry no kid (X509-SVID §6.1): the control plane names every key in
    # key_ids, and those stay protected.
    server.set_bundle(
        {
            "version": 3,
            "key_ids": ["x509-ca-of-another-server"],
            "keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["MIIB"]}],
        }
    )
    server.rotate()
    assert len(km.refreshes) == 1 and len(km.cleanups) == 1
    protected = km.cleanups[0]
    own = {r.key_id for r in server.keyring.records()} | {r.kid for r in server.keyring.records()}
    assert own <= protected and "x509-ca-of-another-server" in protected
    assert SHARED_JWT_KEY_IDS[0] in km.refreshes[0]

    clock.advance(REFRESH_INTERVAL - timedelta(seconds=1))
    server.rotate()
    assert len(km.refreshes) == 1
    clock.advance(timedelta(seconds=1))
    server.rotate()
    assert len(km.refreshes) == 2 and len(km.cleanups) == 1

    # A failed refresh is retried soon, not after 6 h; rotation goes on meanwhile.
    km.fail_housekeeping = True
    clock.advance(REFRESH_INTERVAL)
    server.rotate()
    km.fail_housekeeping = False
    clock.advance(timedelta(minutes=10))
    server.rotate()
    assert len(km.refreshes) == 3

    clock.set(T0 + 30 * H)
    server.rotate()  # prepares the next keys
    assert len(km.cleanups) == 1
    clock.set(T0 + CLEANUP_INTERVAL + timedelta(seconds=1))
    server.rotate()  # activates them, retires the first ones, then cleans up
    assert len(km.cleanups) == 2
    # Keys retired but unexpired stay protected.
    retired = [r for r in server.keyring.records() if r.state.value == "retired"]
    assert retired and all(r.key_id in km.cleanups[1] for r in retired)


class RefreshOnlyManager(FakeKeyManager):
    """Has refresh_own_keys but not delete_stale_keys: housekeeping needs both."""

    def __init__(self) -> None:
        super().__init__("default")
        self.refreshes: list[list[str]] = []

    def refresh_own_keys(self, in_use_key_ids: Any = ()) -> list[str]:
        self.refreshes.append(list(in_use_key_ids))
        return []


def test_managers_without_housekeeping_are_left_alone() -> None:
    clock = ManualClock(T0)
    km = RefreshOnlyManager()
    server = TrustDomainServer("example.org", clock, lambda spec: km, lambda spec: "sha256:d")
    server.apply_config({"version": 1, "sections": {}})
    server.set_bundle({"version": 1, "keys": []})
    assert server.rotate() is True
    clock.advance(REFRESH_INTERVAL + timedelta(seconds=1))
    server.rotate()
    assert km.refreshes == []
