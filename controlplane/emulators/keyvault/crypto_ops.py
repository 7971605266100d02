"""Key material for emulated Key Vault keys: generate, JWK export, sign, verify.

Signatures follow Key Vault: the client sends a digest, EC signatures come back
as raw r||s (JWS form), RSA as PKCS#1 v1.5 (RS*) or PSS with salt = hash length (PS*).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from .tokens import b64url

__all__ = [
    "AlgorithmError",
    "KeySpec",
    "PrivateKey",
    "generate_private_key",
    "jwk_public",
    "load_private_key",
    "sign_digest",
    "verify_digest",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_CURVE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66}
_RSA_SIZES = (2048, 3072, 4096)

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
# EC algorithm -> the curve it requires, as Key Vault enforces.
_EC_ALG_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class AlgorithmError(ValueError):
    """Bad algorithm, digest size or key/algorithm mismatch (Key Vault answers 400)."""


@dataclass(frozen=True)
class KeySpec:
    kty: str  # "EC", "EC-HSM", "RSA", "RSA-HSM"
    crv: str | None = None
    key_size: int | None = None

    @property
    def is_hsm(self) -> bool:
        return self.kty.endswith("-HSM")

    @property
    def is_ec(self) -> bool:
        return self.kty.startswith("EC")

    @staticmethod
    def from_request(body: dict[str, Any]) -> KeySpec:
        kty = body.get("kty")
        if kty not in ("EC", "EC-HSM", "RSA", "RSA-HSM"):
            raise AlgorithmError(f"Invalid kty value: {kty}")
        if kty.startswith("EC"):
            crv = body.get("crv") or "P-256"
            if crv not in _CURVES:
                raise AlgorithmError(f"Invalid curve: {crv}")
            return KeySpec(kty, crv=crv)
        size = body.get("key_size") or 2048
        if size not in _RSA_SIZES:
            raise AlgorithmError(f"Invalid key size: {size}")
        return KeySpec(kty, key_size=int(size))


def generate_private_key(spec: KeySpec) -> PrivateKey:
    if spec.is_ec:
        assert spec.crv is not None
        return ec.generate_private_key(_CURVES[spec.crv])
    assert spec.key_size is not None
    return rsa.generate_private_key(public_exponent=65537, key_size=spec.key_size)


def private_key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def load_private_key(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("unsupported key type in store")
    return key


def _int_bytes(value: int, length: int | None = None) -> bytes:
    n = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(n, "big")


def jwk_public(key: PrivateKey, spec: KeySpec) -> dict[str, Any]:
    """The public JsonWebKey fields (no kid / key_ops; the caller adds those)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert spec.crv is not None
        nums = key.public_key().public_numbers()
        size = _CURVE_BYTES[spec.crv]
        return {
            "kty": spec.kty,
            "crv": spec.crv,
            "x": b64url(_int_bytes(nums.x, size)),
            "y": b64url(_int_bytes(nums.y, size)),
        }
    rnums = key.public_key().public_numbers()
    return {"kty": spec.kty, "n": b64url(_int_bytes(rnums.n)), "e": b64url(_int_bytes(rnums.e))}


def _hash_for(alg: str) -> hashes.HashAlgorithm:
    h = _HASHES.get(alg[-3:])
    if h is None or alg[:2] not in ("ES", "RS", "PS"):
        raise AlgorithmError(f"Invalid algorithm: {alg}")
    return h


def _check(key: PrivateKey, spec: KeySpec, alg: str, digest: bytes) -> hashes.HashAlgorithm:
    h = _hash_for(alg)
    if len(digest) != h.digest_size:
        raise AlgorithmError(f"Invalid digest length for algorithm {alg}")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if _EC_ALG_CURVE.get(alg) != spec.crv:
            raise AlgorithmError(f"Key and signing algorithm are incompatible: {alg} on {spec.crv}")
    elif alg[:2] not in ("RS", "PS"):
        raise AlgorithmError(f"Key and signing algorithm are incompatible: {alg} on RSA")
    return h


def sign_digest(key: PrivateKey, spec: KeySpec, alg: str, digest: bytes) -> bytes:
    h = _check(key, spec, alg, digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert spec.crv is not None
        r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(h))))
        size = _CURVE_BYTES[spec.crv]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg.startswith("PS"):
        pad: padding.AsymmetricPadding = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
    else:
        pad = padding.PKCS1v15()
    return key.sign(digest, pad, Prehashed(h))


def verify_digest(
    key: PrivateKey, spec: KeySpec, alg: str, digest: bytes, signature: bytes
) -> bool:
    h = _check(key, spec, alg, digest)
    try:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            assert spec.crv is not None
            size = _CURVE_BYTES[spec.crv]
            if len(signature) != 2 * size:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            key.public_key().verify(der, digest, ec.ECDSA(Prehashed(h)))
        elif alg.startswith("PS"):
            key.public_key().verify(
                signature,
                digest,
                padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size),
                Prehashed(h),
            )
        else:
            key.public_key().verify(signature, digest, padding.PKCS1v15(), Prehashed(h))
    except InvalidSignature:
        return False
    return True
