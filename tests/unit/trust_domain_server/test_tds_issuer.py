"""Issuer: JWT-SVIDs verified with PyJWT, X.509-SVIDs verified with cryptography; validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from unit.trust_domain_server.tds_fakes import FakeKeyManager, handle_for

from controlplane.keymanagers.base import KeyType
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.crypto import public_jwk
from controlplane.trust_domain_server.issuer import IssuanceError, Issuer, validate_spiffe_id
from controlplane.trust_domain_server.keyring import KeyKind, Keyring
from controlplane.trust_domain_server.metrics import Metrics

T0 = datetime(2030, 1, 1, tzinfo=UTC)
SID = "spiffe://example.org/ns/prod/sa/web"


def setup(
    key_type: KeyType = KeyType.EC_P256,
) -> tuple[Issuer, Keyring, ManualClock, FakeKeyManager, Metrics]:
    clock = ManualClock(T0)
    km = FakeKeyManager("default")
    ring = Keyring("example.org")
    ring.install_manager(handle_for(km, key_type=key_type))
    ring.rotate(clock.now())
    metrics = Metrics()
    return Issuer(ring, clock, metrics), ring, clock, km, metrics


def make_csr(sans: list[str] | None = None, key=None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w")])
    )
    if sans:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(s) for s in sans]),
            critical=False,
        )
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("key_type", "alg"),
    [(KeyType.EC_P256, "ES256"), (KeyType.EC_P384, "ES384"), (KeyType.RSA_2048, "RS256")],
)
def test_jwt_svid_verifies_with_pyjwt(key_type: KeyType, alg: str) -> None:
    issuer, ring, clock, _, metrics = setup(key_type)
    token = issuer.issue_jwt(SID, ["svc-a", "svc-b"], timedelta(minutes=5))
    rec = ring.current(KeyKind.JWT)
    assert rec is not None
    header = jwt.get_unverified_header(token)
    assert header["kid"] == rec.kid and header["alg"] == alg
    jwk = dict(public_jwk(rec.public_key_der), kid=rec.kid, use="jwt-svid")
    key = jwt.PyJWK.from_json(json.dumps(jwk)).key
    claims = jwt.decode(
        token,
        key,
        algorithms=[alg],
        audience="svc-b",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == SID and claims["aud"] == ["svc-a", "svc-b"]
    assert claims["iat"] == int(T0.timestamp())
    assert claims["exp"] == int((T0 + timedelta(minutes=5)).timestamp())
    # A tampered token must not verify.
    head, body, sig = token.split(".")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{head}.{body}.{sig[:-4]}AAAA",
            key,
            algorithms=[alg],
            audience="svc-b",
            options={"verify_exp": False, "verify_iat": False},
        )
    assert metrics.issued["jwt"] == 1


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
def test_x509_svid_chains_to_ca(key_type: KeyType) -> None:
    issuer, ring, clock, _, metrics = setup(key_type)
    leaf_key = rsa.generate_private_key(65537, 2048) if key_type.is_ec is False else None
    chain = issuer.issue_x509(SID, make_csr([SID], key=leaf_key), timedelta(hours=1))
    leaf, ca = chain
    ca_rec = ring.current(KeyKind.X509_CA)
    assert ca_rec is not None and ca.public_bytes(serialization.Encoding.DER) == ca_rec.ca_cert_der
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SID]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc == T0 + timedelta(hours=1)
    assert metrics.issued["x509"] == 1


def test_x509_svid_passes_cryptography_client_verifier() -> None:
    from cryptography.x509.verification import PolicyBuilder, Store

    issuer, *_ = setup()
    leaf, ca = issuer.issue_x509(SID, make_csr())
    verifier = (
        PolicyBuilder().store(Store([ca])).time(T0 + timedelta(minutes=1)).build_client_verifier()
    )
    verified = verifier.verify(leaf, [])
    assert x509.UniformResourceIdentifier(SID) in (verified.subjects or [])


def test_svid_cannot_outlive_its_key() -> None:
    issuer, ring, clock, _, _ = setup()
    rec = ring.current(KeyKind.JWT)
    assert rec is not None
    clock.set(rec.not_after - timedelta(minutes=1))  # late in the key's life, rotation stalled
    token = issuer.issue_jwt(SID, ["a"], timedelta(hours=1))
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == int(
        rec.not_after.timestamp()
    )


@pytest.mark.parametrize(
    ("spiffe_id", "fragment"),
    [
        ("spiffe://other.org/x", "trust domain"),
        ("https://example.org/x", "spiffe://"),
        ("spiffe://example.org", "path"),
        ("spiffe://example.org/", "path"),
        ("spiffe://example.org/a/../b", "dot segment"),
        ("spiffe://example.org/a?b=c", "query"),
        ("spiffe://example.org/a b", "may only contain"),
        # urlsplit drops tabs and line breaks: checked on the raw string that gets signed.
        ("spiffe://example.org/ns/prod/\tx", "U+0009"),
        ("spiffe://example.org/ns/pr\nod", "U+000A"),
        ("spiffe://exa\tmple.org/a", "U+0009"),
        ("spiffe://example.org/a/", "end with"),
    ],
)
def test_spiffe_id_validation(spiffe_id: str, fragment: str) -> None:
    with pytest.raises(IssuanceError) as err:
        validate_spiffe_id(spiffe_id, "example.org")
    assert fragment in err.value.reason and err.value.status == 400


def test_issue_rejections_are_400_with_reason_and_counted() -> None:
    issuer, _, _, km, metrics = setup()
    signs = km.signs
    cases = [
        (lambda: issuer.issue_jwt(SID, ["a"], timedelta(hours=5)), "exceeds the maximum 4:00:00"),
        (lambda: issuer.issue_jwt(SID, [], None), "audience"),
        (lambda: issuer.issue_jwt(SID, ["a"], timedelta(0)), "positive"),
        (lambda: issuer.issue_x509(SID, "not a csr"), "csr is not"),
        (lambda: issuer.issue_x509(SID, make_csr(["spiffe://example.org/other"])), "URI SANs"),
        (lambda: issuer.issue_x509("spiffe://evil.org/x", make_csr()), "trust domain"),
        (lambda: issuer.issue_x509(SID, make_csr(), timedelta(days=1)), "exceeds"),
    ]
    for call, fragment in cases:
        with pytest.raises(IssuanceError) as err:
            call()
        assert err.value.status == 400 and fragment in err.value.reason, err.value.reason
    assert km.signs == signs  # nothing was signed for a rejected request
    assert sum(metrics.failures.values()) == len(cases)


def test_csr_with_bad_signature_is_rejected() -> None:
    issuer, *_ = setup()
    pem = make_csr()
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF  # corrupt the signature
    bad = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(IssuanceError) as err:
        issuer.issue_x509(SID, bad)
    assert "signature" in err.value.reason


def test_key_manager_failure_is_503() -> None:
    issuer, _, _, km, metrics = setup()
    km.fail_sign = True
    with pytest.raises(IssuanceError) as err:
        issuer.issue_jwt(SID, ["a"])
    assert err.value.status == 503 and "could not sign" in err.value.reason
    assert metrics.failures[("jwt", "unavailable")] == 1
    assert "tds_svid_failures_total" in metrics.render({})
