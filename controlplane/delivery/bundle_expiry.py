"""Drops expired keys from every trust domain's bundle at their not-after, each time with the
next `spiffe_sequence`.

Why a task and not a filter when serving: a bundle filtered by the clock changes under an
unchanged sequence number (the spec forbids that), and with every server of a trust domain
stopped nothing else would ever take the keys out. Every replica runs one; they queue on the
trust domain's row lock and the later one finds nothing left to delete, so it bumps nothing.

Cost: per wake-up one `MIN(not_after)` query (indexed); it wakes at the next expiry, and at
least every `interval` seconds to notice keys other replicas stored. Each trust domain with
expired keys then takes one short transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from controlplane.domain import Unavailable
from controlplane.services import bundles as bundle_service
from controlplane.store.unit_of_work import UnitOfWork

__all__ = ["BundleExpiry"]

log = logging.getLogger(__name__)

MIN_SLEEP = 0.05


class BundleExpiry:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        clock: Callable[[], datetime],
        interval: float,
    ) -> None:
        self._uow = uow_factory
        self._clock = clock
        self._interval = interval

    def prune(self) -> list[str]:
        """Drop every expired key now; returns the trust domains whose bundle changed."""
        now = self._clock()
        with self._uow() as uow:
            candidates = bundle_service.trust_domains_with_expired_keys(uow, now)
        changed = []
        for td_id in candidates:
            with self._uow() as uow:
                if bundle_service.prune_expired(uow, td_id, now):
                    uow.commit()
                    changed.append(td_id)
        if changed:
            log.info("expired keys left the bundle", extra={"trust_domains": changed})
        return changed

    def seconds_to_next_expiry(self) -> float:
        with self._uow() as uow:
            upcoming = bundle_service.next_expiry(uow)
        if upcoming is None:
            return self._interval
        wait = (upcoming - self._clock()).total_seconds()
        return min(max(wait, MIN_SLEEP), self._interval)

    async def run(self) -> None:
        """Prune, sleep until the next expiry (at most `interval`), forever."""
        while True:
            delay = self._interval
            try:
                await run_in_threadpool(self.prune)
                delay = await run_in_threadpool(self.seconds_to_next_expiry)
            except Unavailable:  # the unit of work logs the outage once; keep trying
                log.debug("bundle expiry: database unavailable; retrying in %.1fs", delay)
            except Exception:
                log.exception("bundle expiry failed; retrying in %.1fs", delay)
            await asyncio.sleep(delay)
