"""Signing through a key manager: certificates assembled from TBS bytes plus a remote
signature, compact JWS, and public JWKs.

The private key may live in an HSM (Key Vault), so nothing here needs it. `cryptography`
cannot sign with an external signer, so a certificate is first built with a throwaway local
key of the same algorithm family (which gives us correct TBS bytes and signature algorithm
identifier), then the TBS digest is signed by the key manager and the DER is reassembled.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from controlplane.keymanagers.base import HashAlgorithm, KeyType, SigningAlgorithm
from controlplane.keymanagers.signatures import (
    b64url_encode,
    ecdsa_der_to_raw,
    hash_for_key_type,
    jws_algorithm,
    public_jwk,
)
from controlplane.keymanagers.signatures import jwk_thumbprint as _jwk_thumbprint

__all__ = [
    "CA_KEY_USAGE",
    "DigestSigner",
    "LEAF_KEY_USAGE",
    "b64url",
    "digest_for",
    "jwk_thumbprint",
    "jwt_alg_for",
    "public_jwk",
    "sign_certificate",
    "sign_jws",
    "sign_jwt",
    "signing_algorithm_for",
]

# sign(digest, algorithm) -> signature as the key manager returns it (EC: DER; RSA: raw).
DigestSigner = Callable[[bytes, SigningAlgorithm], bytes]

_HASHES: dict[HashAlgorithm, Callable[[bytes], Any]] = {
    HashAlgorithm.SHA256: hashlib.sha256,
    HashAlgorithm.SHA384: hashlib.sha384,
    HashAlgorithm.SHA512: hashlib.sha512,
}
_CRYPTO_HASHES: dict[HashAlgorithm, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}


def signing_algorithm_for(key_type: KeyType) -> SigningAlgorithm:
    """The signature we make with a key type: ES256 / ES384 / RS256 (PKCS#1 v1.5)."""
    return SigningAlgorithm(hash_for_key_type(key_type))


def jwt_alg_for(key_type: KeyType) -> str:
    return jws_algorithm(key_type)


def digest_for(data: bytes, algorithm: SigningAlgorithm) -> bytes:
    digest: bytes = _HASHES[algorithm.hash](data).digest()
    return digest


def b64url(data: bytes) -> str:
    return b64url_encode(data)


def jwk_thumbprint(public_key_der: bytes) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a DER SubjectPublicKeyInfo, via
    `controlplane.keymanagers.signatures.jwk_thumbprint`.

    The same public key gives the same value on every server, so it can serve as a kid
    that servers sharing one key agree on without talking to each other.
    """
    return _jwk_thumbprint(public_jwk(public_key_der))


# One encoder for every token: json.dumps with options builds a new encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
_B64URL = bytes.maketrans(b"+/", b"-_")


def _b64url_fast(data: bytes) -> bytes:
    # Same output as b64url (unpadded base64url), as bytes, without the str round trips.
    return binascii.b2a_base64(data, newline=False).translate(_B64URL).rstrip(b"=")


@functools.lru_cache(maxsize=64)
def _signing_algorithm(key_type: KeyType) -> SigningAlgorithm:
    return signing_algorithm_for(key_type)


@functools.lru_cache(maxsize=256)
def _jwt_header_segment(alg: str, kid: str) -> bytes:
    # A key's JWT header never changes, so it is encoded once per (alg, kid).
    return _b64url_fast(_COMPACT_JSON.encode({"alg": alg, "kid": kid, "typ": "JWT"}).encode())


def _compact_jws(
    header_segment: bytes, claims: dict[str, Any], key_type: KeyType, sign: DigestSigner
) -> str:
    alg = _signing_algorithm(key_type)
    signing_input = header_segment + b"." + _b64url_fast(_COMPACT_JSON.encode(claims).encode())
    signature = sign(digest_for(signing_input, alg), alg)
    if key_type.is_ec:
        signature = ecdsa_der_to_raw(signature, key_type)
    return (signing_input + b"." + _b64url_fast(signature)).decode("ascii")


def sign_jws(
    header: dict[str, Any], claims: dict[str, Any], key_type: KeyType, sign: DigestSigner
) -> str:
    """Compact JWS. EC signatures come back DER from the key manager; JWS wants raw r||s."""
    return _compact_jws(_b64url_fast(_COMPACT_JSON.encode(header).encode()), claims, key_type, sign)


def sign_jwt(kid: str, claims: dict[str, Any], key_type: KeyType, sign: DigestSigner) -> str:
    """A JWT with header ``{"alg", "kid", "typ": "JWT"}``: :func:`sign_jws` with that header,
    encoded once per key instead of once per token."""
    return _compact_jws(_jwt_header_segment(jwt_alg_for(key_type), kid), claims, key_type, sign)


# --- certificates -----------------------------------------------------------------------------

# X509-SVID spec, Appendix A: keyCertSign (and cRLSign) if and only if the certificate signs
# others; digitalSignature if and only if it is a leaf.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)

_dummy_lock = threading.Lock()
_dummy_keys: dict[str, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] = {}


def _dummy_key(key_type: KeyType) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A throwaway key whose only use is producing TBS bytes with the right algorithm id.

    One per algorithm family per process: RSA key generation is slow, and the algorithm
    identifier of sha256WithRSAEncryption does not depend on the modulus size.
    """
    family = {
        KeyType.EC_P256: "p256",
        KeyType.EC_P384: "p384",
        KeyType.RSA_2048: "rsa",
        KeyType.RSA_4096: "rsa",
    }[key_type]
    with _dummy_lock:
        key = _dummy_keys.get(family)
        if key is None:
            if family == "p256":
                key = ec.generate_private_key(ec.SECP256R1())
            elif family == "p384":
                key = ec.generate_private_key(ec.SECP384R1())
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _dummy_keys[family] = key
        return key


def _der_len(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_read(data: bytes, pos: int) -> tuple[int, int, int]:
    """Read one TLV at pos: returns (start, content_start, end)."""
    start = pos
    pos += 1  # tag (single byte is enough for certificate top-level elements)
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return start, pos, pos + length


def sign_certificate(
    builder: x509.CertificateBuilder, key_type: KeyType, sign: DigestSigner
) -> x509.Certificate:
    """Sign a complete builder with a key held by a key manager (ECDSA or RSA PKCS#1 v1.5)."""
    alg = signing_algorithm_for(key_type)
    draft = builder.sign(_dummy_key(key_type), _CRYPTO_HASHES[alg.hash]())
    der = draft.public_bytes(serialization.Encoding.DER)
    _, content, _ = _der_read(der, 0)
    tbs_start, _, tbs_end = _der_read(der, content)
    alg_start, _, alg_end = _der_read(der, tbs_end)
    tbs = der[tbs_start:tbs_end]
    algorithm_id = der[alg_start:alg_end]
    signature = sign(digest_for(tbs, alg), alg)
    bit_string = b"\x03" + _der_len(len(signature) + 1) + b"\x00" + signature
    body = tbs + algorithm_id + bit_string
    return x509.load_der_x509_certificate(b"\x30" + _der_len(len(body)) + body)
