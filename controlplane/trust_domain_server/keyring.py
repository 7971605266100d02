"""Key slots, rotation and drain: the pure core of the trust domain server.

Modelled on SPIRE's `pkg/server/ca/manager`: for each kind of key (the X.509 CA key and the
JWT signer key) there is a current and a next slot. The next key is prepared at
`notAfter - min(lifetime/2, 30d)` and activated at `notAfter - min(lifetime/6, 7d)`; SVIDs
live at most `min(lifetime/6, 7d)`, so a key retired at activation still outlives every SVID
it signed. Retired keys stay published until their not-after.

No I/O of its own and no clock of its own: `rotate(now)` is driven by the caller. Key
manager calls (which may hit the network) are made without holding the keyring lock so that
issuance continues while a key is being generated. A failed generation is retried with a
growing delay (10 s doubling up to 5 min) while the current key keeps signing.

Release. A key that has expired no longer signs and no bundle needs its public key, so the
keyring asks its manager to remove it (``release_key``, optional, not in the KeyManager
protocol: the Azure Key Vault manager deletes it, the default manager deletes its file). A
release that fails, or says it is not finished (returns False), stays pending and is retried
later (1 min doubling up to 1 h); pending releases are persisted with the key records and a key
that expired while the server was down is released after the restart, so no key is left behind.
A manager stays open until its pending releases are done. With releases at expiry a manager
holds at most three keys per kind: retired, active, prepared.

Key ids and kids. A record's `key_id` is the id asked of the key manager, its `kid` the id
in the bundle and in JWT headers. Normally both are the same fresh random id. A manager
that shares keys between the servers of a deployment (``shares_keys`` true: Azure Key Vault
with ``sharedKeys``) gets stable JWT key ids that alternate per slot (``jwt-signer-a``,
``jwt-signer-b``), so servers preparing the same slot at about the same time end up with
one key; the kid is then the RFC 7638 thumbprint of the public key, the same on every server,
so the bundle carries the shared key once. X.509 CA keys are never shared (each server has
its own CA certificate).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from controlplane.keymanagers.base import (
    SHARED_JWT_KEY_IDS,
    KeyManager,
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    SigningAlgorithm,
)

from .crypto import CA_KEY_USAGE, jwk_thumbprint, sign_certificate

__all__ = [
    "DEFAULT_LIFETIME",
    "KeyKind",
    "KeyRecord",
    "KeyState",
    "Keyring",
    "Lifetimes",
    "ManagerHandle",
    "NoActiveKeyError",
    "PendingRelease",
    "SHARED_JWT_KEY_IDS",
    "activation_threshold",
    "close_manager",
    "preparation_threshold",
    "svid_ttl_cap",
]

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = timedelta(hours=24)
_MAX_PREPARE = timedelta(days=30)
_MAX_ACTIVATE = timedelta(days=7)
# CA certificates are backdated a little so a verifier whose clock lags still accepts them.
_BACKDATE = timedelta(seconds=10)
# Retry delays after a failed key generation / an unfinished release (doubling up to the cap).
_GENERATE_RETRY = (timedelta(seconds=10), timedelta(minutes=5))
_RELEASE_RETRY = (timedelta(minutes=1), timedelta(hours=1))


def _retry_delay(failures: int, bounds: tuple[timedelta, timedelta]) -> timedelta:
    first, cap = bounds
    return min(first * (2 ** max(0, min(failures - 1, 16))), cap)


class KeyKind(StrEnum):
    X509_CA = "x509-ca"
    JWT = "jwt"


class KeyState(StrEnum):
    PREPARED = "prepared"
    ACTIVE = "active"
    RETIRED = "retired"


class NoActiveKeyError(Exception):
    """No usable key of a kind (none generated yet, or generation keeps failing)."""


@dataclass(frozen=True)
class Lifetimes:
    """Key lifetimes from the KeyLifecycle section; apply to keys generated from now on."""

    x509_ca: timedelta = DEFAULT_LIFETIME
    jwt: timedelta = DEFAULT_LIFETIME

    def for_kind(self, kind: KeyKind) -> timedelta:
        return self.x509_ca if kind is KeyKind.X509_CA else self.jwt


def preparation_threshold(not_before: datetime, not_after: datetime) -> datetime:
    return not_after - min((not_after - not_before) / 2, _MAX_PREPARE)


def activation_threshold(not_before: datetime, not_after: datetime) -> datetime:
    return not_after - min((not_after - not_before) / 6, _MAX_ACTIVATE)


def svid_ttl_cap(lifetime: timedelta) -> timedelta:
    return min(lifetime / 6, _MAX_ACTIVATE)


@dataclass
class KeyRecord:
    kid: str
    kind: KeyKind
    key_type: KeyType
    manager_id: str
    km_type: str
    km_digest: str
    state: KeyState
    not_before: datetime
    not_after: datetime
    public_key_der: bytes
    ca_cert_der: bytes | None = None
    provider_ref: str = ""
    key_id: str = ""  # the id the key manager knows the key by; "" = same as kid

    def __post_init__(self) -> None:
        if not self.key_id:
            self.key_id = self.kid

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    def to_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "kind": self.kind.value,
            "key_type": self.key_type.value,
            "manager_id": self.manager_id,
            "km_type": self.km_type,
            "km_digest": self.km_digest,
            "state": self.state.value,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "public_key_der": self.public_key_der.hex(),
            "ca_cert_der": self.ca_cert_der.hex() if self.ca_cert_der else None,
            "provider_ref": self.provider_ref,
            "key_id": self.key_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRecord:
        return cls(
            kid=data["kid"],
            kind=KeyKind(data["kind"]),
            key_type=KeyType(data["key_type"]),
            manager_id=data["manager_id"],
            km_type=data["km_type"],
            km_digest=data["km_digest"],
            state=KeyState(data["state"]),
            not_before=datetime.fromisoformat(data["not_before"]),
            not_after=datetime.fromisoformat(data["not_after"]),
            public_key_der=bytes.fromhex(data["public_key_der"]),
            ca_cert_der=bytes.fromhex(data["ca_cert_der"]) if data.get("ca_cert_der") else None,
            provider_ref=data.get("provider_ref", ""),
            key_id=data.get("key_id", ""),
        )


@dataclass
class PendingRelease:
    """An expired key its manager has not removed yet; retried from `not_before` on."""

    record: KeyRecord
    attempts: int = 0
    not_before: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record.to_dict(),
            "release_attempts": self.attempts,
            "release_not_before": self.not_before.isoformat() if self.not_before else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingRelease:
        not_before = data.get("release_not_before")
        return cls(
            record=KeyRecord.from_dict(data),
            attempts=int(data.get("release_attempts") or 0),
            not_before=datetime.fromisoformat(not_before) if not_before else None,
        )


@dataclass
class ManagerHandle:
    """One live key manager instance and the config that built it."""

    id: str
    type: str
    digest: str
    key_type: KeyType
    spec: dict[str, Any]
    instance: KeyManager
    closed: bool = False

    @classmethod
    def new(
        cls, instance: KeyManager, digest: str, key_type: KeyType, spec: dict[str, Any]
    ) -> ManagerHandle:
        return cls(
            id="km-" + secrets.token_hex(4),
            type=instance.type_name,
            digest=digest,
            key_type=key_type,
            spec=spec,
            instance=instance,
        )

    def describe(self) -> dict[str, str]:
        return {"type": self.type, "digest": self.digest}


@dataclass
class _Slots:
    current: KeyRecord | None = None
    next: KeyRecord | None = None
    retired: list[KeyRecord] = field(default_factory=list)

    def all(self) -> list[KeyRecord]:
        out = list(self.retired)
        if self.current:
            out.append(self.current)
        if self.next:
            out.append(self.next)
        return out


def _new_kid(kind: KeyKind) -> str:
    # Unique per generation so a kid never repeats (a bundle consumer caches by kid).
    return f"{kind.value}-{secrets.token_hex(6)}"


class Keyring:
    """Slots for both key kinds plus the key manager instances that hold their keys."""

    def __init__(
        self,
        trust_domain: str,
        lifetimes: Lifetimes | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.trust_domain = trust_domain
        self._lifetimes = lifetimes or Lifetimes()
        self._on_change = on_change
        self._lock = threading.RLock()
        self._rotate_lock = threading.Lock()
        self._slots: dict[KeyKind, _Slots] = {k: _Slots() for k in KeyKind}
        self._managers: dict[str, ManagerHandle] = {}
        self._active_manager: ManagerHandle | None = None
        self._releases: list[PendingRelease] = []
        # Per kind: consecutive generation failures, when to try again, and the last error.
        self._failures: dict[KeyKind, int] = {}
        self._retry_at: dict[KeyKind, datetime] = {}
        self._errors: dict[KeyKind, str] = {}
        self.last_error: str | None = None

    # --- configuration ---------------------------------------------------------------------

    @property
    def lifetimes(self) -> Lifetimes:
        return self._lifetimes

    def set_lifetimes(self, lifetimes: Lifetimes) -> None:
        with self._lock:
            self._lifetimes = lifetimes

    @property
    def active_manager(self) -> ManagerHandle | None:
        with self._lock:
            return self._active_manager

    def managers(self) -> list[ManagerHandle]:
        with self._lock:
            return list(self._managers.values())

    def find_manager(self, digest: str) -> ManagerHandle | None:
        with self._lock:
            for handle in self._managers.values():
                if handle.digest == digest and not handle.closed:
                    return handle
            return None

    def install_manager(self, handle: ManagerHandle) -> list[ManagerHandle]:
        """Make `handle` the manager for future key generations. Creates no key.

        Returns managers that hold no key any more and were dropped; the caller closes them
        (outside any lock: closing may do network I/O).
        """
        with self._lock:
            self._managers[handle.id] = handle
            self._active_manager = handle
            dropped = self._drop_idle_managers()
        self._changed()
        return dropped

    def adopt(self, handle: ManagerHandle) -> None:
        """Register a manager rebuilt at restart, without making it active."""
        with self._lock:
            self._managers[handle.id] = handle

    def restore(
        self,
        records: list[KeyRecord],
        now: datetime,
        pending: list[PendingRelease] | None = None,
    ) -> None:
        """Load key records and pending releases persisted before a restart (their managers
        must be adopted first). A record that expired meanwhile becomes a pending release."""
        with self._lock:
            self._releases.extend(pending or ())
            for rec in records:
                if rec.not_after <= now:
                    self._releases.append(PendingRelease(rec))
                    continue
                slots = self._slots[rec.kind]
                if rec.state is KeyState.ACTIVE and slots.current is None:
                    slots.current = rec
                elif rec.state is KeyState.PREPARED and slots.next is None:
                    slots.next = rec
                else:
                    slots.retired.append(replace(rec, state=KeyState.RETIRED))

    # --- reading -----------------------------------------------------------------------------

    def records(self) -> list[KeyRecord]:
        with self._lock:
            out: list[KeyRecord] = []
            for kind in KeyKind:
                out.extend(self._slots[kind].all())
            return out

    def pending_releases(self) -> list[PendingRelease]:
        with self._lock:
            return list(self._releases)

    def current(self, kind: KeyKind) -> KeyRecord | None:
        with self._lock:
            return self._slots[kind].current

    def signer_for(self, kind: KeyKind, now: datetime) -> tuple[KeyRecord, ManagerHandle]:
        """The current key of a kind and the manager holding it."""
        with self._lock:
            rec = self._slots[kind].current
            if rec is None or rec.not_after <= now:
                raise NoActiveKeyError(f"no active {kind.value} key")
            handle = self._managers.get(rec.manager_id)
            if handle is None or handle.closed:
                raise NoActiveKeyError(f"key manager of {rec.kid} is not available")
            return rec, handle

    def published(self, now: datetime) -> list[KeyRecord]:
        """Keys that belong in the bundle: prepared (so consumers learn them before use),
        active and retired, until not-after."""
        return [r for r in self.records() if r.not_after > now]

    # --- rotation ----------------------------------------------------------------------------

    def rotate(self, now: datetime) -> bool:
        """One rotator tick. Returns True when any slot changed."""
        with self._rotate_lock:
            changed = bool(self._expire(now))
            released = self._release(now)  # pending releases are persisted state
            for kind in KeyKind:
                retry_at = self._retry_at.get(kind)
                if retry_at is not None and now < retry_at:
                    continue  # the current key keeps signing; try again later
                try:
                    changed |= self._rotate_kind(kind, now)
                except Exception as exc:
                    # Keep the current key signing; retry later. Not only KeyManagerError: an
                    # unexpected SDK error must not skip the other kind.
                    failures = self._failures.get(kind, 0) + 1
                    self._failures[kind] = failures
                    self._retry_at[kind] = now + _retry_delay(failures, _GENERATE_RETRY)
                    self._errors[kind] = f"generating {kind.value} key failed: {exc}"
                    log.error(
                        "%s; the current key keeps signing, retrying at %s",
                        self._errors[kind],
                        self._retry_at[kind].isoformat(timespec="seconds"),
                    )
                else:
                    self._failures.pop(kind, None)
                    self._retry_at.pop(kind, None)
                    self._errors.pop(kind, None)
            with self._lock:  # after expiry, releases and rotation: once per tick
                to_close = self._drop_idle_managers()
            changed |= bool(to_close)
            for handle in to_close:
                close_manager(handle)
            error = "; ".join(self._errors[k] for k in KeyKind if k in self._errors) or None
            # A new or cleared error is news for the status report too.
            changed_error = error != self.last_error
            self.last_error = error
            if changed or changed_error or released:
                self._changed()
            return changed

    def _release(self, now: datetime) -> bool:
        """Ask managers to remove expired keys (`release_key` is optional, not in the protocol).
        Safe: no SVID outlives its key's not-after. True when the pending list changed."""
        with self._lock:
            due = [p for p in self._releases if p.not_before is None or p.not_before <= now]
            handles = dict(self._managers)
            # A stable (shared) key id may already name a newer key: never release that.
            live = {(r.manager_id, r.key_id) for s in self._slots.values() for r in s.all()}
        finished: list[PendingRelease] = []
        for pending in due:
            rec = pending.record
            handle = handles.get(rec.manager_id)
            release = getattr(handle.instance, "release_key", None) if handle else None
            if (
                handle is None
                or handle.closed
                or release is None
                or (rec.manager_id, rec.key_id) in live
            ):
                if handle is None or handle.closed:
                    log.warning("cannot release expired key %s: its key manager is gone", rec.kid)
                finished.append(pending)  # nothing this server can (or may) do
                continue
            try:
                done = release(rec.key_id) is not False
            except KeyNotFoundError:
                done = True
            except Exception as exc:  # a leftover key is clutter, not an outage: retry later
                done = False
                log.warning(
                    "could not release expired key %s from %s: %s", rec.kid, handle.type, exc
                )
            if done:
                finished.append(pending)
                continue
            pending.attempts += 1
            pending.not_before = now + _retry_delay(pending.attempts, _RELEASE_RETRY)
        if not due:
            return False
        with self._lock:
            self._releases = [p for p in self._releases if p not in finished]
        return True

    def _expire(self, now: datetime) -> list[KeyRecord]:
        """Take keys past their not-after out of their slots (their releases are queued)."""
        with self._lock:
            removed: list[KeyRecord] = []
            for slots in self._slots.values():
                keep: list[KeyRecord] = []
                for rec in slots.retired:
                    (removed if rec.not_after <= now else keep).append(rec)
                slots.retired = keep
                if slots.next is not None and slots.next.not_after <= now:
                    removed.append(slots.next)
                    slots.next = None
                if slots.current is not None and slots.current.not_after <= now:
                    removed.append(slots.current)
                    slots.current = None
            for rec in removed:
                log.info(
                    "key %s (%s, %s) expired and left the bundle", rec.kid, rec.kind, rec.km_type
                )
                self._releases.append(PendingRelease(rec))
            return removed

    def _drop_idle_managers(self) -> list[ManagerHandle]:
        """Managers other than the active one that hold no unexpired key and no key still to
        release. Lock held."""
        in_use = {r.manager_id for s in self._slots.values() for r in s.all()}
        in_use |= {p.record.manager_id for p in self._releases}
        dropped = []
        for mid, handle in list(self._managers.items()):
            if handle is self._active_manager or mid in in_use:
                continue
            del self._managers[mid]
            dropped.append(handle)
        return dropped

    def _rotate_kind(self, kind: KeyKind, now: datetime) -> bool:
        with self._lock:
            slots = self._slots[kind]
            cur, nxt = slots.current, slots.next
            if cur is not None and self._unusable(cur):
                # Its manager could not be rebuilt after a restart: keep the key published
                # for outstanding SVIDs, but replace it now instead of failing every issuance.
                log.error(
                    "current %s key %s has no usable key manager; replacing it", kind.value, cur.kid
                )
                cur.state = KeyState.RETIRED
                slots.retired.append(cur)
                slots.current = cur = None
            if nxt is not None and self._unusable(nxt):
                slots.next = nxt = None
        changed = False
        if cur is None:
            if nxt is None:
                nxt = self._generate(kind, now)
            with self._lock:
                nxt.state = KeyState.ACTIVE
                slots.current, slots.next = nxt, None
            log.info(
                "activated %s key %s (%s%s) until %s",
                kind.value,
                nxt.kid,
                nxt.km_type,
                _ref(nxt),
                nxt.not_after,
            )
            return True
        if nxt is None and now >= preparation_threshold(cur.not_before, cur.not_after):
            nxt = self._generate(kind, now)
            with self._lock:
                slots.next = nxt
            log.info("prepared %s key %s (%s%s)", kind.value, nxt.kid, nxt.km_type, _ref(nxt))
            changed = True
        if nxt is not None and now >= activation_threshold(cur.not_before, cur.not_after):
            with self._lock:
                cur.state = KeyState.RETIRED
                nxt.state = KeyState.ACTIVE
                slots.retired.append(cur)
                slots.current, slots.next = nxt, None
            log.info(
                "activated %s key %s (%s%s); %s retired, published until %s",
                kind.value,
                nxt.kid,
                nxt.km_type,
                _ref(nxt),
                cur.kid,
                cur.not_after,
            )
            changed = True
        return changed

    def _unusable(self, rec: KeyRecord) -> bool:
        handle = self._managers.get(rec.manager_id)
        return handle is None or handle.closed

    def _generate(self, kind: KeyKind, now: datetime) -> KeyRecord:
        with self._lock:
            handle = self._active_manager
            lifetime = self._lifetimes.for_kind(kind)
        if handle is None:
            raise KeyManagerError("no key manager configured")
        shared = kind is KeyKind.JWT and bool(getattr(handle.instance, "shares_keys", False))
        key_id = self._shared_key_id(kind) if shared else _new_kid(kind)
        pub = handle.instance.generate_key(key_id, handle.key_type)
        # A shared key is named by its public key, so every server gives it the same kid.
        kid = f"jwt-{jwk_thumbprint(pub.public_key_der)}" if shared else key_id
        rec = KeyRecord(
            kid=kid,
            kind=kind,
            key_type=handle.key_type,
            manager_id=handle.id,
            km_type=handle.type,
            km_digest=handle.digest,
            state=KeyState.PREPARED,
            not_before=now,
            not_after=now + lifetime,
            public_key_der=pub.public_key_der,
            provider_ref=pub.provider_ref,
            key_id=key_id,
        )
        if kind is KeyKind.X509_CA:
            rec.ca_cert_der = self._make_ca_cert(rec, handle)
        return rec

    def _shared_key_id(self, kind: KeyKind) -> str:
        """The stable key id for the next shared key: the slot id the newest key of this kind
        does not use (so the key still signing is never overwritten)."""
        with self._lock:
            newest = max(self._slots[kind].all(), key=lambda r: r.not_before, default=None)
        first, second = SHARED_JWT_KEY_IDS
        return second if newest is not None and newest.key_id == first else first

    def _make_ca_cert(self, rec: KeyRecord, handle: ManagerHandle) -> bytes:
        public_key = serialization.load_der_public_key(rec.public_key_der)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, rec.kid),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(public_key)  # type: ignore[arg-type]
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(rec.not_before - _BACKDATE)
            .not_valid_after(rec.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{self.trust_domain}")]
                ),
                critical=False,
            )
        )

        def sign(digest: bytes, alg: SigningAlgorithm) -> bytes:
            return handle.instance.sign_digest(rec.key_id, digest, alg)

        cert = sign_certificate(builder, rec.key_type, sign)
        return cert.public_bytes(serialization.Encoding.DER)

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # a listener must not break rotation
                log.exception("keyring change listener failed")

    def close_all(self) -> None:
        with self._lock:
            handles = list(self._managers.values())
            self._managers.clear()
            self._active_manager = None
        for handle in handles:
            close_manager(handle)


def _ref(rec: KeyRecord) -> str:
    """ ", <provider ref>" for logs: the Key Vault key id URL operators look for."""
    return f", {rec.provider_ref}" if rec.provider_ref else ""


def close_manager(handle: ManagerHandle) -> None:
    if handle.closed:
        return
    handle.closed = True
    # Only reached when the manager is not the active one and holds no unexpired key.
    log.info("closing key manager %s (%s %s): no key left", handle.id, handle.type, handle.digest)
    try:
        handle.instance.close()
    except Exception:
        log.exception("closing key manager %s failed", handle.id)
