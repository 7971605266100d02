"""30 simulated days: random key manager changes (some rejected), control plane outages,
steady issuance. Every SVID must verify against the bundle until it expires, no key leaves
the bundle while an unexpired SVID needs it, the bundle stays bounded, no key manager ever
holds more than three keys of a kind (expired keys are released), and the server's
`spiffe_sequence` names one content and never goes backwards."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from unit.trust_domain_server.tds_fakes import FakeKeyManager

from controlplane.bundles import jwt_entry, x509_entry
from controlplane.keymanagers import key_manager_digest
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.keyring import KeyKind, svid_ttl_cap
from controlplane.trust_domain_server.server import TrustDomainServer

from support.spiffe_verifier import SequenceLog

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LIFETIME = timedelta(hours=6)
STEP = timedelta(minutes=20)
SID = "spiffe://example.org/sim"


@dataclass
class Svid:
    kind: str
    kid: str
    expires: datetime
    token: str | None = None
    leaf: x509.Certificate | None = None


class ControlPlaneBundle:
    """What the control plane does with status reports: keep keys until not_after."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[datetime, dict[str, Any]]] = {}
        self.version = 0

    def merge(self, report: dict[str, Any], now: datetime) -> None:
        for key in report["keys"]:
            if key["kid"] not in self.keys:
                if key["kind"] == "jwt":
                    entry = jwt_entry(key["jwk"], key["kid"])
                else:
                    entry = x509_entry(key["jwk"], base64.b64decode(key["x5c"][0]))
                self.keys[key["kid"]] = (datetime.fromisoformat(key["not_after"]), entry)
                self.version += 1
        for kid, (not_after, _) in list(self.keys.items()):
            if not_after <= now:
                del self.keys[kid]
                self.version += 1

    def document(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "key_ids": sorted(self.keys),
            "keys": [jwk for _, jwk in self.keys.values()],
        }


_parsed: dict[str, Any] = {}


def _key(jwk: dict[str, Any]) -> Any:
    """Parse a bundle entry once."""
    cache_key = json.dumps(jwk, sort_keys=True)
    if cache_key not in _parsed:
        if jwk["use"] == "jwt-svid":
            _parsed[cache_key] = jwt.PyJWK.from_json(json.dumps(jwk))
        else:
            _parsed[cache_key] = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
    return _parsed[cache_key]


def verify(svid: Svid, bundle_keys: list[dict[str, Any]], now: datetime) -> None:
    if svid.kind == "jwt":
        keys = {k["kid"]: k for k in bundle_keys if k["use"] == "jwt-svid"}
    else:  # X.509 CA entries carry no kid: find the CA by its certificate
        keys = {_key(k).subject.rfc4514_string(): k for k in bundle_keys if k["use"] == "x509-svid"}
    assert svid.kid in keys, (
        f"{svid.kind} SVID signed by {svid.kid} unverifiable: key left the bundle"
    )
    jwk = keys[svid.kid]
    if svid.kind == "jwt":
        assert svid.token
        key = _key(jwk)
        claims = jwt.decode(
            svid.token,
            key.key,
            algorithms=[key.algorithm_name],
            audience="a",
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["exp"] > now.timestamp()
    else:
        assert svid.leaf is not None
        ca = _key(jwk)
        svid.leaf.verify_directly_issued_by(ca)
        assert ca.not_valid_before_utc <= now <= ca.not_valid_after_utc


def test_thirty_days_of_swaps_outages_and_rotation() -> None:
    rng = random.Random(20300101)
    clock = ManualClock(T0)
    built: dict[str, FakeKeyManager] = {}

    def factory(spec: Any) -> FakeKeyManager:
        ((name, conf),) = (spec.get("extensions") or {"default": {}}).items()
        km = FakeKeyManager(name, fail_check=conf.get("fail") if conf else None)
        built[key_manager_digest(spec)] = km
        return km

    server = TrustDomainServer("example.org", clock, factory, key_manager_digest)
    lifecycle = {
        "document": {"section": "KeyLifecycle", "spec": {"x509CATTL": "6h", "jwtKeyTTL": "6h"}}
    }

    def cfg(version: int, ext: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": version,
            "sections": {
                "KeyManager": {"document": {"section": "KeyManager", "spec": {"extensions": ext}}},
                "KeyLifecycle": lifecycle,
            },
        }

    server.apply_config(cfg(1, {}))
    server.rotate()
    cp = ControlPlaneBundle()
    cp_up = True
    version = 1
    pending: dict[str, Any] | None = None
    outstanding: list[Svid] = []
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    issued = swaps_seen = nacks = 0
    max_local = 0
    sequences = SequenceLog()
    choices = [
        {},
        {"webhook": {"url": "https://ks"}},
        {"azureKeyVault": {"vaultURL": "https://v"}},
        {"webhook": {"url": "https://down", "fail": "unreachable"}},
    ]
    end = T0 + timedelta(days=30)
    while clock.now() < end:
        now = clock.advance(STEP)
        # Control plane outages: a few hours at a time.
        if rng.random() < 0.02:
            cp_up = not cp_up
        if rng.random() < 0.03:  # an operator changes the key manager
            version += 1
            pending = cfg(version, dict(rng.choice(choices)))
        if cp_up and pending is not None:  # delivered only while the control plane is up
            if not server.apply_config(pending):
                nacks += 1
            pending = None
        server.rotate()
        if cp_up:
            cp.merge(server.status_report(), now)
            server.set_bundle(cp.document())
        # Issue a few SVIDs with random TTLs up to the cap.
        for _ in range(1):
            rec = server.keyring.current(KeyKind.JWT)
            assert rec is not None
            ttl = timedelta(
                seconds=rng.randint(60, int(svid_ttl_cap(rec.lifetime).total_seconds()))
            )
            token = server.issuer.issue_jwt(SID, ["a"], ttl)
            outstanding.append(
                Svid("jwt", jwt.get_unverified_header(token)["kid"], now + ttl, token=token)
            )
            leaf, _ = server.issuer.issue_x509(SID, csr, ttl)
            issuer = leaf.issuer.rfc4514_string()
            outstanding.append(Svid("x509", issuer, leaf.not_valid_after_utc, leaf=leaf))
            issued += 2
        outstanding = [s for s in outstanding if s.expires > now]
        served = server.bundle_document()
        sequences.record("server", "sim", served)
        local = served["keys"]
        own_ids = {r.kid for r in server.keyring.records()} | {
            base64.b64encode(r.ca_cert_der).decode()
            for r in server.keyring.records()
            if r.ca_cert_der
        }
        own = [k for k in local if k.get("kid", (k.get("x5c") or [""])[0]) in own_ids]
        max_local = max(max_local, len(own))
        assert len(own) <= 6, "bundle grows without bound"
        for km in built.values():
            kinds = [k.split("-")[0] for k in km.keys]  # "jwt-…" / "x509-ca-…"
            assert max((kinds.count(k) for k in set(kinds)), default=0) <= 3, "keys leak"
        for svid in outstanding:
            verify(svid, local, now)
            if cp_up:
                verify(svid, cp.document()["keys"], now)
        swaps_seen = server.metrics.swaps

    assert issued > 4000 and server.metrics.failures == {}
    assert swaps_seen >= 5 and nacks >= 1
    # Every manager that is neither active nor holding a live key has been closed.
    live = {r.km_digest for r in server.keyring.records()}
    active = server.keyring.active_manager
    for digest, km in built.items():
        if digest not in live and (active is None or digest != active.digest):
            assert km.closed, f"key manager {km.type_name} {digest} leaked"
    assert max_local >= 4  # rotation overlap actually happened
    # One key set per number, never backwards; and it moved with the content, many times.
    assert sequences.check() > 100
