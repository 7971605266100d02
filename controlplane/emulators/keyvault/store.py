"""The emulated vault's keys: versions, soft-deleted keys, the emulator clock, persistence.

Everything is kept in one JSON file in the state dir (rewritten atomically on each
change) so a restarted emulator still has its keys. Private keys live in that file
as PKCS#8 PEM; this is a test double, and the state dir is private (0700/0600).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .crypto_ops import (
    KeySpec,
    PrivateKey,
    generate_private_key,
    jwk_public,
    load_private_key,
    private_key_pem,
)

__all__ = ["Clock", "DeletedKey", "KeyStore", "KeyVersion", "VaultError", "valid_key_name"]

RECOVERABLE_DAYS = 90
_DEFAULT_EC_OPS = ["sign", "verify"]
_DEFAULT_RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]


class VaultError(Exception):
    """An error answer in Key Vault's shape: {"error": {"code", "message", "innererror"?}}."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            err["innererror"] = {"code": self.inner}
        return {"error": err}


def valid_key_name(name: str) -> bool:
    return 1 <= len(name) <= 127 and all(c.isascii() and (c.isalnum() or c == "-") for c in name)


def key_not_found(name: str) -> VaultError:
    return VaultError(
        404,
        "KeyNotFound",
        f"A key with (name/id) {name} was not found in this key vault. If you recently deleted "
        "this key you may be able to recover it using the correct recovery command.",
    )


class Clock:
    """Wall clock plus an adjustable offset, so tests can make keys look old."""

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = float(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += float(seconds)

    def now(self) -> int:
        return int(time.time() + self.offset)


@dataclass
class KeyVersion:
    version: str
    kty: str
    crv: str | None
    key_size: int | None
    private_pem: str
    key_ops: list[str]
    enabled: bool
    created: int
    updated: int
    nbf: int | None = None
    exp: int | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> KeySpec:
        return KeySpec(self.kty, crv=self.crv, key_size=self.key_size)


@dataclass
class DeletedKey:
    versions: list[KeyVersion]
    deleted_date: int
    scheduled_purge_date: int


class KeyStore:
    """All key state of one vault. Methods raise VaultError with Key Vault's codes."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self._path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._keys: dict[str, list[KeyVersion]] = {}
        self._deleted: dict[str, DeletedKey] = {}
        self._material: dict[str, PrivateKey] = {}  # version -> parsed key, a cache
        if path.exists():
            raw = json.loads(path.read_text())
            self.clock.set_offset(raw.get("clock_offset", 0.0))
            for name, versions in raw.get("keys", {}).items():
                self._keys[name] = [KeyVersion(**v) for v in versions]
            for name, d in raw.get("deleted", {}).items():
                self._deleted[name] = DeletedKey(
                    versions=[KeyVersion(**v) for v in d["versions"]],
                    deleted_date=d["deleted_date"],
                    scheduled_purge_date=d["scheduled_purge_date"],
                )

    # -- persistence -------------------------------------------------------------------
    def save(self) -> None:
        with self._lock:
            data = {
                "clock_offset": self.clock.offset,
                "keys": {n: [asdict(v) for v in vs] for n, vs in self._keys.items()},
                "deleted": {
                    n: {
                        "versions": [asdict(v) for v in d.versions],
                        "deleted_date": d.deleted_date,
                        "scheduled_purge_date": d.scheduled_purge_date,
                    }
                    for n, d in self._deleted.items()
                },
            }
            tmp = self._path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self._path)

    # -- reads ---------------------------------------------------------------------------
    def _versions(self, name: str) -> list[KeyVersion]:
        versions = self._keys.get(name)
        if not versions:
            raise key_not_found(name)
        return versions

    def get(self, name: str, version: str = "") -> KeyVersion:
        with self._lock:
            versions = self._versions(name)
            if not version:
                return versions[-1]
            for v in versions:
                if v.version == version:
                    return v
            raise key_not_found(f"{name}/{version}")

    def material(self, kv: KeyVersion) -> PrivateKey:
        with self._lock:
            key = self._material.get(kv.version)
            if key is None:
                key = load_private_key(kv.private_pem)
                self._material[kv.version] = key
            return key

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def latest(self, name: str) -> KeyVersion | None:
        with self._lock:
            versions = self._keys.get(name)
            return versions[-1] if versions else None

    def versions(self, name: str) -> list[KeyVersion]:
        with self._lock:
            return list(self._versions(name))

    # -- writes --------------------------------------------------------------------------
    def create(self, name: str, body: dict[str, Any]) -> KeyVersion:
        spec = KeySpec.from_request(body)
        if name in self._deleted:
            self._purge_expired()
        with self._lock:
            if name in self._deleted:
                raise VaultError(
                    409,
                    "Conflict",
                    f"Key {name} is currently in a deleted but recoverable state, and its name "
                    "cannot be reused; in this state, the key can only be recovered or purged.",
                    inner="ObjectIsDeletedButRecoverable",
                )
        material = generate_private_key(spec)  # slow for RSA; outside the lock
        attrs = body.get("attributes") or {}
        now = self.clock.now()
        kv = KeyVersion(
            version=uuid.uuid4().hex,
            kty=spec.kty,
            crv=spec.crv,
            key_size=spec.key_size,
            private_pem=private_key_pem(material),
            key_ops=list(
                body.get("key_ops") or (_DEFAULT_EC_OPS if spec.is_ec else _DEFAULT_RSA_OPS)
            ),
            enabled=bool(attrs.get("enabled", True)),
            created=now,
            updated=now,
            nbf=attrs.get("nbf"),
            exp=attrs.get("exp"),
            tags={str(k): str(v) for k, v in (body.get("tags") or {}).items()},
        )
        with self._lock:
            self._keys.setdefault(name, []).append(kv)
            self._material[kv.version] = material
            self.save()
        return kv

    def update(self, name: str, version: str, body: dict[str, Any]) -> KeyVersion:
        with self._lock:
            kv = self.get(name, version)
            attrs = body.get("attributes") or {}
            if attrs.get("enabled") is not None:
                kv.enabled = bool(attrs["enabled"])
            if "nbf" in attrs:
                kv.nbf = attrs["nbf"]
            if "exp" in attrs:
                kv.exp = attrs["exp"]
            if body.get("key_ops") is not None:
                kv.key_ops = list(body["key_ops"])
            if body.get("tags") is not None:
                kv.tags = {str(k): str(v) for k, v in body["tags"].items()}
            kv.updated = self.clock.now()
            self.save()
            return kv

    def delete(self, name: str) -> DeletedKey:
        with self._lock:
            versions = self._versions(name)
            now = self.clock.now()
            deleted = DeletedKey(versions, now, now + RECOVERABLE_DAYS * 86400)
            del self._keys[name]
            self._deleted[name] = deleted
            self.save()
            return deleted

    def _purge_expired(self) -> None:
        # Key Vault purges soft-deleted keys once their scheduled purge date has passed.
        with self._lock:
            now = self.clock.now()
            expired = [n for n, d in self._deleted.items() if d.scheduled_purge_date <= now]
            for n in expired:
                del self._deleted[n]
            if expired:
                self.save()

    def get_deleted(self, name: str) -> DeletedKey:
        self._purge_expired()
        with self._lock:
            d = self._deleted.get(name)
            if d is None:
                raise VaultError(404, "KeyNotFound", f"Deleted Key not found: {name}")
            return d

    def deleted_names(self) -> list[str]:
        self._purge_expired()
        with self._lock:
            return sorted(self._deleted)

    def purge(self, name: str) -> None:
        with self._lock:
            self.get_deleted(name)
            del self._deleted[name]
            self.save()

    def recover(self, name: str) -> KeyVersion:
        with self._lock:
            d = self.get_deleted(name)
            if name in self._keys:
                raise VaultError(409, "Conflict", f"Key {name} already exists")
            del self._deleted[name]
            self._keys[name] = d.versions
            self.save()
            return d.versions[-1]

    # -- JSON shapes ---------------------------------------------------------------------
    def attributes(self, kv: KeyVersion) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "enabled": kv.enabled,
            "created": kv.created,
            "updated": kv.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": RECOVERABLE_DAYS,
            "exportable": False,
        }
        if kv.nbf is not None:
            attrs["nbf"] = kv.nbf
        if kv.exp is not None:
            attrs["exp"] = kv.exp
        if kv.spec.is_hsm:
            attrs["hsmPlatform"] = "2"
        return attrs

    def bundle(self, base: str, name: str, kv: KeyVersion) -> dict[str, Any]:
        jwk = jwk_public(self.material(kv), kv.spec)
        jwk = {"kid": f"{base}keys/{name}/{kv.version}", **jwk, "key_ops": list(kv.key_ops)}
        out: dict[str, Any] = {"key": jwk, "attributes": self.attributes(kv)}
        if kv.tags:
            out["tags"] = dict(kv.tags)
        return out

    def item(self, base: str, name: str, kv: KeyVersion, *, with_version: bool) -> dict[str, Any]:
        kid = f"{base}keys/{name}/{kv.version}" if with_version else f"{base}keys/{name}"
        out: dict[str, Any] = {"kid": kid, "attributes": self.attributes(kv)}
        if kv.tags:
            out["tags"] = dict(kv.tags)
        return out

    def deleted_fields(self, base: str, name: str, d: DeletedKey) -> dict[str, Any]:
        return {
            "recoveryId": f"{base}deletedkeys/{name}",
            "deletedDate": d.deleted_date,
            "scheduledPurgeDate": d.scheduled_purge_date,
        }
