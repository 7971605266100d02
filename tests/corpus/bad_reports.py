"""Bad status reports: changes that turn a real report's keys into what a hostile or broken
server could send, with the JSON Pointer and a fragment of the reason the control plane must
answer with (400, nothing stored). Each change takes the report's `keys` sorted by kind
(`[jwt, x509-ca]`) of a server whose clock reads `T0`, and edits them in place.

Import it by path: `from corpus.bad_reports import REPORT_CASES, T0`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from controlplane.keymanagers.signatures import b64url_decode, b64url_encode, public_jwk

__all__ = ["REPORT_CASES", "T0", "TD", "ReportCase"]

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TD = "example.org"
Keys = list[dict[str, Any]]


@dataclass(frozen=True)
class ReportCase:
    name: str
    change: Callable[[Keys], None]
    pointer: str
    reason: str  # a fragment of the message


def _other_ca(key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey) -> str:
    """A CA certificate for `key` in TD, signed by `signer`."""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(hours=24))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{TD}")]),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _not_self_signed(keys: Keys) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    keys[1]["jwk"] = public_jwk(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    keys[1]["x5c"] = [_other_ca(key, ec.generate_private_key(ec.SECP256R1()))]
    keys[1]["not_after"] = (T0 + timedelta(hours=24)).isoformat()


def _rsa_1024(keys: Keys) -> None:
    numbers = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
    keys[0]["jwk"] = {
        "kty": "RSA",
        "n": b64url_encode(numbers.n.to_bytes(128, "big")),
        "e": b64url_encode(numbers.e.to_bytes(3, "big")),
    }


def _set(path: str, value: object) -> Callable[[Keys], None]:
    def change(keys: Keys) -> None:
        *parents, last = path.split("/")
        target: Any = keys
        for part in parents:
            target = target[int(part) if part.isdigit() else part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Callable[[Keys], None]:
    def change(keys: Keys) -> None:
        index, member = path.split("/")
        del keys[int(index)][member]

    return change


LATER = (T0 + timedelta(days=400)).isoformat()

_CASES: list[tuple[str, Callable[[Keys], None], str, str]] = [
    ("private EC member", _set("0/jwk/d", "c2VjcmV0"), "/keys/0/jwk", "private"),
    (
        "symmetric key",
        _set("0/jwk", {"kty": "oct", "k": "c2VjcmV0"}),
        "/keys/0/jwk",
        "symmetric",
    ),
    (
        "unknown kty",
        _set("0/jwk", {"kty": "OKP", "crv": "Ed25519", "x": "AA"}),
        "/keys/0/jwk/kty",
        "EC or RSA",
    ),
    ("extra JWK member", _set("0/jwk/alg", "ES256"), "/keys/0/jwk", "unexpected member"),
    ("P-521", _set("0/jwk/crv", "P-521"), "/keys/0/jwk/crv", "P-256 or P-384"),
    ("point off the curve", _set("0/jwk/y", b64url_encode(b"\x01" * 32)), "/keys/0/jwk", "usable"),
    ("RSA 1024", _rsa_1024, "/keys/0/jwk", "usable"),
    ("padded base64url", _set("0/jwk/x", "AAAA="), "/keys/0/jwk/x", "base64url"),
    (
        "leading zero octet",
        lambda k: k[0]["jwk"].update(x=b64url_encode(b"\0" + b64url_decode(k[0]["jwk"]["x"]))),
        "/keys/0/jwk",
        "canonical",
    ),
    ("JWT key with x5c", _set("0/x5c", ["AAAA"]), "/keys/0/x5c", "no certificate"),
    ("no x5c", _drop("1/x5c"), "/keys/1/x5c", "exactly one"),
    (
        "two certificates",
        lambda k: k[1]["x5c"].append(k[1]["x5c"][0]),
        "/keys/1/x5c",
        "exactly one",
    ),
    ("not base64", _set("1/x5c/0", "***"), "/keys/1/x5c/0", "base64 DER"),
    ("not a certificate", _set("1/x5c/0", "AAAA"), "/keys/1/x5c/0", "base64 DER"),
    ("huge certificate", _set("1/x5c/0", "A" * 8192), "/keys/1/x5c/0", "4096 bytes"),
    (
        "certificate of another key",
        lambda k: k[1].update(jwk=k[0]["jwk"]),
        "/keys/1/x5c/0",
        "different public key",
    ),
    ("not self-signed", _not_self_signed, "/keys/1/x5c/0", "self-signed"),
    ("not_after beyond the maximum", _set("0/not_after", LATER), "/keys/0/not_after", "maximum"),
    (
        "not_after in year 9999",
        _set("0/not_after", "9999-12-31T23:59:59+00:00"),
        "/keys/0/not_after",
        "outside the times",
    ),
    (
        # Expired, so never in the bundle, but kept in the server's key inventory: year 1 made
        # the console's key timeline overflow.
        "key times in year 1",
        _set("0/not_before", "0001-01-01T00:00:00+00:00"),
        "/keys/0/not_before",
        "outside the times",
    ),
    (
        "lifetime beyond the maximum",
        _set("0/not_before", "2028-01-01T00:00:00+00:00"),
        "/keys/0/not_after",
        "maximum",
    ),
    (
        "not_before after not_after",
        _set("0/not_before", LATER),
        "/keys/0/not_before",
        "before not_after",
    ),
    ("naive time", _set("0/not_after", "2030-01-02T00:00:00"), "/keys/0/not_after", "time zone"),
    ("time not a string", _set("0/not_after", 1893456000), "/keys/0/not_after", "RFC 3339"),
    (
        "CA not_after differs from its certificate",
        _set("1/not_after", "2030-01-01T12:00:00+00:00"),
        "/keys/1/not_after",
        "notAfter",
    ),
    ("kid with a newline", _set("0/kid", "a\nb"), "/keys/0/kid", "characters"),
    ("kid too long", _set("0/kid", "k" * 256), "/keys/0/kid", "characters"),
    ("kid ending in a newline", _set("0/kid", "k" * 255 + "\n"), "/keys/0/kid", "characters"),
    ("unknown kind", _set("0/kind", "x509-leaf"), "/keys/0/kind", "one of"),
    ("duplicate kid", lambda k: k[1].update(kid=k[0]["kid"]), "/keys/1/kid", "twice"),
    ("key not an object", _set("0", "key"), "/keys/0", "object"),
]


REPORT_CASES = [ReportCase(*case) for case in _CASES]
