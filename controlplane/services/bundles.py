"""Each trust domain's bundle: the keys its servers reported, merged, expired and read back.

The served document is exactly the stored rows under the stored number (`trust_domains.
bundle_version`, its `spiffe_sequence`), never filtered by the clock: a key leaves when a
transaction deletes it, and every transaction that changes the rows bumps the number. So one
number names one key set, on every replica, across restarts.

- Writers lock the trust domain row first (FOR UPDATE on PostgreSQL; SQLite write transactions
  are BEGIN IMMEDIATE, one at a time): two replicas changing one bundle queue instead of taking
  the same next number, and a kid cannot be claimed twice.
- Readers take the number and the rows in one statement, so they never pair a number with
  another transaction's rows (READ COMMITTED reads each statement at its own snapshot).
- A status report that changes nothing (the usual heartbeat) takes no lock and writes nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.bundles import BundleKey, bundle_document, refresh_hint
from controlplane.domain import Deregistered, NotFound
from controlplane.reported_keys import InvalidReport
from controlplane.store.models import BundleKeyRow
from controlplane.store.unit_of_work import Change, UnitOfWork

__all__ = [
    "BundleKey",
    "StoredBundle",
    "bump",
    "lock",
    "merge_reported_keys",
    "next_expiry",
    "prune_expired",
    "read_bundle",
    "trust_domains_with_expired_keys",
]


@dataclass(frozen=True)
class StoredBundle:
    """One committed state of a trust domain's bundle."""

    version: int
    keys: tuple[BundleKey, ...]

    @functools.cached_property
    def document(self) -> dict[str, Any]:
        """The SPIFFE bundle, a function of the stored state only."""
        lifetimes = [k.not_after - k.not_before for k in self.keys if k.not_before is not None]
        return bundle_document((k.entry for k in self.keys), self.version, refresh_hint(lifetimes))

    @functools.cached_property
    def delivery(self) -> dict[str, Any]:
        """What the long-poll sends servers: the document, its version, and the ids of every
        key (X.509 CA entries carry no kid; servers need them to never delete a live key)."""
        return {
            "version": self.version,
            "key_ids": sorted(k.kid for k in self.keys),
            **self.document,
        }


def read_bundle(uow: UnitOfWork, td_id: str) -> StoredBundle:
    snapshot = uow.repo.bundle_snapshot(td_id)
    if snapshot is None:
        raise NotFound(f"trust domain {td_id} not found")
    version, rows = snapshot
    return StoredBundle(
        version=version,
        keys=tuple(
            BundleKey(kid, json.loads(jwk_json), not_before, not_after)
            for kid, jwk_json, not_before, not_after in rows
        ),
    )


def merge_reported_keys(
    uow: UnitOfWork, td_id: str, server_id: str, keys: Sequence[BundleKey], now: datetime
) -> bool:
    """Add a server's new keys and drop expired ones, bumping the sequence when anything
    changed. Raises InvalidReport when a kid is already published with a different key (a
    server may repeat a key another server publishes only when it is the same key: shared JWT
    keys). The caller commits; True when the bundle changed."""
    new, expired = _plan(uow, td_id, server_id, keys, now)
    if not new and not expired:
        return False
    lock(uow, td_id)
    # Under the lock a deregistration (which takes it first) has either committed or not begun.
    if not uow.repo.server_exists(server_id):
        raise Deregistered()
    new, _ = _plan(uow, td_id, server_id, keys, now)  # again, under the lock
    for key in new:
        uow.repo.add(
            BundleKeyRow(
                trust_domain_id=td_id,
                kid=key.kid,
                use=key.use,
                jwk_json=json.dumps(key.entry, sort_keys=True),
                not_before=key.not_before,
                not_after=key.not_after,
                server_id=server_id,
            )
        )
    uow.repo.flush()
    removed = uow.repo.delete_expired_bundle_keys(td_id, now)
    if not new and not removed:
        return False
    bump(uow, td_id)
    return True


def _plan(
    uow: UnitOfWork, td_id: str, server_id: str, keys: Sequence[BundleKey], now: datetime
) -> tuple[list[BundleKey], bool]:
    """(reported keys not stored yet, whether stored keys have expired); raises on a kid
    conflict."""
    stored = {row.kid: row for row in uow.repo.bundle_keys(td_id)}
    new: list[BundleKey] = []
    for index, key in enumerate(keys):
        row = stored.get(key.kid)
        if row is not None:
            if json.loads(row.jwk_json) != key.entry:
                owner = "this server" if row.server_id == server_id else "another server"
                raise InvalidReport(
                    f"/keys/{index}/kid",
                    f"kid {key.kid!r} is already published by {owner} with a different key",
                )
        elif key.not_after > now:
            new.append(key)
    return new, any(row.not_after <= now for row in stored.values())


def prune_expired(uow: UnitOfWork, td_id: str, now: datetime) -> bool:
    """Drop a trust domain's expired keys with the next sequence number; the caller commits."""
    if uow.repo.lock_trust_domain(td_id) is None:
        return False
    if uow.repo.delete_expired_bundle_keys(td_id, now) == 0:
        return False
    bump(uow, td_id)
    return True


def lock(uow: UnitOfWork, td_id: str) -> None:
    """Take the trust domain's bundle lock: call before changing its stored keys (then `bump`)."""
    if uow.repo.lock_trust_domain(td_id) is None:
        raise NotFound(f"trust domain {td_id} not found")


def bump(uow: UnitOfWork, td_id: str) -> int:
    """The next spiffe_sequence for a bundle whose keys this transaction changed, announced to
    the delivery caches with the commit."""
    version = uow.repo.bump_bundle_version(td_id)
    uow.record(Change("bundle", td_id, version))
    return version


def trust_domains_with_expired_keys(uow: UnitOfWork, now: datetime) -> list[str]:
    return uow.repo.trust_domains_with_expired_keys(now)


def next_expiry(uow: UnitOfWork) -> datetime | None:
    """When the next stored key of any trust domain expires."""
    return uow.repo.next_bundle_key_expiry()
