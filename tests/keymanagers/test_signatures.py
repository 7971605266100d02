"""Pure signature/JWK helpers, checked against independent implementations (jwcrypto, PyJWT)."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwcrypto import jwk as jwcrypto_jwk

from controlplane.keymanagers.base import HashAlgorithm, KeyType, SigningAlgorithm
from controlplane.keymanagers.signatures import (
    b64url_decode,
    b64url_encode,
    check_digest_length,
    digest,
    ecdsa_der_to_raw,
    ecdsa_raw_to_der,
    hash_for_key_type,
    jwk_thumbprint,
    jws_algorithm,
    key_type_of_public_key,
    public_jwk,
    signing_algorithm_for_jws,
    verify_digest_signature,
)


def _spki(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def keys() -> dict[KeyType, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    return {
        KeyType.EC_P256: ec.generate_private_key(ec.SECP256R1()),
        KeyType.EC_P384: ec.generate_private_key(ec.SECP384R1()),
        KeyType.RSA_2048: rsa.generate_private_key(65537, 2048),
    }


def test_b64url_round_trip() -> None:
    for data in (b"", b"\xff", b"\xfb\xff", b"abcd"):
        text = b64url_encode(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert b64url_decode(text) == data


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384])
def test_ecdsa_der_raw_round_trip(keys: dict, key_type: KeyType) -> None:
    key = keys[key_type]
    hash_obj = hashes.SHA256() if key_type is KeyType.EC_P256 else hashes.SHA384()
    size = 32 if key_type is KeyType.EC_P256 else 48
    for i in range(20):  # some signatures have short r or s: fixed width must pad them
        der = key.sign(f"m{i}".encode(), ec.ECDSA(hash_obj))
        raw = ecdsa_der_to_raw(der, key_type)
        assert len(raw) == 2 * size
        assert ecdsa_raw_to_der(raw, key_type) == der


def test_small_r_is_left_padded() -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    raw = ecdsa_der_to_raw(encode_dss_signature(1, 2), KeyType.EC_P256)
    assert raw == (1).to_bytes(32, "big") + (2).to_bytes(32, "big")


def test_raw_to_der_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        ecdsa_raw_to_der(b"\x01" * 63, KeyType.EC_P256)
    with pytest.raises(ValueError):
        ecdsa_der_to_raw(b"\x30\x00", KeyType.RSA_2048)


def test_raw_signature_verifies_with_pyjwt(keys: dict) -> None:
    """A JWS assembled with our DER->raw conversion verifies with PyJWT (independent code)."""
    key = keys[KeyType.EC_P256]
    header = b64url_encode(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64url_encode(json.dumps({"sub": "spiffe://example.org/w"}).encode())
    signing_input = f"{header}.{payload}".encode()
    der = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    token = f"{header}.{payload}.{b64url_encode(ecdsa_der_to_raw(der, KeyType.EC_P256))}"
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])
    assert claims["sub"] == "spiffe://example.org/w"


def test_algorithm_names() -> None:
    assert jws_algorithm(KeyType.EC_P256) == "ES256"
    assert jws_algorithm(KeyType.EC_P384) == "ES384"
    assert jws_algorithm(KeyType.RSA_2048) == "RS256"
    assert jws_algorithm(KeyType.RSA_4096) == "RS256"
    assert jws_algorithm(KeyType.RSA_4096, rsa_pss=True) == "PS256"
    assert hash_for_key_type(KeyType.EC_P384) is HashAlgorithm.SHA384
    assert hash_for_key_type(KeyType.EC_P256) is HashAlgorithm.SHA256
    assert hash_for_key_type(KeyType.RSA_2048) is HashAlgorithm.SHA256
    assert signing_algorithm_for_jws("PS384") == SigningAlgorithm(
        HashAlgorithm.SHA384, rsa_pss=True
    )
    assert signing_algorithm_for_jws("ES256") == SigningAlgorithm(HashAlgorithm.SHA256)
    with pytest.raises(ValueError):
        signing_algorithm_for_jws("HS256")


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
def test_public_jwk_matches_jwcrypto(keys: dict, key_type: KeyType) -> None:
    der = _spki(keys[key_type])
    ours = public_jwk(der, kid="kid-1")
    assert ours["kid"] == "kid-1"
    pem = (
        keys[key_type]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    theirs = jwcrypto_jwk.JWK.from_pem(pem)
    expected = json.loads(theirs.export_public())
    for member in ("kty", "crv", "x", "y", "n", "e"):
        assert ours.get(member) == expected.get(member), member
    assert jwk_thumbprint(ours) == theirs.thumbprint()
    # The JWK loads back into the same key.
    loaded = jwcrypto_jwk.JWK(**ours)
    assert loaded.thumbprint() == theirs.thumbprint()


def test_thumbprint_rfc7638_example() -> None:
    # RFC 7638 §3.1 example key and its thumbprint.
    example = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_ignores_optional_members(keys: dict) -> None:
    jwk = public_jwk(_spki(keys[KeyType.EC_P256]))
    assert jwk_thumbprint(jwk) == jwk_thumbprint({**jwk, "kid": "x", "use": "jwt-svid"})
    with pytest.raises(ValueError):
        jwk_thumbprint({"kty": "oct", "k": "AA"})


def test_key_type_of_public_key(keys: dict) -> None:
    for key_type, key in keys.items():
        assert key_type_of_public_key(_spki(key)) is key_type
    odd = rsa.generate_private_key(65537, 3072)
    with pytest.raises(ValueError, match="3072"):
        key_type_of_public_key(_spki(odd))


@pytest.mark.parametrize("pss", [False, True])
def test_verify_digest_signature_rsa(keys: dict, pss: bool) -> None:
    key = keys[KeyType.RSA_2048]
    algorithm = SigningAlgorithm(HashAlgorithm.SHA256, rsa_pss=pss)
    pad: padding.AsymmetricPadding = (
        padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        if pss
        else padding.PKCS1v15()
    )
    signature = key.sign(b"hello", pad, hashes.SHA256())
    d = digest(b"hello", HashAlgorithm.SHA256)
    assert verify_digest_signature(_spki(key), d, signature, algorithm)
    assert not verify_digest_signature(
        _spki(key), digest(b"other", HashAlgorithm.SHA256), signature, algorithm
    )
    # Wrong padding does not verify.
    wrong = SigningAlgorithm(HashAlgorithm.SHA256, rsa_pss=not pss)
    assert not verify_digest_signature(_spki(key), d, signature, wrong)


def test_check_digest_length() -> None:
    check_digest_length(b"\0" * 48, HashAlgorithm.SHA384)
    with pytest.raises(ValueError, match="sha256 needs 32"):
        check_digest_length(b"\0" * 48, HashAlgorithm.SHA256)
