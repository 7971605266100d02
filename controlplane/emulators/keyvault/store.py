"""The emulated vault's keys: versions, soft delete and recovery, the emulator clock, persistence.

Everything is kept in one JSON file in the state dir (rewritten atomically on each change) so a
restarted emulator still has its keys. Private keys live in that file as PKCS#8 PEM; this is a
test double, and the state dir is private (0700/0600).

As Key Vault does (sources named in the tests):

- Key names are case-insensitive: ``MyKey`` and ``mykey`` are one key; answers spell the name
  as it was created.
- Delete and recover are asynchronous. A deleted key is "being deleted" for
  ``delete_delay`` seconds: ``GET /deletedkeys/{name}`` answers 404 (the SDK's delete poller
  waits for it), re-creating, purging or recovering it is a 409 ``ObjectIsBeingDeleted``.
  A recovered key is "being recovered" for ``recover_delay`` seconds: ``GET /keys/{name}``
  answers 404 (the recover poller waits for it), creating a version is a 409
  ``ObjectIsBeingRecovered``, a second recover is the 409 "conflict while recovering" that
  parallel recoveries get.
- A name held by a soft-deleted key cannot be reused (409 ``ObjectIsDeletedButRecoverable``)
  until it is recovered or purged; the service purges it by itself at its scheduled purge date.
- With purge protection on, purging is refused (403) and keys report the recovery level
  ``Recoverable`` (``CustomizedRecoverable`` below 90 retention days) instead of
  ``Recoverable+Purgeable``.
- Listing versions returns them in no particular order (here: by version id), so a client
  cannot rely on creation order.
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

__all__ = [
    "Clock",
    "DeletedKey",
    "KeyStore",
    "KeyVersion",
    "SoftDeleteSettings",
    "VaultError",
    "valid_key_name",
]

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


def deleted_key_not_found(name: str) -> VaultError:
    return VaultError(404, "KeyNotFound", f"Deleted Key not found: {name}")


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
class SoftDeleteSettings:
    """The vault's soft-delete properties (ARM: softDeleteRetentionInDays, enablePurgeProtection)
    and how long the asynchronous delete and recover take here."""

    retention_days: int = 90
    purge_protection: bool = False
    delete_delay: float = 0.0
    recover_delay: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.retention_days, bool) or not 7 <= int(self.retention_days) <= 90:
            raise ValueError("retention_days must be within 7 and 90 (Azure's range)")
        for name in ("delete_delay", "recover_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0")

    @property
    def recovery_level(self) -> str:
        # DeletionRecoveryLevel in the REST spec (keys.json / models.tsp).
        level = "Recoverable" if self.retention_days == 90 else "CustomizedRecoverable"
        return level if self.purge_protection else level + "+Purgeable"


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
    name: str
    versions: list[KeyVersion]
    deleted_date: int
    scheduled_purge_date: int
    ready_at: float = 0.0  # wall time when the asynchronous delete completes


@dataclass
class _Recovering:
    name: str
    versions: list[KeyVersion]
    ready_at: float


class KeyStore:
    """All key state of one vault. Methods raise VaultError with Key Vault's codes."""

    def __init__(
        self, path: Path, clock: Clock, soft_delete: SoftDeleteSettings | None = None
    ) -> None:
        self._path = path
        self.clock = clock
        self.soft_delete = soft_delete or SoftDeleteSettings()
        self._lock = threading.RLock()
        # Keyed by the lower-cased name; each entry keeps the name as created.
        self._keys: dict[str, tuple[str, list[KeyVersion]]] = {}
        self._deleted: dict[str, DeletedKey] = {}
        self._recovering: dict[str, _Recovering] = {}
        self._material: dict[str, PrivateKey] = {}  # version -> parsed key, a cache
        if path.exists():
            raw = json.loads(path.read_text())
            self.clock.set_offset(raw.get("clock_offset", 0.0))
            for name, versions in raw.get("keys", {}).items():
                self._keys[name.lower()] = (name, [KeyVersion(**v) for v in versions])
            for name, d in raw.get("deleted", {}).items():
                self._deleted[name.lower()] = DeletedKey(
                    name=name,
                    versions=[KeyVersion(**v) for v in d["versions"]],
                    deleted_date=d["deleted_date"],
                    scheduled_purge_date=d["scheduled_purge_date"],
                )

    # -- persistence -------------------------------------------------------------------
    def save(self) -> None:
        with self._lock:
            # Keys being recovered are saved as recovered: a restart completes the operation.
            live = dict(self._keys)
            for key, r in self._recovering.items():
                live[key] = (r.name, r.versions)
            data = {
                "clock_offset": self.clock.offset,
                "keys": {name: [asdict(v) for v in vs] for name, vs in live.values()},
                "deleted": {
                    d.name: {
                        "versions": [asdict(v) for v in d.versions],
                        "deleted_date": d.deleted_date,
                        "scheduled_purge_date": d.scheduled_purge_date,
                    }
                    for d in self._deleted.values()
                },
            }
            tmp = self._path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self._path)

    # -- asynchronous operations -------------------------------------------------------
    def _settle(self) -> None:
        """Finish recoveries whose time has come and purge expired deleted keys. Lock held."""
        now = time.time()
        for key, r in list(self._recovering.items()):
            if r.ready_at <= now:
                del self._recovering[key]
                self._keys[key] = (r.name, r.versions)
        today = self.clock.now()
        expired = [k for k, d in self._deleted.items() if d.scheduled_purge_date <= today]
        for key in expired:
            del self._deleted[key]
        if expired:
            self.save()

    def _conflict_if_busy(self, key: str, name: str) -> None:
        """409 while a delete or a recovery of `name` is still running. Lock held."""
        d = self._deleted.get(key)
        if d is not None and d.ready_at > time.time():
            raise VaultError(
                409, "Conflict", "Key is currently being deleted.", "ObjectIsBeingDeleted"
            )
        if key in self._recovering:
            raise VaultError(
                409,
                "Conflict",
                f"Key {name} is currently being recovered and cannot be re-created; retry later.",
                "ObjectIsBeingRecovered",
            )

    # -- reads ---------------------------------------------------------------------------
    def _entry(self, name: str) -> tuple[str, list[KeyVersion]]:
        self._settle()
        entry = self._keys.get(name.lower())
        if entry is None or not entry[1]:
            raise key_not_found(name)
        return entry

    def display_name(self, name: str) -> str:
        with self._lock:
            return self._entry(name)[0]

    def get(self, name: str, version: str = "") -> KeyVersion:
        with self._lock:
            versions = self._entry(name)[1]
            if not version:
                return versions[-1]
            for v in versions:
                if v.version == version.lower():
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
            self._settle()
            return [self._keys[k][0] for k in sorted(self._keys)]

    def latest(self, name: str) -> KeyVersion | None:
        with self._lock:
            entry = self._keys.get(name.lower())
            return entry[1][-1] if entry and entry[1] else None

    def versions(self, name: str) -> list[KeyVersion]:
        """All versions, in no particular order (by version id), as the service lists them."""
        with self._lock:
            return sorted(self._entry(name)[1], key=lambda v: v.version)

    # -- writes --------------------------------------------------------------------------
    def create(self, name: str, body: dict[str, Any]) -> tuple[str, KeyVersion]:
        """Add a version (the first one creates the key); returns the key's name and it."""
        spec = KeySpec.from_request(body)
        key = name.lower()
        with self._lock:
            self._settle()
            self._conflict_if_busy(key, name)
            deleted = self._deleted.get(key)
            if deleted is not None:
                raise VaultError(
                    409,
                    "Conflict",
                    f"Key {deleted.name} is currently in a deleted but recoverable state, and its "
                    "name cannot be reused; in this state, the key can only be recovered or "
                    "purged.",
                    "ObjectIsDeletedButRecoverable",
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
            self._conflict_if_busy(key, name)
            stored_name, versions = self._keys.setdefault(key, (name, []))
            versions.append(kv)
            self._material[kv.version] = material
            self.save()
        return stored_name, kv

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
            self._settle()
            key = name.lower()
            if key in self._recovering:
                self._conflict_if_busy(key, name)
            stored_name, versions = self._entry(name)
            now = self.clock.now()
            deleted = DeletedKey(
                stored_name,
                versions,
                now,
                now + self.soft_delete.retention_days * 86400,
                ready_at=time.time() + self.soft_delete.delete_delay,
            )
            del self._keys[key]
            self._deleted[key] = deleted
            self.save()
            return deleted

    def get_deleted(self, name: str) -> DeletedKey:
        """A deleted key whose deletion has completed (404 while it is still being deleted)."""
        with self._lock:
            self._settle()
            d = self._deleted.get(name.lower())
            if d is None or d.ready_at > time.time():
                raise deleted_key_not_found(name)
            return d

    def deleted_names(self) -> list[str]:
        with self._lock:
            self._settle()
            now = time.time()
            return [d.name for k, d in sorted(self._deleted.items()) if d.ready_at <= now]

    def purge(self, name: str, vault_ref: str) -> None:
        with self._lock:
            self._settle()
            key = name.lower()
            self._conflict_if_busy(key, name)
            self.get_deleted(name)
            if self.soft_delete.purge_protection:
                raise VaultError(
                    403,
                    "Forbidden",
                    'Operation "purge" is not allowed because purge protection is enabled for '
                    "this vault. Key Vault service will automatically purge it after the "
                    f"retention period has passed. Vault: {vault_ref}",
                )
            del self._deleted[key]
            self.save()

    def recover(self, name: str, base: str) -> tuple[str, KeyVersion]:
        with self._lock:
            self._settle()
            key = name.lower()
            r = self._recovering.get(key)
            if r is not None:
                raise VaultError(
                    409,
                    "Conflict",
                    "There was a conflict while recovering the soft-deleted key "
                    f"'{base}keys/{r.name}/{r.versions[-1].version}'. This can happen when "
                    "multiple operations are performed in parallel against the soft-deleted "
                    "key. To avoid this error, perform operations against the soft-deleted key "
                    "in a sequential manner.",
                )
            self._conflict_if_busy(key, name)
            d = self.get_deleted(name)
            del self._deleted[key]
            self._recovering[key] = _Recovering(
                d.name, d.versions, time.time() + self.soft_delete.recover_delay
            )
            self._settle()
            self.save()
            return d.name, d.versions[-1]

    # -- JSON shapes ---------------------------------------------------------------------
    def attributes(self, kv: KeyVersion) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "enabled": kv.enabled,
            "created": kv.created,
            "updated": kv.updated,
            "recoveryLevel": self.soft_delete.recovery_level,
            "recoverableDays": self.soft_delete.retention_days,
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

    def deleted_fields(self, base: str, d: DeletedKey) -> dict[str, Any]:
        return {
            "recoveryId": f"{base}deletedkeys/{d.name}",
            "deletedDate": d.deleted_date,
            "scheduledPurgeDate": d.scheduled_purge_date,
        }
