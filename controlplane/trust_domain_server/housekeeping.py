"""Stale-key housekeeping for key managers that keep keys in a shared store (Key Vault).

A key manager takes part when it has both optional methods (they are not in the KeyManager
protocol; today only the Azure Key Vault manager has them):

- ``refresh_own_keys(in_use_key_ids)``: bump ``updated`` on the keys this server still uses
  with that manager (and no other), so other servers' cleanup sees them alive. Run every 6 h.
- ``delete_stale_keys(protected)``: delete keys of other servers of the trust domain not
  updated for 14 days, except ``protected``. Run every 48 h.

and, when it has it, ``delete_orphaned_keys(keep, created_before)`` on the same 48 h schedule:
keys of this server that it does not know (any key id outside ``keep``: every key the keyring
holds or still has to release, with any manager) and created before ``created_before`` (the
longest key lifetime in use ago, plus an hour: by then every key of this server has expired).

Both run on the server's injectable clock from the rotator tick, so tests jump days instead
of waiting. ``protected`` is every key that may still verify an unexpired SVID: this
server's current, next and retired-but-unexpired keys, and every key in the trust bundle
from the control plane (keys of other servers stay there until their not-after). Cleanup
waits for a bundle received from the control plane since this process started: an old
bundle from disk may not name a key another server made since.

A failed run (throttling, outage) is retried after RETRY_AFTER instead of a full interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from controlplane.keymanagers.base import KeyManagerError

from .keyring import Keyring, ManagerHandle

__all__ = ["CLEANUP_INTERVAL", "REFRESH_INTERVAL", "RETRY_AFTER", "StaleKeyHousekeeping"]

log = logging.getLogger(__name__)

REFRESH_INTERVAL = timedelta(hours=6)
CLEANUP_INTERVAL = timedelta(hours=48)
RETRY_AFTER = timedelta(minutes=10)
ORPHAN_MARGIN = timedelta(hours=1)


def takes_part(handle: ManagerHandle) -> bool:
    instance: Any = handle.instance
    return callable(getattr(instance, "refresh_own_keys", None)) and callable(
        getattr(instance, "delete_stale_keys", None)
    )


class StaleKeyHousekeeping:
    """Schedules refresh and cleanup per live key manager (see the module docstring)."""

    def __init__(
        self,
        keyring: Keyring,
        bundle_kids: Callable[[], Collection[str] | None],
        refresh_interval: timedelta = REFRESH_INTERVAL,
        cleanup_interval: timedelta = CLEANUP_INTERVAL,
    ) -> None:
        """`bundle_kids` returns the kids of the control plane's bundle, or None while no
        bundle has arrived since start (cleanup waits for one)."""
        self._keyring = keyring
        self._bundle_kids = bundle_kids
        self._refresh_interval = refresh_interval
        self._cleanup_interval = cleanup_interval
        self._lock = threading.Lock()
        # manager id -> when the next refresh / cleanup is due (None = at once)
        self._next_refresh: dict[str, datetime] = {}
        self._next_cleanup: dict[str, datetime] = {}

    def protected(self) -> set[str]:
        """Key ids and kids that may still verify an unexpired SVID."""
        out: set[str] = set()
        for rec in self._keyring.records():  # expired records are dropped by rotate()
            out.update((rec.key_id, rec.kid))
        out.update(self._bundle_kids() or ())
        return out

    def known_key_ids(self) -> set[str]:
        """Every key id the server holds or still has to release, with any key manager."""
        out = {r.key_id for r in self._keyring.records()}
        out.update(p.record.key_id for p in self._keyring.pending_releases())
        return out

    def orphan_cutoff(self, now: datetime) -> datetime:
        """A creation time before which every key of this server has expired."""
        lifetimes = [r.lifetime for r in self._keyring.records()]
        lifetimes += [p.record.lifetime for p in self._keyring.pending_releases()]
        lifetimes += [self._keyring.lifetimes.x509_ca, self._keyring.lifetimes.jwt]
        return now - max(lifetimes) - ORPHAN_MARGIN

    def run(self, now: datetime) -> None:
        """One tick: refresh and clean up with every live manager that is due."""
        with self._lock:
            handles = [h for h in self._keyring.managers() if not h.closed and takes_part(h)]
            live = {h.id for h in handles}
            for table in (self._next_refresh, self._next_cleanup):
                for mid in set(table) - live:
                    del table[mid]
            for handle in handles:
                self._refresh(handle, now)
                self._cleanup(handle, now)

    def _refresh(self, handle: ManagerHandle, now: datetime) -> None:
        due = self._next_refresh.get(handle.id)
        if due is not None and now < due:
            return
        instance: Any = handle.instance
        in_use = sorted({r.key_id for r in self._keyring.records() if r.manager_id == handle.id})
        try:
            instance.refresh_own_keys(in_use)
        except KeyManagerError as exc:
            log.warning(
                "refreshing keys of %s (%s) failed, retrying in %s: %s",
                handle.type,
                handle.id,
                RETRY_AFTER,
                exc,
            )
            self._next_refresh[handle.id] = now + RETRY_AFTER
            return
        self._next_refresh[handle.id] = now + self._refresh_interval

    def _cleanup(self, handle: ManagerHandle, now: datetime) -> None:
        due = self._next_cleanup.get(handle.id)
        if due is not None and now < due:
            return
        if self._bundle_kids() is None:
            return  # no fresh bundle yet: cannot know every key still in use
        instance: Any = handle.instance
        protected = self.protected()
        try:
            deleted = instance.delete_stale_keys(protected)
        except KeyManagerError as exc:
            log.warning(
                "stale key cleanup with %s (%s) failed, retrying in %s: %s",
                handle.type,
                handle.id,
                RETRY_AFTER,
                exc,
            )
            self._next_cleanup[handle.id] = now + RETRY_AFTER
            return
        self._next_cleanup[handle.id] = now + self._cleanup_interval
        log.info(
            "stale key cleanup with %s (%s): deleted %d key(s)%s; %d key id(s) protected",
            handle.type,
            handle.id,
            len(deleted),
            f" ({', '.join(deleted)})" if deleted else "",
            len(protected),
        )
        sweep = getattr(instance, "delete_orphaned_keys", None)
        if not callable(sweep):
            return
        try:
            orphans = sweep(self.known_key_ids(), self.orphan_cutoff(now))
        except KeyManagerError as exc:
            log.warning("orphaned key sweep with %s (%s) failed: %s", handle.type, handle.id, exc)
            return
        if orphans:
            log.info("deleted %d orphaned key(s) with %s: %s", len(orphans), handle.type, orphans)
