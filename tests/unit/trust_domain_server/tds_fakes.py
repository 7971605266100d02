"""A tiny in-memory KeyManager for unit tests of the trust domain server core.

Real keys (cryptography), so signatures verify; knobs to make check() or signing fail and
counters to prove what was (not) called.
"""

from __future__ import annotations

import threading
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from controlplane.keymanagers.base import (
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    PublicKey,
    SigningAlgorithm,
)

_HASH = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class FakeKeyManager:
    def __init__(self, type_name: str = "fake", fail_check: str | None = None) -> None:
        self.type_name = type_name
        self.fail_check = fail_check
        self.fail_sign = False
        self.fail_generate = False
        self.keys: dict[str, Any] = {}
        self.generated: list[str] = []
        self.generate_calls = 0
        self.checks = 0
        self.signs = 0
        self.closed = False
        self.released: list[str] = []
        self.fail_release = False
        self.release_calls: list[str] = []
        self.unfinished_releases = 0  # release_key answers False (e.g. purge pending) this often
        self.sign_threads: list[str] = []  # thread name of each sign_digest call

    def check(self) -> None:
        self.checks += 1
        if self.fail_check:
            raise KeyManagerError(self.fail_check)

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        assert not self.closed, "generate on a closed key manager"
        self.generate_calls += 1
        if self.fail_generate:
            raise KeyManagerError("generation disabled")
        if key_type is KeyType.EC_P256:
            key: Any = ec.generate_private_key(ec.SECP256R1())
        elif key_type is KeyType.EC_P384:
            key = ec.generate_private_key(ec.SECP384R1())
        else:
            size = 2048 if key_type is KeyType.RSA_2048 else 4096
            key = rsa.generate_private_key(public_exponent=65537, key_size=size)
        self.keys[key_id] = (key, key_type)
        self.generated.append(key_id)
        return self.get_public_key(key_id)

    def get_public_key(self, key_id: str) -> PublicKey:
        if key_id not in self.keys:
            raise KeyNotFoundError(key_id)
        key, key_type = self.keys[key_id]
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return PublicKey(key_id, key_type, der, f"fake:{key_id}")

    def list_public_keys(self) -> list[PublicKey]:
        return [self.get_public_key(k) for k in self.keys]

    def sign_digest(self, key_id: str, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        assert not self.closed, "sign on a closed key manager"
        if self.fail_sign:
            raise KeyManagerError("signing disabled")
        if key_id not in self.keys:
            raise KeyNotFoundError(key_id)
        self.signs += 1
        self.sign_threads.append(threading.current_thread().name)
        key, _ = self.keys[key_id]
        prehashed = utils.Prehashed(_HASH[algorithm.hash.value]())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(digest, ec.ECDSA(prehashed))
        pad = (
            padding.PSS(
                mgf=padding.MGF1(_HASH[algorithm.hash.value]()),
                salt_length=padding.PSS.DIGEST_LENGTH,
            )
            if algorithm.rsa_pss
            else padding.PKCS1v15()
        )
        return key.sign(digest, pad, prehashed)

    def release_key(self, key_id: str) -> bool:
        assert not self.closed, "release on a closed key manager"
        self.release_calls.append(key_id)
        if self.fail_release:
            raise KeyManagerError("vault unreachable")
        if key_id not in self.keys:
            raise KeyNotFoundError(key_id)
        if self.unfinished_releases:
            self.unfinished_releases -= 1
            return False
        del self.keys[key_id]
        self.released.append(key_id)
        return True

    def close(self) -> None:
        self.closed = True


def digest_of(spec: dict[str, Any]) -> str:
    import hashlib
    import json

    return "sha256:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def handle_for(
    km: FakeKeyManager, spec: dict[str, Any] | None = None, key_type: KeyType = KeyType.EC_P256
):
    from controlplane.trust_domain_server.keyring import ManagerHandle

    spec = spec if spec is not None else {"extensions": {km.type_name: {"n": id(km)}}}
    return ManagerHandle.new(km, digest_of(spec), key_type, spec)
