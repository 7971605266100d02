"""The trust domain server's runtime core: applies effective configs (hot swap or NACK),
drives rotation, persists state, and builds the status report and local bundle.

It talks to key managers (through an injected factory) and to the disk (through an
optional StateStore) but not to the control plane: sync.py does that.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from controlplane.bundles import (
    JWT_SVID,
    X509_SVID,
    bundle_document,
    content_digest,
    jwt_entry,
    refresh_hint,
    x509_entry,
)
from controlplane.documents.durations import parse_duration
from controlplane.keymanagers.base import KeyManager, KeyManagerError, KeyType
from controlplane.keymanagers.signatures import public_jwk

from .clock import Clock
from .housekeeping import StaleKeyHousekeeping
from .issuer import Issuer
from .keyring import (
    KeyRecord,
    Keyring,
    Lifetimes,
    ManagerHandle,
    PendingRelease,
    close_manager,
)
from .metrics import Metrics
from .state import StateStore

__all__ = ["ConfigError", "TrustDomainServer", "key_type_of_spec", "spec_of_config"]

log = logging.getLogger(__name__)

HEALTHY, UNHEALTHY = "HEALTHY", "UNHEALTHY"

ManagerFactory = Callable[[Mapping[str, Any]], KeyManager]
DigestFn = Callable[[Mapping[str, Any]], str]


class ConfigError(Exception):
    """An effective config this server cannot apply."""


def _section_spec(sections: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """`spec` of a section in an effective config; accepts `document` as the whole YAML
    document ({section, schema, spec}) or as the spec itself."""
    entry = sections.get(name)
    if entry is None:
        return None
    document = entry.get("document", entry) if isinstance(entry, Mapping) else None
    if not isinstance(document, Mapping):
        raise ConfigError(f"section {name} has no document")
    spec = document.get("spec", {}) if "section" in document else document
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"section {name}: spec must be a mapping")
    return dict(spec)


def spec_of_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The KeyManager spec of an effective config ({} = the default key manager)."""
    sections = config.get("sections") or {}
    return _section_spec(sections, "KeyManager") or {}


def key_type_of_spec(spec: Mapping[str, Any]) -> KeyType:
    """Key type the manager should generate: the extension's `keyType`, else ec-p256."""
    for ext in (spec.get("extensions") or {}).values():
        if isinstance(ext, Mapping) and ext.get("keyType"):
            try:
                return KeyType(ext["keyType"])
            except ValueError as exc:
                raise ConfigError(f"unknown keyType {ext['keyType']!r}") from exc
    return KeyType.EC_P256


def lifetimes_of_config(config: Mapping[str, Any]) -> Lifetimes:
    spec = _section_spec(config.get("sections") or {}, "KeyLifecycle") or {}
    out = Lifetimes()
    try:
        if spec.get("x509CATTL"):
            out = Lifetimes(x509_ca=parse_duration(spec["x509CATTL"]), jwt=out.jwt)
        if spec.get("jwtKeyTTL"):
            out = Lifetimes(x509_ca=out.x509_ca, jwt=parse_duration(spec["jwtKeyTTL"]))
    except ValueError as exc:
        raise ConfigError(f"KeyLifecycle: {exc}") from exc
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class TrustDomainServer:
    def __init__(
        self,
        trust_domain: str,
        clock: Clock,
        build_manager: ManagerFactory,
        digest: DigestFn,
        store: StateStore | None = None,
        metrics: Metrics | None = None,
        allowed_path_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.trust_domain = trust_domain
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._build = build_manager
        self._digest = digest
        self._store = store
        self._lock = threading.RLock()
        self._apply_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.keyring = Keyring(trust_domain, on_change=self._keyring_changed)
        self.issuer = Issuer(self.keyring, clock, self.metrics, allowed_path_prefixes)
        self.desired_version: int | None = None
        self.attempted_version: int | None = None
        self.attempted_at: datetime | None = None
        self.applied_version: int | None = None
        self.applied_at: datetime | None = None
        self.applied_config: dict[str, Any] | None = None
        self.pending_config: dict[str, Any] | None = None
        self.health = HEALTHY
        self.error: str | None = None
        self.bundle: dict[str, Any] = {"keys": []}  # as the control plane last delivered it
        self._bundle_fresh = False  # a bundle arrived from the control plane since start
        # What /v1/bundle serves: this server's keys merged with the control plane's, under a
        # sequence number of its own, persisted, bumped whenever the content digest changes.
        self._served_sequence = 0
        self._served_digest = ""
        self._served: dict[str, Any] = bundle_document([], 0, refresh_hint([]))
        self.housekeeping = StaleKeyHousekeeping(self.keyring, self._bundle_kids)

    # --- listeners (status reporter) ---------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:
                log.exception("status listener failed")

    def _keyring_changed(self) -> None:
        self._refresh_bundle()
        self.save()
        self._notify()

    # --- config ----------------------------------------------------------------------------

    def apply_config(self, config: Mapping[str, Any]) -> bool:
        """Apply an effective config {"version", "sections"}. True when applied.

        A new KeyManager builds a new instance and checks it first; on failure the old one
        stays active and the server reports UNHEALTHY with the reason (a NACK).
        """
        with self._apply_lock:
            version = config.get("version")
            now = self.clock.now()
            with self._lock:
                self.desired_version = version
                self.attempted_version = version
                self.attempted_at = now
            try:
                self._apply(config)
            except (ConfigError, KeyManagerError) as exc:
                with self._lock:
                    self.pending_config = dict(config)
                    self.health = UNHEALTHY
                    self.error = f"config version {version} not applied: {exc}"
                self.metrics.nack()
                log.error("%s; keeping the previous key manager", self.error)
                self.save()
                self._notify()
                return False
            with self._lock:
                self.pending_config = None
                self.applied_version = version
                self.applied_at = now
                self.applied_config = dict(config)
                self.health = HEALTHY
                self.error = None
            log.info("applied config version %s; %s", version, self.describe_keys())
            self._refresh_bundle()  # new lifetimes change the refresh hint
            self.save()
            self._notify()
            return True

    def _apply(self, config: Mapping[str, Any]) -> None:
        spec = spec_of_config(config)
        lifetimes = lifetimes_of_config(config)
        key_type = key_type_of_spec(spec)
        digest = self._digest(spec)
        active = self.keyring.active_manager
        if active is None or active.digest != digest or active.key_type is not key_type:
            handle = self.keyring.find_manager(digest)
            if handle is None or handle.key_type is not key_type:
                handle = self._build_checked(spec, digest, key_type)
            previous = active.describe() if active else None
            for dropped in self.keyring.install_manager(handle):
                close_manager(dropped)
            if previous is not None:
                self.metrics.swap()
            log.info(
                "key manager swapped: %s -> %s %s (%s); no key created, the next rotation "
                "generates keys with it",
                previous,
                handle.type,
                handle.digest,
                handle.id,
            )
        self.keyring.set_lifetimes(lifetimes)

    def _build_checked(self, spec: dict[str, Any], digest: str, key_type: KeyType) -> ManagerHandle:
        try:
            instance = self._build(spec)
        except KeyManagerError:
            raise
        except Exception as exc:  # a factory bug must NACK, not kill the sync loop
            raise KeyManagerError(f"cannot build key manager: {exc}") from exc
        try:
            instance.check()
        except Exception as exc:
            try:
                instance.close()
            except Exception:
                log.exception("closing rejected key manager failed")
            kind = getattr(instance, "type_name", "?")
            raise KeyManagerError(f"key manager {kind} check failed: {exc}") from exc
        return ManagerHandle.new(instance, digest, key_type, spec)

    def retry_pending(self) -> bool:
        """Retry a NACKed config (the key manager may have become reachable)."""
        with self._lock:
            pending = self.pending_config
        return self.apply_config(pending) if pending is not None else False

    def set_bundle(self, bundle: Mapping[str, Any]) -> None:
        with self._lock:
            self.bundle = dict(bundle)
            self._bundle_fresh = True
        self._refresh_bundle()
        self.save()

    def _bundle_kids(self) -> set[str] | None:
        """Ids of every key in the control plane's bundle (`key_ids`: X.509 CA entries carry no
        kid); None until one arrived since start."""
        with self._lock:
            if not self._bundle_fresh:
                return None
            keys = self.bundle.get("keys") or []
            key_ids = self.bundle.get("key_ids") or []
        kids = {str(k["kid"]) for k in keys if isinstance(k, dict) and k.get("kid")}
        return kids | {str(k) for k in key_ids}

    # --- rotation --------------------------------------------------------------------------

    def rotate(self) -> bool:
        """One rotator tick: rotate keys, then stale-key housekeeping when it is due."""
        now = self.clock.now()
        changed = self.keyring.rotate(now)
        try:
            self.housekeeping.run(now)
        except Exception:  # housekeeping must never stop rotation
            log.exception("stale key housekeeping failed")
        return changed

    # --- persistence -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            active = self.keyring.active_manager
            return {
                "format": 1,
                "trust_domain": self.trust_domain,
                "applied_config": self.applied_config,
                "applied_version": self.applied_version,
                "applied_at": _iso(self.applied_at),
                "desired_version": self.desired_version,
                "bundle": self.bundle,
                "served_bundle": {
                    "sequence": self._served_sequence,
                    "digest": self._served_digest,
                },
                "lifetimes": {
                    "x509_ca": self.keyring.lifetimes.x509_ca.total_seconds(),
                    "jwt": self.keyring.lifetimes.jwt.total_seconds(),
                },
                "active_manager": active.id if active else None,
                "managers": [
                    {
                        "id": h.id,
                        "type": h.type,
                        "digest": h.digest,
                        "key_type": h.key_type.value,
                        "spec": h.spec,
                    }
                    for h in self.keyring.managers()
                    if not h.closed
                ],
                "keys": [r.to_dict() for r in self.keyring.records()],
                "pending_releases": [p.to_dict() for p in self.keyring.pending_releases()],
            }

    def save(self) -> None:
        if self._store is None:
            return
        try:
            # Serialised: the rotator and sync threads save concurrently; a later snapshot
            # must not be overwritten by an earlier one written after it.
            with self._save_lock:
                self._store.save_state(self.snapshot())
        except OSError:
            log.exception("saving state failed")

    def restore(self) -> bool:
        """Load persisted state; rebuild the key managers that hold live keys. True if any."""
        if self._store is None:
            return False
        data = self._store.load_state()
        if not data:
            return False
        now = self.clock.now()
        records = [KeyRecord.from_dict(k) for k in data.get("keys", [])]
        pending = [PendingRelease.from_dict(p) for p in data.get("pending_releases", [])]
        # Managers of expired keys too: they release those keys (no key is left behind).
        live = {r.manager_id for r in records} | {p.record.manager_id for p in pending}
        active_id = data.get("active_manager")
        active_handle: ManagerHandle | None = None
        for m in data.get("managers", []):
            if m["id"] not in live and m["id"] != active_id:
                continue
            try:
                instance = self._build(m["spec"])
            except Exception as exc:
                # Keys stay published; the next rotation moves to a working manager.
                log.error("cannot rebuild key manager %s (%s): %s", m["id"], m["type"], exc)
                continue
            handle = ManagerHandle(
                id=m["id"],
                type=m["type"],
                digest=m["digest"],
                key_type=KeyType(m["key_type"]),
                spec=m["spec"],
                instance=instance,
            )
            if m["id"] == active_id:
                active_handle = handle
            else:
                self.keyring.adopt(handle)
        self.keyring.restore(records, now, pending)
        lt = data.get("lifetimes") or {}
        if lt:
            self.keyring.set_lifetimes(
                Lifetimes(
                    x509_ca=timedelta(seconds=lt["x509_ca"]), jwt=timedelta(seconds=lt["jwt"])
                )
            )
        with self._lock:
            self.applied_config = data.get("applied_config")
            self.applied_version = data.get("applied_version")
            self.desired_version = data.get("desired_version")
            if data.get("applied_at"):
                self.applied_at = datetime.fromisoformat(data["applied_at"])
            self.bundle = data.get("bundle") or self.bundle
            # State written before the server numbered its own bundle: it served the control
            # plane's number, so continue above that one.
            served = data.get("served_bundle") or {"sequence": self.bundle.get("version")}
            self._served_sequence = int(served.get("sequence") or 0)
            self._served_digest = str(served.get("digest") or "")
        self._refresh_bundle()
        if active_handle is not None:
            # Last: installing fires the change callback, whose save() must see the keys and
            # applied config restored above, not an empty state.
            for dropped in self.keyring.install_manager(active_handle):
                close_manager(dropped)
        log.info(
            "restored state: config version %s; %s", self.applied_version, self.describe_keys()
        )
        return True

    # --- views -----------------------------------------------------------------------------

    def describe_keys(self) -> str:
        active = self.keyring.active_manager
        keys = ", ".join(
            f"{r.kind.value}:{r.kid}[{r.state.value},{r.km_type}"
            + (f",{r.provider_ref}" if r.provider_ref else "")
            + "]"
            for r in self.keyring.records()
        )
        manager = f"{active.type} {active.digest}" if active else "none"
        return f"key manager {manager}; keys in use: {keys or 'none yet'}"

    def _key_entry(self, rec: KeyRecord) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "kid": rec.kid,
            "kind": rec.kind.value,
            "key_manager": {"type": rec.km_type, "digest": rec.km_digest},
            "state": rec.state.value,
            "not_before": rec.not_before.isoformat(),
            "not_after": rec.not_after.isoformat(),
            "key_type": rec.key_type.value,
            "jwk": public_jwk(rec.public_key_der),
        }
        if rec.provider_ref:  # e.g. the Key Vault key id; names the key, holds no secret
            entry["provider_ref"] = rec.provider_ref
        if rec.ca_cert_der:
            entry["x5c"] = [base64.b64encode(rec.ca_cert_der).decode("ascii")]
        return entry

    def status_report(self) -> dict[str, Any]:
        """The body of POST /v1/servers/{id}/status."""
        now = self.clock.now()
        active = self.keyring.active_manager
        with self._lock:
            health, error = self.health, self.error
            if self.keyring.last_error:
                health = UNHEALTHY
                error = f"{error}; {self.keyring.last_error}" if error else self.keyring.last_error
            pending = self.pending_config
            return {
                "desired_version": self.desired_version,
                "attempted_version": self.attempted_version,
                "attempted_at": _iso(self.attempted_at),
                "applied_version": self.applied_version,
                "applied_at": _iso(self.applied_at),
                "health": health,
                "error": error,
                # The config this server refused (NACKed) and still does not run: lets the
                # control plane tell a refusal from a rotation error.
                "refused_version": pending.get("version") if pending else None,
                "key_manager": active.describe() if active else None,
                "keys": [self._key_entry(r) for r in self.keyring.published(now)],
                # This server's clock: the control plane shows how far it is from its own.
                "reported_at": _iso(now),
            }

    def local_status(self) -> dict[str, Any]:
        report = self.status_report()
        for key in report["keys"]:
            key.pop("jwk", None)
            key.pop("x5c", None)
        report["trust_domain"] = self.trust_domain
        return report

    def bundle_document(self) -> dict[str, Any]:
        """The SPIFFE bundle this server serves (see `_refresh_bundle`)."""
        with self._lock:
            return self._served

    def _refresh_bundle(self) -> None:
        """Rebuild the served bundle from stored state: this server's keys (which the control
        plane may not have merged yet) and the control plane's, one entry per key.

        Built from the keyring's records, not filtered by the clock, so the content changes only
        here, when the keyring or the control plane's bundle changed (expired keys leave at the
        next rotator tick). A different content digest takes the next sequence number; the
        number is saved with the state, so it never goes backwards across restarts.
        """
        with self._lock:
            records = self.keyring.records()
            entries = [
                x509_entry(public_jwk(r.public_key_der), r.ca_cert_der)
                if r.ca_cert_der
                else jwt_entry(public_jwk(r.public_key_der), r.kid)
                for r in records
            ]
            entries += [
                k
                for k in self.bundle.get("keys") or []
                if isinstance(k, dict) and k.get("use") in (JWT_SVID, X509_SVID)
            ]
            lifetimes = self.keyring.lifetimes
            hint = refresh_hint([lifetimes.x509_ca, lifetimes.jwt, *(r.lifetime for r in records)])
            digest = content_digest(entries, hint)
            if digest != self._served_digest:
                self._served_sequence += 1
                self._served_digest = digest
            self._served = bundle_document(entries, self._served_sequence, hint)

    def close(self) -> None:
        self.save()
        self.keyring.close_all()
