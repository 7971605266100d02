"""The KeyManager contract: one small interface every key manager implements.

Modelled on SPIRE's KeyManager plugin: generate a key under a caller-chosen id,
read public keys, sign a digest. Calls are synchronous (they may block on the
network); the trust domain server calls them from worker threads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# The key ids a trust domain server asks of a manager that shares keys between the servers of
# a deployment (``shares_keys`` true): its two JWT signer slots, used alternately. Such a
# manager never deletes the key under one of these ids (other servers sign with it); it retires
# the key's old versions instead.
SHARED_JWT_KEY_IDS = ("jwt-signer-a", "jwt-signer-b")


class KeyType(str, enum.Enum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_4096 = "rsa-4096"

    @property
    def is_ec(self) -> bool:
        return self in (KeyType.EC_P256, KeyType.EC_P384)


class HashAlgorithm(str, enum.Enum):
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"


@dataclass(frozen=True)
class SigningAlgorithm:
    """How a digest is signed: the hash that made it and, for RSA, the padding."""

    hash: HashAlgorithm
    rsa_pss: bool = False


@dataclass(frozen=True)
class PublicKey:
    """A public key a key manager holds.

    `public_key_der` is the DER SubjectPublicKeyInfo. `provider_ref` names the key
    in the backing store (e.g. a Key Vault key id URL) for logs; it is not secret.
    """

    key_id: str
    key_type: KeyType
    public_key_der: bytes
    provider_ref: str = ""


class KeyManagerError(Exception):
    """A key manager cannot do what was asked. The message is for operators: say what and why."""


class KeyNotFoundError(KeyManagerError):
    """No key with that id."""


class TransientKeyManagerError(KeyManagerError):
    """Worth retrying later (throttling, outage, timeout)."""


@runtime_checkable
class KeyManager(Protocol):
    """Contract. `type_name` is the KeyManager section's extension name ("default", "azureKeyVault", "webhook")."""

    type_name: str

    def check(self) -> None:
        """Prove the key manager can work (credentials, reachability, tier, permissions).

        Called before a hot swap; raises KeyManagerError with a clear reason. Creates no key
        that can sign SVIDs; a manager may create and remove a probe (the Azure Key Vault
        manager does, to prove the tier and its permissions).
        """
        ...

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        """Create a new key under `key_id`, replacing (and making unusable) any key of that id."""
        ...

    def get_public_key(self, key_id: str) -> PublicKey:
        """Raises KeyNotFoundError for an unknown id."""
        ...

    def list_public_keys(self) -> list[PublicKey]: ...

    def sign_digest(self, key_id: str, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        """Sign a precomputed digest. EC signatures are DER (as X.509 wants); RSA is PKCS#1 v1.5 or PSS."""
        ...

    def close(self) -> None:
        """Release clients and threads. Called once the manager's last key has expired."""
        ...
