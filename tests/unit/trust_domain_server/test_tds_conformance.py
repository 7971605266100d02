"""What a trust domain server serves, against the SPIFFE specs, with py-spiffe as the verifier:
certificate profiles (X509-SVID Appendix A), bundle entries (X509-SVID and JWT-SVID §6.1), and
its own `spiffe_sequence` (Trust Domain and Bundle §4.1.1) across rotation, a key manager swap
and a restart."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from unit.trust_domain_server.tds_fakes import FakeKeyManager

from controlplane.keymanagers import KeyManagerContext, build_key_manager, key_manager_digest
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.keyring import KeyKind
from controlplane.trust_domain_server.server import TrustDomainServer
from controlplane.trust_domain_server.state import StateStore

from support.spiffe_verifier import (
    SequenceLog,
    parse_bundle,
    validate_jwt_svid,
    validate_x509_svid,
)
from support.tds import new_csr

T0 = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
TD = "example.org"
SID = f"spiffe://{TD}/conformance"


def _config(version: int, ext: dict[str, Any], lifetime: str = "6h") -> dict[str, Any]:
    return {
        "version": version,
        "sections": {
            "KeyManager": {"document": {"section": "KeyManager", "spec": {"extensions": ext}}},
            "KeyLifecycle": {
                "document": {
                    "section": "KeyLifecycle",
                    "spec": {"x509CATTL": lifetime, "jwtKeyTTL": lifetime},
                }
            },
        },
    }


def _server(clock: ManualClock, store: StateStore | None = None) -> TrustDomainServer:
    def factory(spec: Any) -> FakeKeyManager:
        ((name, _),) = (spec.get("extensions") or {"default": {}}).items()
        return FakeKeyManager(name)

    return TrustDomainServer(TD, clock, factory, key_manager_digest, store)


def _svids(
    server: TrustDomainServer,
) -> tuple[str, list[x509.Certificate], ec.EllipticCurvePrivateKey]:
    csr, key = new_csr()
    token = server.issuer.issue_jwt(SID, ["conformance"], timedelta(minutes=30))
    return token, server.issuer.issue_x509(SID, csr, timedelta(minutes=30)), key


def test_certificate_profiles_follow_x509_svid_appendix_a() -> None:
    server = _server(ManualClock(T0))
    server.apply_config(_config(1, {}))
    server.rotate()
    _, (leaf, ca), _ = _svids(server)
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ca_usage.critical
    assert ca_usage.value.key_cert_sign and ca_usage.value.crl_sign
    assert not ca_usage.value.digital_signature
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert leaf_usage.critical and leaf_usage.value.digital_signature
    assert not leaf_usage.value.key_cert_sign and not leaf_usage.value.crl_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_py_spiffe_accepts_bundle_and_svids_through_rotation_and_a_swap() -> None:
    clock = ManualClock(T0)
    server = _server(clock)
    server.apply_config(_config(1, {}))
    server.rotate()
    outstanding = []
    sequences = SequenceLog()
    kids: set[str] = set()
    for step in range(40):  # 40 x 20 min: several 6 h rotations, a swap at step 10
        if step == 10:
            assert server.apply_config(_config(2, {"webhook": {"url": "https://ks"}}))
        server.rotate()
        now = clock.now()
        outstanding = [s for s in outstanding if s[0] > now] + [
            (now + timedelta(minutes=30), *_svids(server))
        ]
        document = server.bundle_document()
        parse_bundle(document, TD)
        sequences.record("server", "test", document)
        for _, token, chain, key in outstanding:
            validate_jwt_svid(token, document, TD, "conformance", at=now)
            validate_x509_svid(chain, key, document, TD, at=now)
        kids |= {k["kid"] for k in document["keys"] if k["use"] == "jwt-svid"}
        clock.advance(timedelta(minutes=20))
    managers = {r.km_type for r in server.keyring.records()}
    assert managers == {"webhook"} and len(kids) >= 4  # rotated, and the swap took effect
    assert sequences.check() >= 4  # one number per key set, never backwards


def test_served_sequence_moves_with_content_and_survives_a_restart(tmp_path: Path) -> None:
    ctx = KeyManagerContext(
        data_dir=tmp_path / "km", kek=os.urandom(32), trust_domain=TD, server_id="s1"
    )
    clock = ManualClock(T0)

    def start() -> TrustDomainServer:
        return TrustDomainServer(
            TD,
            clock,
            lambda spec: build_key_manager(spec, ctx),
            key_manager_digest,
            StateStore(tmp_path / "data"),
        )

    first = start()
    first.apply_config(_config(1, {}, lifetime="24h"))
    first.rotate()
    served = first.bundle_document()
    assert served["spiffe_refresh_hint"] == 300  # 24 h keys: the 5-minute ceiling
    assert not first.rotate()  # no change, same number
    assert first.bundle_document() == served
    clock.advance(13 * H)  # past half the lifetime: next keys are prepared and published
    assert first.rotate()
    prepared = first.bundle_document()
    assert prepared["spiffe_sequence"] > served["spiffe_sequence"]
    assert len(prepared["keys"]) == 4
    first.close()

    second = start()
    assert second.restore()
    assert second.bundle_document() == prepared  # same content, same number after a restart
    clock.advance(12 * H)  # the first keys expire while it runs
    second.rotate()
    after = second.bundle_document()
    assert after["spiffe_sequence"] > prepared["spiffe_sequence"] and len(after["keys"]) == 2
    second.close()

    # Content that changed while it was stopped gets a new number at start.
    clock.advance(13 * H)
    third = start()
    assert third.restore()
    third.rotate()
    assert third.bundle_document()["spiffe_sequence"] > after["spiffe_sequence"]


def test_refresh_hint_follows_the_shortest_key_lifetime() -> None:
    server = _server(ManualClock(T0))
    server.apply_config(_config(1, {}, lifetime="10m"))
    server.rotate()
    # 10-minute keys: published at 5 min, signing at 8 min 20 s; a sixth of the lifetime.
    assert server.bundle_document()["spiffe_refresh_hint"] == 100
    current = server.keyring.current(KeyKind.JWT)
    assert current is not None and current.lifetime == timedelta(minutes=10)


def test_state_from_before_own_numbering_continues_above_the_control_planes(
    tmp_path: Path,
) -> None:
    # Earlier versions served the control plane's number; after the upgrade the server's own
    # number must not fall below what consumers saw.
    clock = ManualClock(T0)
    first = _server(clock, StateStore(tmp_path))
    first.apply_config(_config(1, {}))
    first.rotate()
    first.set_bundle({"version": 57, "keys": []})
    first.close()
    state_file = tmp_path / "state.json"
    state = json.loads(state_file.read_text())
    del state["served_bundle"]
    state_file.write_text(json.dumps(state))
    second = _server(clock, StateStore(tmp_path))
    assert second.restore()
    assert second.bundle_document()["spiffe_sequence"] == 58
