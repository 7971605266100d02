"""Minimal ES256 JWTs for the fake Entra ID (access tokens, federated assertions).

Only what the emulator needs: sign a claim set with the emulator's P-256 key and
check one it signed itself. Written on `cryptography` so the emulator has no
dependency on a JWT library.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = ["TokenError", "TokenSigner", "b64url", "b64url_decode"]


class TokenError(Exception):
    """A token is malformed, badly signed, expired or for another audience."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs and verifies ES256 JWTs with a key persisted in the state dir."""

    def __init__(self, key_file: Path) -> None:
        if key_file.exists():
            loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_file} is not an EC key")
            self._key = loaded
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(
                    self._key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
        nums = self._key.public_key().public_numbers()
        self.kid = b64url(
            hashes_sha256(nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big"))[:16]
        )

    def jwks(self) -> dict[str, Any]:
        nums = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "use": "sig",
                    "alg": "ES256",
                    "kid": self.kid,
                    "x": b64url(nums.x.to_bytes(32, "big")),
                    "y": b64url(nums.y.to_bytes(32, "big")),
                }
            ]
        }

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def verify(
        self, token: str, *, audiences: tuple[str, ...], now: float | None = None
    ) -> dict[str, Any]:
        """Return the claims of a token this signer issued, or raise TokenError."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed token")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            raw_sig = b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError) as exc:
            raise TokenError("malformed token") from exc
        if not isinstance(header, dict) or header.get("alg") != "ES256" or len(raw_sig) != 64:
            raise TokenError("unsupported token algorithm")
        der = encode_dss_signature(
            int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big")
        )
        try:
            self._key.public_key().verify(
                der, (parts[0] + "." + parts[1]).encode("ascii"), ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature as exc:
            raise TokenError("invalid token signature") from exc
        if not isinstance(claims, dict):
            raise TokenError("malformed token claims")
        current = time.time() if now is None else now
        # A little skew tolerance, as real issuers allow.
        if float(claims.get("exp", 0)) < current - 30:
            raise TokenError("token expired")
        if float(claims.get("nbf", 0)) > current + 300:
            raise TokenError("token not yet valid")
        aud = claims.get("aud")
        aud_list = aud if isinstance(aud, list) else [aud]
        if not any(a in audiences for a in aud_list):
            raise TokenError("invalid audience")
        return claims


def hashes_sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()
