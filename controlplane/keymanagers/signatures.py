"""Pure helpers every key manager consumer needs: signature encodings, JWS names, JWKs.

No I/O, no key manager state. Everything here takes and returns bytes / dicts so the
trust domain server, the key managers and the tests agree on one encoding:

- ECDSA signatures are DER in the KeyManager contract (X.509 wants DER) and raw
  ``r || s`` in JWS and Key Vault; :func:`ecdsa_der_to_raw` / :func:`ecdsa_raw_to_der`.
- :func:`jws_algorithm` and :func:`hash_for_key_type` name the algorithm a key type signs with.
- :func:`public_jwk` turns a DER SubjectPublicKeyInfo into a public JWK (RFC 7517/7518),
  :func:`jwk_thumbprint` computes its RFC 7638 thumbprint.
- :func:`verify_digest_signature` checks a contract signature with ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from controlplane.keymanagers.base import HashAlgorithm, KeyType, SigningAlgorithm

__all__ = [
    "b64url_decode",
    "b64url_encode",
    "check_digest_length",
    "cryptography_hash",
    "digest",
    "ecdsa_der_to_raw",
    "ecdsa_raw_to_der",
    "hash_for_key_type",
    "jwk_thumbprint",
    "jws_algorithm",
    "key_type_of_public_key",
    "load_public_key",
    "public_jwk",
    "rsa_padding",
    "signing_algorithm_for_jws",
    "verify_digest_signature",
]

_CURVE_BY_KEY_TYPE: dict[KeyType, tuple[str, int]] = {
    # key type -> (JWK crv, coordinate size in bytes)
    KeyType.EC_P256: ("P-256", 32),
    KeyType.EC_P384: ("P-384", 48),
}

_HASH_SIZES = {HashAlgorithm.SHA256: 32, HashAlgorithm.SHA384: 48, HashAlgorithm.SHA512: 64}


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (JOSE)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url_encode`; tolerates missing padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _coord_size(key_type: KeyType) -> int:
    try:
        return _CURVE_BY_KEY_TYPE[key_type][1]
    except KeyError:
        raise ValueError(f"{key_type.value} is not an EC key type") from None


def ecdsa_der_to_raw(signature_der: bytes, key_type: KeyType) -> bytes:
    """DER ECDSA-Sig-Value -> fixed-width ``r || s`` (JWS, RFC 7518 §3.4)."""
    size = _coord_size(key_type)
    r, s = utils.decode_dss_signature(signature_der)
    if r.bit_length() > size * 8 or s.bit_length() > size * 8:
        raise ValueError(f"signature does not fit {key_type.value}")
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_raw_to_der(signature_raw: bytes, key_type: KeyType | None = None) -> bytes:
    """Fixed-width ``r || s`` -> DER. With `key_type`, the length is checked against the curve."""
    if key_type is not None and len(signature_raw) != 2 * _coord_size(key_type):
        raise ValueError(
            f"raw {key_type.value} signature must be {2 * _coord_size(key_type)} bytes, "
            f"got {len(signature_raw)}"
        )
    if not signature_raw or len(signature_raw) % 2:
        raise ValueError("raw ECDSA signature must be two equal halves r || s")
    half = len(signature_raw) // 2
    r = int.from_bytes(signature_raw[:half], "big")
    s = int.from_bytes(signature_raw[half:], "big")
    return utils.encode_dss_signature(r, s)


def hash_for_key_type(key_type: KeyType) -> HashAlgorithm:
    """The hash a key type signs with: P-384 pairs with SHA-384, everything else SHA-256."""
    return HashAlgorithm.SHA384 if key_type is KeyType.EC_P384 else HashAlgorithm.SHA256


def jws_algorithm(key_type: KeyType, rsa_pss: bool = False) -> str:
    """JWS ``alg`` for a key type: ES256, ES384, RS256 (or PS256 with `rsa_pss`)."""
    if key_type is KeyType.EC_P256:
        return "ES256"
    if key_type is KeyType.EC_P384:
        return "ES384"
    return "PS256" if rsa_pss else "RS256"


def signing_algorithm_for_jws(alg: str) -> SigningAlgorithm:
    """The contract's SigningAlgorithm for a JWS ``alg`` name (ES256/384/512, RS*, PS*)."""
    sizes = {"256": HashAlgorithm.SHA256, "384": HashAlgorithm.SHA384, "512": HashAlgorithm.SHA512}
    family, size = alg[:2], alg[2:]
    if family not in ("ES", "RS", "PS") or size not in sizes:
        raise ValueError(f"unsupported JWS algorithm {alg!r}")
    return SigningAlgorithm(hash=sizes[size], rsa_pss=family == "PS")


def cryptography_hash(algorithm: HashAlgorithm) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash object for a contract hash name."""
    if algorithm is HashAlgorithm.SHA256:
        return hashes.SHA256()
    if algorithm is HashAlgorithm.SHA384:
        return hashes.SHA384()
    return hashes.SHA512()


def digest(data: bytes, algorithm: HashAlgorithm) -> bytes:
    """Hash `data` (what a caller does before sign_digest)."""
    return hashlib.new(algorithm.value, data).digest()


def check_digest_length(digest_bytes: bytes, algorithm: HashAlgorithm) -> None:
    """Raise ValueError when a digest does not have the size of its hash."""
    expected = _HASH_SIZES[algorithm]
    if len(digest_bytes) != expected:
        raise ValueError(f"digest is {len(digest_bytes)} bytes, {algorithm.value} needs {expected}")


def load_public_key(public_key_der: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """Load a DER SubjectPublicKeyInfo holding an EC or RSA key."""
    key = serialization.load_der_public_key(public_key_der)
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"unsupported public key type {type(key).__name__}")
    return key


def key_type_of_public_key(public_key_der: bytes) -> KeyType:
    """Which contract key type a DER public key is (raises ValueError for anything else)."""
    key = load_public_key(public_key_der)
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}
        if key.curve.name not in by_curve:
            raise ValueError(f"unsupported curve {key.curve.name}")
        return by_curve[key.curve.name]
    by_size = {2048: KeyType.RSA_2048, 4096: KeyType.RSA_4096}
    if key.key_size not in by_size:
        raise ValueError(f"unsupported RSA key size {key.key_size}")
    return by_size[key.key_size]


def public_jwk(public_key_der: bytes, kid: str | None = None) -> dict[str, str]:
    """Public JWK for a DER SubjectPublicKeyInfo, with ``kid`` when given."""
    key = load_public_key(public_key_der)
    jwk: dict[str, str]
    if isinstance(key, ec.EllipticCurvePublicKey):
        key_type = key_type_of_public_key(public_key_der)
        crv, size = _CURVE_BY_KEY_TYPE[key_type]
        numbers = key.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": crv,
            "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big")),
        }
    else:
        rsa_numbers = key.public_numbers()
        jwk = {
            "kty": "RSA",
            "n": b64url_encode(_int_bytes(rsa_numbers.n)),
            "e": b64url_encode(_int_bytes(rsa_numbers.e)),
        }
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def _int_bytes(value: int) -> bytes:
    # JWK integers are minimal big-endian (RFC 7518 §6.3.1.1), no leading zero octet.
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url): required members only, sorted, no whitespace."""
    kty = jwk.get("kty")
    if kty not in _THUMBPRINT_MEMBERS:
        raise ValueError(f"unsupported JWK kty {kty!r}")
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[kty]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def verify_digest_signature(
    public_key_der: bytes, digest_bytes: bytes, signature: bytes, algorithm: SigningAlgorithm
) -> bool:
    """True when `signature` (contract encoding: DER for EC) signs `digest_bytes`."""
    key = load_public_key(public_key_der)
    prehashed = utils.Prehashed(cryptography_hash(algorithm.hash))
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest_bytes, ec.ECDSA(prehashed))
        else:
            key.verify(signature, digest_bytes, rsa_padding(algorithm), prehashed)
    except InvalidSignature:
        return False
    return True


def rsa_padding(algorithm: SigningAlgorithm) -> padding.AsymmetricPadding:
    """PKCS#1 v1.5, or PSS with MGF1 over the same hash and salt length = hash length.

    Salt = hash length is what Go's crypto/rsa (PSSSaltLengthEqualsHash), SPIRE and
    Key Vault's PS256/384/512 use, so signatures verify the same everywhere.
    """
    if not algorithm.rsa_pss:
        return padding.PKCS1v15()
    return padding.PSS(
        mgf=padding.MGF1(cryptography_hash(algorithm.hash)), salt_length=padding.PSS.DIGEST_LENGTH
    )
