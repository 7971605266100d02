"""Checks on the public keys a trust domain server reports, before they reach the public bundle.

A server credential is a secret on one host; if it leaks, these checks bound what its holder can
put in front of every relying party (issue 9): only public EC P-256/P-384 or RSA 2048/4096 keys
in their canonical JWK form (no private or symmetric members), X.509 CA keys only with their one
self-signed CA certificate for this trust domain, lifetimes within the configured maximum.
Kid uniqueness needs the stored bundle and is checked by the service. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from controlplane.bundles import JWT_SVID, X509_SVID, BundleKey, jwt_entry, x509_entry
from controlplane.domain import BadRequest
from controlplane.keymanagers.signatures import b64url_decode, key_type_of_public_key, public_jwk

__all__ = [
    "DEFAULT_MAX_KEY_LIFETIME",
    "InvalidReport",
    "KEY_KINDS",
    "MAX_KEYS_PER_REPORT",
    "check_reported_keys",
    "report_time",
]

MAX_KEYS_PER_REPORT = 64
# The longest lifetime KeyLifecycle accepts (documents/rules.py MAX_KEY_TTL).
DEFAULT_MAX_KEY_LIFETIME = timedelta(days=365)
# CA certificates are backdated a little by the server; allow for it in lifetime checks.
_CLOCK_SLACK = timedelta(minutes=1)
KEY_KINDS = {"jwt": JWT_SVID, "x509-ca": X509_SVID}  # kind in a report -> bundle use
# Our CA certificates are under 2 KiB DER (RSA 4096 included); a bound keeps hostile reports
# (and the cache of checked keys) small.
MAX_CERTIFICATE_BYTES = 4096
_KID = re.compile(r"[A-Za-z0-9._-]{1,255}")  # fullmatch: `$` lets a final newline through
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_MEMBERS = {"EC": {"kty", "crv", "x", "y"}, "RSA": {"kty", "n", "e"}}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class InvalidReport(BadRequest):
    """A status report refused as a whole; `pointer` is the JSON Pointer of the bad value."""

    def __init__(self, pointer: str, reason: str) -> None:
        super().__init__(f"{pointer}: {reason}; nothing was stored")
        self.pointer = pointer
        self.reason = reason

    def details(self) -> dict[str, Any]:
        return {"pointer": self.pointer}


def check_reported_keys(
    keys: object, trust_domain: str, now: datetime, max_lifetime: timedelta
) -> list[BundleKey]:
    """Every key of a report, checked; raises InvalidReport at the first bad value."""
    if keys is None:
        return []
    if not isinstance(keys, list) or len(keys) > MAX_KEYS_PER_REPORT:
        raise InvalidReport("/keys", f"must be a list of at most {MAX_KEYS_PER_REPORT} keys")
    checked = [
        _check_key(key, f"/keys/{i}", trust_domain, now, max_lifetime) for i, key in enumerate(keys)
    ]
    seen: set[str] = set()
    for i, key in enumerate(checked):
        if key.kid in seen:
            raise InvalidReport(f"/keys/{i}/kid", f"kid {key.kid!r} appears twice in the report")
        seen.add(key.kid)
    return checked


def _check_key(
    key: object, where: str, trust_domain: str, now: datetime, max_lifetime: timedelta
) -> BundleKey:
    if not isinstance(key, dict):
        raise InvalidReport(where, "must be an object")
    kid = key.get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise InvalidReport(f"{where}/kid", "must be 1-255 characters of [A-Za-z0-9._-]")
    kind = key.get("kind")
    if kind not in KEY_KINDS:
        raise InvalidReport(f"{where}/kind", f"must be one of {', '.join(KEY_KINDS)}")
    not_after = report_time(key.get("not_after"), f"{where}/not_after")
    not_before = None
    if key.get("not_before") is not None:
        not_before = report_time(key["not_before"], f"{where}/not_before")
        if not_before >= not_after:
            raise InvalidReport(f"{where}/not_before", "must be before not_after")
        if not_after - not_before > max_lifetime + _CLOCK_SLACK:
            raise InvalidReport(
                f"{where}/not_after", f"key lifetime exceeds the maximum of {max_lifetime}"
            )
    if not_after > now + max_lifetime + _CLOCK_SLACK:
        raise InvalidReport(
            f"{where}/not_after",
            f"{not_after.isoformat()} is more than the maximum key lifetime ({max_lifetime}) away",
        )
    x5c = json.dumps(key["x5c"]) if "x5c" in key else None
    try:
        entry, cert_not_after = _key_material(
            kind, kid, json.dumps(key.get("jwk"), sort_keys=True), x5c, trust_domain
        )
    except InvalidReport as exc:  # its pointer is relative to the key
        raise InvalidReport(where + exc.pointer, exc.reason) from None
    if cert_not_after is not None and not_after.replace(microsecond=0) != cert_not_after:
        raise InvalidReport(
            f"{where}/not_after",
            f"does not match the certificate's notAfter {cert_not_after.isoformat()}",
        )
    return BundleKey(kid=kid, entry=dict(entry), not_before=not_before, not_after=not_after)


@functools.lru_cache(maxsize=4096)
def _key_material(
    kind: str, kid: str, jwk_json: str, x5c_json: str | None, trust_domain: str
) -> tuple[dict[str, Any], datetime | None]:
    """(bundle entry, the CA certificate's notAfter) of a key's JWK and certificate, or
    InvalidReport with a pointer relative to the key. Cached: servers report the same keys in
    every heartbeat, and the checks (key loading, the certificate's signature) cost ~1 ms."""
    public_key = _public_key(json.loads(jwk_json), "/jwk")
    jwk = public_jwk(_spki(public_key))
    if kind == "jwt":
        if x5c_json is not None:
            raise InvalidReport("/x5c", "a JWT signing key carries no certificate")
        return jwt_entry(jwk, kid), None
    x5c = json.loads(x5c_json) if x5c_json is not None else None
    cert_der = _ca_certificate(x5c, "/x5c", public_key, trust_domain)
    cert = x509.load_der_x509_certificate(cert_der)
    return x509_entry(jwk, cert_der), cert.not_valid_after_utc


# Every time a server reports lies in this window: far around any real key's life, and far
# from the ends of Python's datetime range, so views that compute with them never overflow.
EARLIEST_REPORT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_REPORT_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def report_time(value: object, where: str) -> datetime:
    """An RFC 3339 time with a zone, or InvalidReport at `where`."""
    if not isinstance(value, str):
        raise InvalidReport(where, "must be an RFC 3339 time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidReport(where, f"is not an RFC 3339 time: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        raise InvalidReport(where, "must carry a time zone")
    if not EARLIEST_REPORT_TIME <= parsed <= LATEST_REPORT_TIME:
        raise InvalidReport(
            where,
            f"is outside the times a report may hold ({EARLIEST_REPORT_TIME.date()} to "
            f"{LATEST_REPORT_TIME.date()})",
        )
    return parsed


def _public_key(jwk: object, where: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The key a JWK holds, when it is a public EC P-256/P-384 or RSA 2048/4096 key written
    exactly as `public_jwk` writes it (so one key has one JSON form in the bundle)."""
    if not isinstance(jwk, dict):
        raise InvalidReport(where, "must be a public JWK object")
    private = [m for m in _PRIVATE_MEMBERS if m in jwk]
    if private:
        raise InvalidReport(
            where,
            f"holds private or symmetric key material ({', '.join(private)}); "
            "only public keys may enter a bundle",
        )
    kty = jwk.get("kty")
    if kty not in _MEMBERS:
        raise InvalidReport(f"{where}/kty", f"must be EC or RSA, not {str(kty)[:32]!r}")
    extra = sorted(set(jwk) - _MEMBERS[kty])
    if extra:
        raise InvalidReport(
            where,
            f"unexpected member(s) {', '.join(m[:32] for m in extra[:5])}; "
            f"an {kty} key has only {', '.join(sorted(_MEMBERS[kty]))}",
        )
    values = {
        name: _b64url_int(jwk.get(name), f"{where}/{name}")
        for name in _MEMBERS[kty] - {"kty", "crv"}
    }
    try:
        key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
        if kty == "EC":
            curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}.get(str(jwk.get("crv")))
            if curve is None:
                raise InvalidReport(f"{where}/crv", "must be P-256 or P-384")
            key = ec.EllipticCurvePublicNumbers(values["x"], values["y"], curve).public_key()
        else:
            key = rsa.RSAPublicNumbers(values["e"], values["n"]).public_key()
        key_type_of_public_key(_spki(key))  # refuses other RSA sizes
    except ValueError as exc:
        raise InvalidReport(where, f"is not a usable public key: {exc}") from None
    if public_jwk(_spki(key)) != jwk:
        raise InvalidReport(
            where,
            "is not in canonical form (RFC 7518 §6: unpadded base64url, minimal integers, fixed-size EC coordinates)",
        )
    return key


def _b64url_int(value: object, where: str) -> int:
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(value) > 1400:
        raise InvalidReport(where, "must be an unpadded base64url string")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except (binascii.Error, ValueError):
        raise InvalidReport(where, "must be an unpadded base64url string") from None


def _spki(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ca_certificate(
    x5c: object,
    where: str,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    trust_domain: str,
) -> bytes:
    """The DER of the one self-signed CA certificate for `trust_domain` holding `public_key`."""
    if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
        raise InvalidReport(where, "must list exactly one CA certificate (base64 DER)")
    if len(x5c[0]) > MAX_CERTIFICATE_BYTES * 4 // 3 + 4:
        raise InvalidReport(f"{where}/0", f"is over {MAX_CERTIFICATE_BYTES} bytes")
    try:
        der = base64.b64decode(x5c[0], validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        raise InvalidReport(f"{where}/0", "is not a base64 DER X.509 certificate") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise InvalidReport(f"{where}/0", f"is not a SPIFFE CA certificate: {exc}") from None
    if not constraints.ca or not usage.key_cert_sign:
        raise InvalidReport(f"{where}/0", "is not a CA certificate (cA and keyCertSign)")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [f"spiffe://{trust_domain}"]:
        raise InvalidReport(
            f"{where}/0",
            f"must name exactly spiffe://{trust_domain} in its URI SAN, not {uris[:3]}",
        )
    if _spki(cert.public_key()) != _spki(public_key):  # type: ignore[arg-type]
        raise InvalidReport(f"{where}/0", "holds a different public key than jwk")
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        raise InvalidReport(f"{where}/0", "is not self-signed by its key") from None
    return der
