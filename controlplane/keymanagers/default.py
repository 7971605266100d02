"""The default key manager: private keys on the server's own disk, wrapped with a KEK.

Like the vendor's default (keys in a Kubernetes resource wrapped by a key-encrypting
key), every private key is stored encrypted with AES-256-GCM under a 32-byte KEK. The
associated data binds the ciphertext to its key id and key type, so a wrapped key
copied under another id (or a file edited by hand) fails to unwrap instead of
silently signing as someone else.

Layout of ``data_dir`` (0700)::

    <sha256(key id) hex>.key.json   one file per key, 0600, written atomically (tmp + rename)

File names are hashes because key ids may hold any printable character; the id itself
is inside the file. Several instances may share one folder (a hot swap back to the
default key manager builds a new instance over the same folder), so the in-memory cache
is checked against the file's identity (inode, mtime, size):

- `get_public_key` and `list_public_keys` check it on every call;
- `sign_digest`, the hot path, skips the ``stat()`` while nothing can have changed: it
  checks again after any instance *in this process* generated or released a key in the
  folder (a per-folder generation counter), and otherwise at most every
  `recheck_seconds` (1 s). So a key replaced by another instance is used at once, one
  replaced or removed by another *process* within a second.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controlplane.files import ensure_private_dir, write_private_atomically
from controlplane.keymanagers.base import (
    HashAlgorithm,
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    PublicKey,
    SigningAlgorithm,
)
from controlplane.keymanagers.signatures import (
    check_digest_length,
    cryptography_hash,
    rsa_padding,
)
from controlplane.keymanagers.validation import coerce_key_type, require_key_id

__all__ = ["KEK_FILE_NAME", "KEK_SIZE", "DefaultKeyManager", "load_or_create_kek"]

log = logging.getLogger(__name__)

KEK_SIZE = 32
KEK_FILE_NAME = "kek"
_FORMAT = "spirl-default-key/v1"
_SUFFIX = ".key.json"

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# How often sign_digest re-checks a key file that no instance in this process has touched.
DEFAULT_RECHECK_SECONDS = 1.0

# Immutable signature parameters, built once rather than per signature.
_PREHASHED = {h: utils.Prehashed(cryptography_hash(h)) for h in HashAlgorithm}
_ECDSA = {h: ec.ECDSA(_PREHASHED[h]) for h in HashAlgorithm}
_RSA_PADDING: dict[tuple[HashAlgorithm, bool], padding.AsymmetricPadding] = {
    (h, pss): rsa_padding(SigningAlgorithm(h, pss)) for h in HashAlgorithm for pss in (False, True)
}

# Per folder (real path): a counter bumped by every generate_key / release_key of any
# instance in this process. A one-element list so instances share and read it cheaply.
_generations_lock = threading.Lock()
_generations: dict[str, list[int]] = {}


def _generation_cell(folder: Path) -> list[int]:
    with _generations_lock:
        return _generations.setdefault(os.path.realpath(folder), [0])


@functools.lru_cache(maxsize=1024)
def _file_name(key_id: str) -> str:
    return hashlib.sha256(key_id.encode("utf-8")).hexdigest() + _SUFFIX


def _decode_kek(text: str | bytes, source: str) -> bytes:
    try:
        kek = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyManagerError(f"KEK from {source} is not valid base64") from None
    if len(kek) != KEK_SIZE:
        raise KeyManagerError(
            f"KEK from {source} is {len(kek)} bytes after base64 decoding; it must be {KEK_SIZE}"
        )
    return kek


def load_or_create_kek(
    data_dir: Path, env_var: str = "SPIRL_KEK", kek_file: Path | None = None
) -> bytes:
    """Find the key-encrypting key: base64 text of 32 bytes.

    Order: `kek_file` when given (it must exist: a configured file that is missing is a
    mistake, not a reason to invent a new KEK), else the environment variable `env_var`,
    else ``data_dir/kek``, created with a fresh random KEK (0600) when absent. A KEK kept
    beside the keys only protects against partial leaks; production should supply it
    from a secret store through the file or the environment.
    """
    if kek_file is not None:
        try:
            text = Path(kek_file).read_text(encoding="ascii")
        except FileNotFoundError:
            raise KeyManagerError(f"KEK file {kek_file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyManagerError(f"cannot read KEK file {kek_file}: {exc}") from None
        return _decode_kek(text, f"file {kek_file}")
    env_value = os.environ.get(env_var) if env_var else None
    if env_value:
        return _decode_kek(env_value, f"environment variable {env_var}")
    path = Path(data_dir) / KEK_FILE_NAME
    ensure_private_dir(Path(data_dir))
    try:
        return _decode_kek(path.read_text(encoding="ascii"), f"file {path}")
    except FileNotFoundError:
        pass
    kek = AESGCM.generate_key(bit_length=256)
    try:
        # O_EXCL: two processes starting at once must not each write a different KEK.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _decode_kek(path.read_text(encoding="ascii"), f"file {path}")
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(kek).decode("ascii") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.warning(
        "generated a new key-encrypting key at %s; set %s or a KEK file to keep it elsewhere",
        path,
        env_var,
    )
    return kek


def _aad(key_id: str, key_type: KeyType) -> bytes:
    return f"{_FORMAT}\x00{key_type.value}\x00{key_id}".encode()


@dataclass(frozen=True)
class _Entry:
    public: PublicKey
    private_key: _PrivateKey
    file_identity: tuple[int, int, int]  # (inode, mtime ns, size): detects replacement


def _file_identity(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class _Signer:
    """The sign_digest fast path for one key: the entry and when its file was last checked."""

    __slots__ = ("checked_at", "ec_key", "entry", "generation", "rsa_key")

    def __init__(self, entry: _Entry, checked_at: float, generation: int) -> None:
        self.entry = entry
        # Typed once here, so signing needs no isinstance (an ABC check) per call.
        key = entry.private_key
        self.ec_key = key if isinstance(key, ec.EllipticCurvePrivateKey) else None
        self.rsa_key = key if isinstance(key, rsa.RSAPrivateKey) else None
        self.checked_at = checked_at
        self.generation = generation


class DefaultKeyManager:
    """KeyManager with KEK-wrapped private keys in `data_dir`. Thread-safe."""

    type_name = "default"
    # Signing is CPU only (no network): the trust domain server may sign on its event loop.
    signs_locally = True

    def __init__(
        self, data_dir: Path, kek: bytes, *, recheck_seconds: float = DEFAULT_RECHECK_SECONDS
    ) -> None:
        if not isinstance(kek, bytes) or len(kek) != KEK_SIZE:
            raise KeyManagerError(f"the KEK must be {KEK_SIZE} bytes")
        self._dir = Path(data_dir)
        self._dir_text = str(self._dir)
        self._aesgcm = AESGCM(kek)
        self._lock = threading.RLock()
        self._cache: dict[str, _Entry] = {}
        self._signers: dict[str, _Signer] = {}
        self._recheck = recheck_seconds
        self._closed = False
        ensure_private_dir(self._dir)
        self._generation = _generation_cell(self._dir)

    @property
    def data_dir(self) -> Path:
        return self._dir

    def __repr__(self) -> str:
        return f"DefaultKeyManager(data_dir={str(self._dir)!r})"

    # -- KeyManager -------------------------------------------------------------------------

    def check(self) -> None:
        """The folder is writable and every stored key unwraps with this KEK."""
        self._ensure_open()
        try:
            ensure_private_dir(self._dir)
            probe = self._dir / f".probe-{secrets.token_hex(8)}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise KeyManagerError(f"key folder {self._dir} is not usable: {exc}") from exc
        # Unwrapping every key finds a wrong KEK now, before a swap, not at the next signature.
        self.list_public_keys()

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        key_id = require_key_id(key_id)
        key_type = coerce_key_type(key_type)
        self._ensure_open()
        # Generation happens outside the lock: RSA-4096 takes long and needs no shared state.
        private_key = _new_private_key(key_type)
        public_der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        private_der = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = secrets.token_bytes(12)
        record = {
            "format": _FORMAT,
            "key_id": key_id,
            "key_type": key_type.value,
            "created_at": datetime.now(UTC).isoformat(),
            "public_key": base64.b64encode(public_der).decode("ascii"),
            "nonce": base64.b64encode(nonce).decode("ascii"),
            "wrapped_private_key": base64.b64encode(
                self._aesgcm.encrypt(nonce, private_der, _aad(key_id, key_type))
            ).decode("ascii"),
        }
        path = self._path(key_id)
        public = PublicKey(key_id, key_type, public_der, provider_ref=str(path))
        with self._lock:
            identity = _file_identity(
                write_private_atomically(path, json.dumps(record).encode("utf-8"))
            )
            self._cache[key_id] = _Entry(public, private_key, identity)
            self._signers.pop(key_id, None)
        self._bump_generation()
        log.info("generated %s key %r in %s", key_type.value, key_id, path)
        return public

    def get_public_key(self, key_id: str) -> PublicKey:
        return self._entry(require_key_id(key_id)).public

    def list_public_keys(self) -> list[PublicKey]:
        self._ensure_open()
        keys: list[PublicKey] = []
        for path in sorted(self._dir.glob(f"*{_SUFFIX}")):
            try:
                key_id = json.loads(path.read_bytes()).get("key_id")
            except FileNotFoundError:
                continue  # replaced or removed while listing
            except (OSError, ValueError) as exc:
                raise KeyManagerError(f"cannot read key file {path}: {exc}") from exc
            if not isinstance(key_id, str) or self._path(key_id) != path:
                raise KeyManagerError(f"key file {path} does not hold the key its name says")
            try:
                keys.append(self._entry(key_id).public)
            except KeyNotFoundError:
                continue
        keys.sort(key=lambda k: k.key_id)
        return keys

    def sign_digest(self, key_id: str, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        # Fast path (the issuance hot path): a signer checked recently, with no key
        # generated or released in this folder by this process since. `type(...) is str`
        # also keeps an unhashable id away from the dict; the slow path reports it.
        signer = self._signers.get(key_id) if type(key_id) is str else None
        if (
            signer is None
            or signer.generation != self._generation[0]
            or time.monotonic() - signer.checked_at >= self._recheck
        ):
            signer = self._refresh_signer(key_id)
        try:
            check_digest_length(digest, algorithm.hash)
        except ValueError as exc:
            raise KeyManagerError(str(exc)) from None
        if signer.ec_key is not None:
            if algorithm.rsa_pss:
                raise KeyManagerError(f"key {key_id!r} is an EC key; RSA-PSS does not apply")
            return signer.ec_key.sign(digest, _ECDSA[algorithm.hash])
        assert signer.rsa_key is not None  # _unwrap admits EC and RSA keys only
        return signer.rsa_key.sign(
            digest, _RSA_PADDING[(algorithm.hash, algorithm.rsa_pss)], _PREHASHED[algorithm.hash]
        )

    def release_key(self, key_id: str) -> None:
        """Delete a key's file (not part of the KeyManager protocol; the webhook manager has it too).

        For the server to drop keys that no bundle needs any more; raises KeyNotFoundError
        for an unknown id.
        """
        key_id = require_key_id(key_id)
        self._ensure_open()
        with self._lock:
            self._cache.pop(key_id, None)
            self._signers.pop(key_id, None)
            try:
                self._path(key_id).unlink()
            except FileNotFoundError:
                raise KeyNotFoundError(f"no key {key_id!r} in {self._dir}") from None
            finally:
                self._bump_generation()
        log.info("released key %r from %s", key_id, self._dir)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cache.clear()
            self._signers.clear()

    # -- internals ---------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise KeyManagerError(f"default key manager for {self._dir} is closed")

    def _path(self, key_id: str) -> Path:
        return self._dir / _file_name(key_id)

    def _bump_generation(self) -> None:
        with _generations_lock:
            self._generation[0] += 1

    def _refresh_signer(self, key_id: str) -> _Signer:
        """Check the key file (stat) and record the result for sign_digest's fast path."""
        key_id = require_key_id(key_id)
        # Read the generation first: a bump racing with the check forces one more check.
        generation = self._generation[0]
        entry = self._entry(key_id)
        signer = _Signer(entry, time.monotonic(), generation)
        with self._lock:
            if not self._closed:
                self._signers[key_id] = signer
        return signer

    def _entry(self, key_id: str) -> _Entry:
        """The key's entry, its file's identity checked now (stat) and unwrapped if changed."""
        self._ensure_open()
        path = os.path.join(self._dir_text, _file_name(key_id))
        with self._lock:
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                self._cache.pop(key_id, None)
                self._signers.pop(key_id, None)
                raise KeyNotFoundError(f"no key {key_id!r} in {self._dir}") from None
            cached = self._cache.get(key_id)
            if cached is not None and cached.file_identity == _file_identity(stat):
                return cached
            # Replaced since we cached it: the fast path must not keep the old key either.
            self._signers.pop(key_id, None)
            entry = self._unwrap(key_id, Path(path))
            self._cache[key_id] = entry
            return entry

    def _unwrap(self, key_id: str, path: Path) -> _Entry:
        try:
            with open(path, "rb") as handle:
                identity = _file_identity(os.fstat(handle.fileno()))
                record: dict[str, Any] = json.loads(handle.read())
        except FileNotFoundError:
            raise KeyNotFoundError(f"no key {key_id!r} in {self._dir}") from None
        except (OSError, ValueError) as exc:
            raise KeyManagerError(f"cannot read key file {path}: {exc}") from exc
        try:
            if record.get("format") != _FORMAT:
                raise KeyManagerError(
                    f"key file {path} has unknown format {record.get('format')!r}"
                )
            if record.get("key_id") != key_id:
                raise KeyManagerError(f"key file {path} does not hold key {key_id!r}")
            key_type = KeyType(record["key_type"])
            nonce = base64.b64decode(record["nonce"])
            wrapped = base64.b64decode(record["wrapped_private_key"])
            public_der = base64.b64decode(record["public_key"])
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyManagerError(f"key file {path} is malformed: {exc}") from exc
        try:
            private_der = self._aesgcm.decrypt(nonce, wrapped, _aad(key_id, key_type))
        except InvalidTag:
            raise KeyManagerError(
                f"cannot unwrap key {key_id!r} in {path}: the key-encrypting key (KEK) does "
                "not match the one that wrapped it, or the file was altered"
            ) from None
        private_key = serialization.load_der_private_key(private_der, password=None)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise KeyManagerError(f"key file {path} holds an unsupported key")
        derived = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if derived != public_der:
            raise KeyManagerError(f"key file {path}: public key does not match the private key")
        return _Entry(
            PublicKey(key_id, key_type, public_der, provider_ref=str(path)), private_key, identity
        )


def _new_private_key(key_type: KeyType) -> _PrivateKey:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    size = 2048 if key_type is KeyType.RSA_2048 else 4096
    return rsa.generate_private_key(public_exponent=65537, key_size=size)
